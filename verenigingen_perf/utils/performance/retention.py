"""Retention: keeps storage bounded without ever deleting a number that is not kept elsewhere.

- Detail rows past the detail retention go only once their rows are folded into the aggregates
  (created before the rollup watermark).
- Hourly aggregates past their retention go only where the daily row of that day exists.
- Daily aggregates past theirs go.

Every delete runs in batches (`delete_batch_size`) chosen by an indexed time column, each batch its
own short transaction; never a whole-table DELETE. Without Redis (no lock) it runs all the same: every
delete is bounded by what is already aggregated, so two runs at once delete nothing twice.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance import job_reports, redis_store, rollup, storage
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.database import snapshot as database_snapshot
from verenigingen_perf.utils.performance.schema import AGGREGATE, METRIC
from verenigingen_perf.utils.performance.schema import MONITOR_SAMPLE as SAMPLE
from verenigingen_perf.utils.performance.timeutil import as_datetime, floor_day, format_datetime


@dataclass
class RetentionReport:
	status: str = "ok"
	detail_rows_deleted: int = 0
	hourly_rows_deleted: int = 0
	daily_rows_deleted: int = 0
	monitor_samples_deleted: int = 0
	database_snapshots_deleted: int = 0
	batches: int = 0
	max_batch_s: float = 0.0
	watermark: str | None = None
	duration_s: float = 0.0
	errors: list[str] = field(default_factory=list)
	# row counts and bytes as the database reports them after this run (read by the dashboard)
	storage: list[dict[str, Any]] = field(default_factory=list)


def retention_job() -> dict[str, Any]:
	"""Scheduled daily (long queue). A failure is recorded in the job's report and raised."""
	return job_reports.run_and_record(
		"retention", run_retention, lambda errors: RetentionReport(status="failed", errors=errors)
	)


def run_retention(now: datetime | None = None) -> RetentionReport:
	started = time.monotonic()
	report = RetentionReport()
	retention = get_config().retention
	with redis_store.exclusive("retention", retention.job_lock_timeout_s) as acquired:
		if acquired is False:
			report.status = "skipped: another retention run is going on"
			return report
		if acquired is None:
			report.status = "degraded: Redis unreachable (ran without the lock)"
		now = now or frappe.utils.now_datetime()
		watermark = rollup.get_watermark()
		report.watermark = format_datetime(watermark) if watermark else None
		if watermark is not None:
			cutoff = now - timedelta(days=retention.detail_days)
			report.detail_rows_deleted = delete_details(
				cutoff, watermark, retention.delete_batch_size, report
			)
		hourly_cutoff = now - timedelta(days=retention.hourly_days)
		report.hourly_rows_deleted = _delete_hourly(hourly_cutoff, retention.delete_batch_size, report)
		daily_cutoff = now - timedelta(days=retention.daily_days)
		report.daily_rows_deleted = _delete_aggregates(
			{"granularity": "day", "period_start": ("<", daily_cutoff)}, retention.delete_batch_size, report
		)
		# the monitor's samples are kept as long as detail rows
		report.monitor_samples_deleted = _delete_samples(cutoff_of_details(now, retention), retention, report)
		report.database_snapshots_deleted = database_snapshot.delete_expired(
			now - timedelta(days=get_config().database.snapshot_retention_days), retention.delete_batch_size
		)
		report.storage = [asdict(size) for size in storage.storage_figures()]
	report.duration_s = round(time.monotonic() - started, 3)
	return report


def cutoff_of_details(now: datetime, retention: Any) -> datetime:
	return now - timedelta(days=retention.detail_days)


def _delete_samples(cutoff: datetime, retention: Any, report: RetentionReport) -> int:
	deleted = 0
	while names := frappe.get_all(
		SAMPLE, filters={"sampled_at": ("<", cutoff)}, pluck="name", limit=retention.delete_batch_size
	):
		_delete_batch(SAMPLE, names, report)
		deleted += len(names)
	return deleted


