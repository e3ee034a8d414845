"""What the app's own jobs (drain, rollup, retention, the monitor's sample) last did, for the health check, the dashboard
and meta-monitoring.

Each report is written to the database (a field of Performance Rollup State, so it outlives a Redis
restart and `bench clear-cache`) and to a Redis hash (read by the health check without a statement).
Reading prefers Redis and falls back to the database when Redis cannot be reached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import frappe
import redis

from verenigingen_perf.utils.performance.redis_store import key, redis_client
from verenigingen_perf.utils.performance.schema import ROLLUP_STATE

JOBS = ("drain", "rollup", "retention", "monitor", "detection", "alerts", "otlp")
_HASH = "job_reports"


def _field(job: str) -> str:
	return f"last_{job}"


def record(job: str, report: dict[str, Any], finished_at: float | None = None) -> dict[str, Any]:
	"""Store `report` as the job's last run (stamped `finished_at`, Unix time: now, unless given)
	and commit it."""
	stamped = {**report, "finished_at": time.time() if finished_at is None else finished_at}
	payload = json.dumps(stamped, default=str)
	frappe.db.sql("delete from `tabSingles` where doctype=%s and field=%s", (ROLLUP_STATE, _field(job)))
	frappe.db.sql(
		"insert into `tabSingles` (doctype, field, value) values (%s, %s, %s)",
		(ROLLUP_STATE, _field(job), payload),
	)
	frappe.db.commit()
	try:
		redis_client().hset(key(_HASH), job, payload)
	except redis.exceptions.RedisError:
		pass
	return stamped


def run_and_record(job: str, run: Callable[[], Any], failed: Callable[[list[str]], Any]) -> dict[str, Any]:
	"""Run a job and record its report (a dataclass); on a failure, roll back, record the report
	`failed(errors)` makes, with the reason, and raise."""
	try:
		report = run()
	except Exception as error:
		frappe.db.rollback()
		record(job, asdict(failed([f"{type(error).__name__}: {error}"])))
		raise
	return record(job, asdict(report))


@dataclass
class Reports:
	"""Every job's last report (a job that never reported is missing) and where they were read."""

	by_job: dict[str, dict[str, Any]] = field(default_factory=dict)
	source: str = "redis"
	unavailable: list[str] = field(default_factory=list)

	def finished_at(self, job: str) -> float | None:
		report = self.by_job.get(job)
		return report.get("finished_at") if report else None


def read() -> Reports:
	"""The last reports: from Redis (no SQL), else from the database, saying which."""
	try:
		raw = redis_client().hgetall(key(_HASH))
	except redis.exceptions.RedisError:
		return Reports(read_stored(), "database", ["job reports: Redis unreachable, read from the database"])
	if not raw:
		# Redis lost them (restarted without persistence): the database still has them
		return Reports(read_stored(), "database")
	return Reports({_text(k): json.loads(v) for k, v in raw.items()})


def read_stored() -> dict[str, dict[str, Any]]:
	fields = [_field(job) for job in JOBS]
	rows = frappe.db.sql(
		f"select field, value from `tabSingles` where doctype=%s and field in ({', '.join(['%s'] * len(fields))})",
		(ROLLUP_STATE, *fields),
	)
	return {field_name[len("last_") :]: json.loads(value) for field_name, value in rows if value}


def _text(value: Any) -> str:
	return value.decode() if isinstance(value, bytes) else value
