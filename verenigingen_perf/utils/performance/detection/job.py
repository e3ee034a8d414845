"""The detection job (hourly): every complete hour the rollup has aggregated and detection has not yet
evaluated is evaluated in order, each in its own transaction with the move of `detected_until`:
rolling baselines refreshed when a new day starts (and, with them, records past their retention
deleted), then regressions, then anomalies.

"Complete" means the rollup's watermark (ingestion time) has passed the hour's end, so the job never
judges an hour the rollup is still filling, whichever of the two hourly jobs runs first. After a
long stop the job catches up at most `MAX_CATCH_UP_HOURS` (older hours are skipped, and the report
says so). A Redis lock keeps two runs apart; without Redis the job still runs (records are
de-duplicated by the database either way).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance import job_reports, redis_store, rollup
from verenigingen_perf.utils.performance.config import PerformanceConfig, get_config
from verenigingen_perf.utils.performance.detection import anomalies, baselines, regressions
from verenigingen_perf.utils.performance.schema import ANOMALY, REGRESSION, RESOLVED, ROLLUP_STATE
from verenigingen_perf.utils.performance.timeutil import as_datetime, floor_hour, format_datetime

HOUR = timedelta(hours=1)
# a bound on one run's work, not a judgement: a week of hours
MAX_CATCH_UP_HOURS = 168


@dataclass
class DetectionReport:
	status: str = "ok"
	hours_evaluated: int = 0
	hours_skipped: int = 0
	baselines_refreshed: int = 0
	regressions_opened: int = 0
	regressions_resolved: int = 0
	anomalies_recorded: int = 0
	anomalies_folded: int = 0
	anomalies_deleted: int = 0
	regressions_deleted: int = 0
	detected_until: str | None = None
	duration_s: float = 0.0
	seconds_per_hour: list[float] = field(default_factory=list)
	errors: list[str] = field(default_factory=list)


def detection_job() -> dict[str, Any]:
	"""Scheduled hourly. A failure is recorded in the job's report (with its reason) and raised."""
	return job_reports.run_and_record(
		"detection", run_detection, lambda errors: DetectionReport(status="failed", errors=errors)
	)


def detected_until() -> datetime | None:
	# read from the table itself: the framework's cache of single values never sees the job's writes
	value = frappe.db.sql(
		"select value from `tabSingles` where doctype=%s and field='detected_until'", (ROLLUP_STATE,)
	)
	return as_datetime(value[0][0]) if value and value[0][0] else None


def _set_detected_until(moment: datetime) -> None:
	frappe.db.sql("delete from `tabSingles` where doctype=%s and field='detected_until'", (ROLLUP_STATE,))
	frappe.db.sql(
		"insert into `tabSingles` (doctype, field, value) values (%s, 'detected_until', %s)",
		(ROLLUP_STATE, format_datetime(moment)),
	)


def hours_to_evaluate(now: datetime) -> tuple[list[datetime], int]:
	"""The complete, aggregated hours not yet evaluated, oldest first (at most MAX_CATCH_UP_HOURS),
	and how many older ones are skipped."""
	watermark = rollup.get_watermark()
	if watermark is None:
		return [], 0
	complete_until = floor_hour(min(watermark, now))
	first = detected_until() or complete_until - HOUR
	pending = int((complete_until - first) / HOUR)
	skipped = max(0, pending - MAX_CATCH_UP_HOURS)
	first += HOUR * skipped
	return [first + HOUR * i for i in range(pending - skipped)], skipped


def prune(now: datetime, config: PerformanceConfig, report: DetectionReport) -> None:
	"""Bounded storage, once a day: anomalies go with the hourly aggregates they were read from,
	resolved regressions with the daily ones; open ones and pinned baselines stay."""
	retention = config.retention
	report.anomalies_deleted += _delete_in_batches(
		ANOMALY,
		{"period_start": ("<", now - timedelta(days=retention.hourly_days))},
		retention.delete_batch_size,
	)
	report.regressions_deleted += _delete_in_batches(
		REGRESSION,
		{"status": RESOLVED, "resolved_at": ("<", now - timedelta(days=retention.daily_days))},
		retention.delete_batch_size,
	)


def _delete_in_batches(doctype: str, filters: dict[str, Any], batch_size: int) -> int:
	deleted = 0
	while names := frappe.get_all(doctype, filters=filters, pluck="name", limit=batch_size):
		frappe.db.delete(doctype, {"name": ("in", names)})
		deleted += len(names)
	return deleted


def run_detection(now: datetime | None = None) -> DetectionReport:
	started = time.monotonic()
	report = DetectionReport()
	config = get_config()
	with redis_store.exclusive("detection", config.retention.job_lock_timeout_s) as acquired:
		if acquired is False:
			report.status = "skipped: another detection run is under way"
			return report
		if acquired is None:
			report.status = "degraded: Redis unreachable (no lock)"
		hours, report.hours_skipped = hours_to_evaluate(now or frappe.utils.now_datetime())
		for hour in hours:
			hour_started = time.monotonic()
			if baselines.refresh_rolling(hour, config.detection):
				report.baselines_refreshed += 1
				prune(hour, config, report)
			found = regressions.evaluate_hour(hour, config.detection)
			recorded = anomalies.evaluate_hour(hour, config.detection)
			_set_detected_until(hour + HOUR)
			frappe.db.commit()
			report.hours_evaluated += 1
			report.regressions_opened += found.opened
			report.regressions_resolved += found.resolved
			report.anomalies_recorded += recorded.recorded
			report.anomalies_folded += recorded.folded
			report.seconds_per_hour.append(round(time.monotonic() - hour_started, 3))
		until = detected_until()
		report.detected_until = format_datetime(until) if until else None
	report.duration_s = round(time.monotonic() - started, 3)
	return report