def _delete_batch(doctype: str, names: list[str], report: RetentionReport) -> None:
	started = time.monotonic()
	frappe.db.delete(doctype, {"name": ("in", names)})
	frappe.db.commit()
	report.batches += 1
	report.max_batch_s = max(report.max_batch_s, round(time.monotonic() - started, 4))


def delete_details(cutoff: datetime, watermark: datetime, batch_size: int, report: RetentionReport) -> int:
	"""Rows that started before the cutoff and were ingested before both it and the watermark.

	Batches are ranges of the indexed `creation` column: the batch ends at the creation time of the
	`batch_size`-th candidate, so each DELETE is a bounded index range, not a list of names."""
	deleted = 0
	bound = format_datetime(min(watermark, cutoff))
	table = f"`tab{METRIC}`"
	while True:
		edge = frappe.db.sql(
			f"""select creation from {table} where creation < %(bound)s and started_at < %(cutoff)s
			order by creation limit 1 offset %(offset)s""",
			{"bound": bound, "cutoff": format_datetime(cutoff), "offset": batch_size - 1},
		)
		upper = format_datetime(as_datetime(edge[0][0])) if edge else bound
		started = time.monotonic()
		batch = {"upper": upper, "bound": bound, "cutoff": format_datetime(cutoff)}
		# counted first, in the delete's transaction, over the same index range: the framework tells
		# no statement's row count, and DELETE ... RETURNING sends every name back (on SQLite it made
		# retention 0.85 times as fast as counting)
		# (a dict of values each: Frappe's SQLite backend quotes the values of the dict it is given in place)
		count = frappe.db.sql(f"select count(*) from {table} where {_BATCH}", dict(batch))[0][0]
		if edge and not count:
			# the edge row is in the range: nothing to delete would repeat this batch for ever
			raise RuntimeError(f"retention: the batch up to {upper} holds no row; it would never end")
		frappe.db.sql(f"delete from {table} where {_BATCH}", dict(batch))
		frappe.db.commit()
		report.batches += 1
		report.max_batch_s = max(report.max_batch_s, round(time.monotonic() - started, 4))
		deleted += count
		if not edge:
			return deleted


# one batch of detail rows: a range of the creation index, within what may go
_BATCH = "creation <= %(upper)s and creation < %(bound)s and started_at < %(cutoff)s"


def _delete_hourly(cutoff: datetime, batch_size: int, report: RetentionReport) -> int:
	"""Hourly rows before the cutoff whose day has its daily row."""
	deleted = 0
	after = ""
	while True:
		rows = frappe.get_all(
			AGGREGATE,
			filters={"granularity": "hour", "period_start": ("<", cutoff), "name": (">", after)},
			fields=["name", "operation", "operation_type", "period_start"],
			order_by="name asc",
			limit=batch_size,
		)
		if not rows:
			return deleted
		after = rows[-1].name
		daily_names = {
			row.name: rollup.aggregate_name(
				"day", floor_day(as_datetime(row.period_start)), row.operation_type, row.operation
			)
			for row in rows
		}
		existing_daily = set(
			frappe.get_all(AGGREGATE, filters={"name": ("in", list(set(daily_names.values())))}, pluck="name")
		)
		covered = [name for name, daily in daily_names.items() if daily in existing_daily]
		if covered:
			_delete_batch(AGGREGATE, covered, report)
			deleted += len(covered)


def _delete_aggregates(filters: dict, batch_size: int, report: RetentionReport) -> int:
	deleted = 0
	while names := frappe.get_all(
		AGGREGATE, filters=filters, pluck="name", order_by="period_start asc", limit=batch_size
	):
		_delete_batch(AGGREGATE, names, report)
		deleted += len(names)
	return deleted


def clear_old_detail_rows(days: int) -> int:
	"""What Frappe's Log Settings calls (`clear_old_logs`): only aggregated detail rows go."""
	watermark = rollup.get_watermark()
	if watermark is None:
		return 0
	cutoff = frappe.utils.now_datetime() - timedelta(days=days)
	return delete_details(cutoff, watermark, get_config().retention.delete_batch_size, RetentionReport())
