"""Snapshots of the database's health: taken daily by the scheduler and on demand, stored as
Performance Database Snapshot records (the figures as JSON, with summary fields), compared, expired.

The InnoDB buffer pool hit ratio is never the lifetime ratio: a scheduled snapshot computes it from its
counters and those of the previous snapshot (when the server has not restarted in between), an
on-demand one from two readings `db_cache_sample_s` apart.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import frappe
from frappe import _

from verenigingen_perf.utils.performance import internal_errors, job_reports
from verenigingen_perf.utils.performance.config import PerformanceConfig, get_config
from verenigingen_perf.utils.performance.database import collectors, compare, recommend
from verenigingen_perf.utils.performance.schema import DATABASE_SNAPSHOT
from verenigingen_perf.utils.performance.timeutil import format_datetime

SCHEDULED, ON_DEMAND = "scheduled", "on demand"
_SUMMARY_FIELDS = (
	"name",
	"taken_at",
	"db_type",
	"kind",
	"pinned",
	"pin_name",
	"statement_count",
	"table_count",
	"cache_hit_ratio",
	"recommendation_count",
	"duration_s",
)


@dataclass
class SnapshotReport:
	status: str = "ok"
	snapshot: str | None = None
	statements: int = 0
	tables: int = 0
	recommendations: int = 0
	duration_s: float = 0.0
	errors: list[str] = field(default_factory=list)


def snapshot_job() -> dict[str, Any]:
	"""Scheduled daily (long queue): one snapshot, its report recorded for the meta-monitoring (the
	`snapshot_job_lag` signal). A failure is logged with its traceback, recorded and raised."""
	return job_reports.run_and_record(
		"snapshot", run_snapshot, lambda errors: SnapshotReport(status="failed", errors=errors)
	)


def run_snapshot() -> SnapshotReport:
	try:
		data = take(SCHEDULED)
		frappe.db.commit()
	except Exception as e:
		frappe.db.rollback()
		internal_errors.report("database snapshot job", e, may_raise=False)
		raise
	return SnapshotReport(
		snapshot=data["name"],
		statements=len(data.get("statements") or []),
		tables=len(data.get("tables") or []),
		recommendations=len(data["recommendations"]),
		duration_s=data["duration_s"],
	)


def take(kind: str, config: PerformanceConfig | None = None) -> dict[str, Any]:
	"""Collect, judge and store one snapshot; returns it as `read` does."""
	config = config or get_config()
	collect = collectors.collector()
	if collect is None:
		frappe.throw(
			_("Database health is not available on {0} yet").format(frappe.db.db_type), frappe.ValidationError
		)
	started = time.monotonic()
	now = frappe.utils.now_datetime()
	data = collect(config.database, config.database.cache_sample_s if kind == ON_DEMAND else None)
	data.update(db_type=frappe.db.db_type, kind=kind, taken_at=format_datetime(now))
	if data.get("index_usage_period_s") is not None:
		data["index_usage_since"] = format_datetime(
			frappe.utils.add_to_date(now, seconds=-data["index_usage_period_s"])
		)
	_cache_ratio(data, _previous(kind))
	data["recommendations"] = recommend.recommendations(data, config.database)
	data["duration_s"] = round(time.monotonic() - started, 3)
	doc = frappe.get_doc(
		{
			"doctype": DATABASE_SNAPSHOT,
			"taken_at": now,
			"db_type": data["db_type"],
			"kind": kind,
			"statement_count": len(data.get("statements") or []),
			"table_count": len(data.get("tables") or []),
			"cache_hit_ratio": (data.get("cache") or {}).get("ratio"),
			"recommendation_count": len(data["recommendations"]),
			"duration_s": data["duration_s"],
			"snapshot": json.dumps(data, default=str),
		}
	).insert(ignore_permissions=True)
	return {**data, "name": doc.name, "pinned": 0, "pin_name": None}


def _previous(kind: str) -> dict[str, Any] | None:
	if kind == ON_DEMAND:
		return None
	rows = frappe.get_all(
		DATABASE_SNAPSHOT,
		filters={"db_type": frappe.db.db_type},
		pluck="name",
		order_by="taken_at desc",
		limit=1,
	)
	return read(rows[0]) if rows else None


def _cache_ratio(data: dict[str, Any], previous: dict[str, Any] | None) -> None:
	"""The hit ratio between two readings: 1 - disk reads / page read requests in between."""
	cache = data.get("cache") or {}
	if cache.get("read_requests") is None:
		return
	first = cache.get("first_reading")
	if first:
		before, interval, basis = first, first["interval_s"], "two readings of the same snapshot"
	elif (
		previous
		and (previous.get("cache") or {}).get("read_requests") is not None
		and ((previous.get("server") or {}).get("uptime_s") or 0) <= (cache.get("uptime_s") or 0)
	):
		before = previous["cache"]
		interval = (cache.get("uptime_s") or 0) - (previous["cache"].get("uptime_s") or 0)
		basis = f"since the previous snapshot {previous['name']} ({previous.get('taken_at')})"
	else:
		cache.update(ratio=None, basis="no earlier reading since the server started")
		return
	requests = cache["read_requests"] - before["read_requests"]
	reads = cache["reads"] - before["reads"]
	cache.update(
		delta_read_requests=requests,
		delta_reads=reads,
		interval_s=interval,
		basis=basis,
		ratio=round(1 - reads / requests, 6) if requests > 0 else None,
	)


def read(name: str) -> dict[str, Any]:
	doc = frappe.db.get_value(DATABASE_SNAPSHOT, name, [*_SUMMARY_FIELDS, "snapshot"], as_dict=True)
	if doc is None:
		raise frappe.DoesNotExistError(_("Database snapshot {0} not found").format(name))
	data = json.loads(doc.pop("snapshot") or "{}")
	return {**data, "name": doc.name, "pinned": doc.pinned, "pin_name": doc.pin_name}


def latest(pinned: bool = False) -> dict[str, Any] | None:
	filters: dict[str, Any] = {"db_type": frappe.db.db_type}
	if pinned:
		filters["pinned"] = 1
	rows = frappe.get_all(DATABASE_SNAPSHOT, filters=filters, pluck="name", order_by="taken_at desc", limit=1)
	return read(rows[0]) if rows else None


def listing(limit: int) -> list[dict[str, Any]]:
	return frappe.get_all(
		DATABASE_SNAPSHOT, fields=list(_SUMMARY_FIELDS), order_by="taken_at desc", limit=limit
	)


def pin(name: str, pin_name: str) -> dict[str, Any]:
	if not frappe.db.exists(DATABASE_SNAPSHOT, name):
		raise frappe.DoesNotExistError(_("Database snapshot {0} not found").format(name))
	frappe.db.set_value(DATABASE_SNAPSHOT, name, {"pinned": 1, "pin_name": pin_name})
	return {"name": name, "pinned": 1, "pin_name": pin_name}


def compare_snapshots(old: dict[str, Any], new: dict[str, Any], config: PerformanceConfig) -> dict[str, Any]:
	return {"old": old["name"], "new": new["name"], **compare.compare(old, new, config)}


def summary(data: dict[str, Any] | None, config: PerformanceConfig) -> dict[str, Any]:
	"""What the dashboard shows: the latest snapshot's key figures and its recommendations."""
	if data is None:
		return {
			"snapshot": None,
			"message": _("No database snapshot yet: take one, or wait for the daily job"),
		}
	tables = data.get("tables") or []
	cache = data.get("cache") or {}
	return {
		"snapshot": data["name"],
		"taken_at": data.get("taken_at"),
		"kind": data.get("kind"),
		"db_type": data.get("db_type"),
		"server": data.get("server"),
		"connections": data.get("connections"),
		"cache_hit_ratio": cache.get("ratio"),
		"cache_level": recommend.cache_level(cache.get("ratio"), config.database),
		"cache_basis": cache.get("basis"),
		"buffer_pool_bytes": cache.get("buffer_pool_bytes"),
		"tables": len(tables),
		"total_bytes": sum(t.get("total_bytes") or 0 for t in tables),
		"largest_tables": tables[:5],
		"file": data.get("file"),
		"statements": len(data.get("statements") or []),
		"slowest_statements": sorted(data.get("statements") or [], key=lambda s: -(s.get("total_ms") or 0))[
			:5
		],
		"long_running": data.get("long_running") or [],
		"unavailable": data.get("unavailable") or [],
		"recommendations": data.get("recommendations") or [],
	}


def delete_expired(cutoff: Any, batch_size: int) -> int:
	"""Snapshots taken before the cutoff, pinned ones kept; in batches."""
	deleted = 0
	while names := frappe.get_all(
		DATABASE_SNAPSHOT, filters={"taken_at": ("<", cutoff), "pinned": 0}, pluck="name", limit=batch_size
	):
		frappe.db.delete(DATABASE_SNAPSHOT, {"name": ("in", names)})
		frappe.db.commit()
		deleted += len(names)
	return deleted
