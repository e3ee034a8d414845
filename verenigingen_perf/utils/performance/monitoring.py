"""Meta-monitoring: the monitor watches itself.

Every minute a scheduled job records a sample of the monitor's own signals (Performance Monitor
Sample, kept as long as detail rows, so the signals have history):

| signal | what | levels |
|---|---|---|
| `drain_job_lag`, `rollup_job_lag`, `retention_job_lag`, `monitor_job_lag`, `detection_job_lag`, `alerts_job_lag` | seconds a job is overdue (its last report, its schedule) | job lag |
| `buffer_age` | age of the oldest measurement waiting in the buffer | buffer age |
| `loss_rate` | measurements dropped / (drained + dropped) since the previous sample | loss rate |
| `capture_errors_per_min` | the app's own failures (logged with their traceback) per minute | capture errors |
| `capture_cost` | the app's own time per request (its hooks, plus the flusher's time per measurement), p95 | capture cost |
| `rollup_backlog` | complete hours the rollup is behind | rollup backlog |
| `storage_days` | days until the performance tables reach `storage_budget_mb`, at the growth of the last day | storage days (higher is better) |

Requests the framework refused before the app's hooks ran (`unmeasured`) and the capture's share of
request time are reported beside them, not judged. The monitoring level is the worst signal level;
a signal with nothing to measure is "no data". While the monitoring is critical, the health score's
verdict is not trusted (see health.py: its level is at most "warning", and it says why).

The heartbeat (`heartbeat_verdict`) reads the same signals live: it names the stale parts (capture,
drain, rollup) and nothing else.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance import buffer, capture, job_reports, rollup, schedule
from verenigingen_perf.utils.performance.config import Level, PerformanceConfig, get_config
from verenigingen_perf.utils.performance.levels import CRITICAL, HEALTHY, NO_DATA, WARNING, value_level
from verenigingen_perf.utils.performance.schema import METRIC, REQUEST_TYPES
from verenigingen_perf.utils.performance.schema import MONITOR_SAMPLE as SAMPLE
from verenigingen_perf.utils.performance.timeutil import as_datetime, floor_hour, format_datetime, from_epoch

_LEVEL_ORDER = {NO_DATA: -1, HEALTHY: 0, WARNING: 1, CRITICAL: 2}
# jobs whose lag the monitor judges: the name they report under, their method
JOBS = {
	"drain": "verenigingen_perf.utils.performance.buffer.drain_job",
	"rollup": "verenigingen_perf.utils.performance.rollup.rollup_job",
	"retention": "verenigingen_perf.utils.performance.retention.retention_job",
	"monitor": "verenigingen_perf.utils.performance.monitoring.sample_job",
	"detection": "verenigingen_perf.utils.performance.detection.job.detection_job",
	"alerts": "verenigingen_perf.utils.performance.alerts.evaluate.evaluation_job",
	"otlp": "verenigingen_perf.utils.performance.export.otlp.export_job",
	"snapshot": "verenigingen_perf.utils.performance.database.snapshot.snapshot_job",
}
# the parts the heartbeat answers for, and the signals that make each stale
HEARTBEAT_PARTS = {
	"capture": ("buffer_age", "loss_rate", "capture_errors_per_min"),
	"drain": ("drain_job_lag", "monitor_job_lag"),
	"rollup": ("rollup_job_lag", "rollup_backlog"),
}


# --- judging (pure) ---------------------------------------------------------------------------------


@dataclass
class Signal:
	name: str
	value: float | None
	unit: str
	warning: float
	critical: float
	level: str
	higher_is_better: bool = False


def judge_value(value: float | None, level: Level, higher_is_better: bool = False) -> str:
	if value is None:
		return NO_DATA
	if higher_is_better:
		if value >= level.warning:
			return HEALTHY
		return WARNING if value >= level.critical else CRITICAL
	return value_level(value, level)


def signals(sample: dict[str, Any], config: PerformanceConfig) -> list[Signal]:
	"""Every judged signal of a sample, with its levels from the configuration."""
	meta, lag = config.meta, config.thresholds.job_lag_s
	judged = [
		*((f"{job}_job_lag", sample.get(f"{job}_lag_s"), "s", lag, False) for job in JOBS),
		("buffer_age", sample.get("buffer_age_s"), "s", meta.buffer_age_s, False),
		("loss_rate", sample.get("loss_rate"), "ratio", meta.loss_rate, False),
		(
			"capture_errors_per_min",
			sample.get("capture_errors_per_min"),
			"per min",
			meta.capture_errors_per_min,
			False,
		),
		("capture_cost", sample.get("capture_us_p95"), "µs", meta.capture_cost_us, False),
		("rollup_backlog", sample.get("rollup_backlog_h"), "h", meta.rollup_backlog_h, False),
		("storage_days", sample.get("storage_days"), "days", meta.storage_days, True),
	]
	return [
		Signal(name, value, unit, level.warning, level.critical, judge_value(value, level, better), better)
		for name, value, unit, level, better in judged
	]


def worst_level(judged: list[Signal]) -> str:
	return max((s.level for s in judged), key=_LEVEL_ORDER.__getitem__, default=NO_DATA)


def stale_parts(judged: list[Signal]) -> list[str]:
	"""The heartbeat's parts with a critical signal."""
	by_name = {s.name: s for s in judged}
	return [
		part for part, names in HEARTBEAT_PARTS.items() if any(by_name[n].level == CRITICAL for n in names)
	]


def per_minute(count: int | None, minutes: float | None) -> float | None:
	if count is None or not minutes:
		return None
	return round(count / minutes, 4)


def counter_delta(total: int | None, previous: int | None) -> int | None:
	"""How much a cumulative Redis counter rose since the previous sample (a counter that fell was
	reset: Redis restarted, so all of it is new)."""
	if total is None:
		return None
	if previous is None:
		return None
	return total - previous if total >= previous else total


def quantile(values: list[float], q: float) -> float | None:
	"""Nearest-rank quantile of a small list."""
	if not values:
		return None
	ordered = sorted(values)
	return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- collecting (Frappe) ------------------------------------------------------------------------------


def collect(config: PerformanceConfig, since_previous: bool = False) -> dict[str, Any]:
	"""The monitor's signals now; with `since_previous`, also what was measured since the previous
	sample: counts, rates and the capture's own cost."""

	now = time.time()
	reports = job_reports.read()
	state = buffer.state()
	sample: dict[str, Any] = {"sampled_at": format_datetime(frappe.utils.now_datetime())}
	for job, method in JOBS.items():
		period = schedule.schedule_period_s(method) or 0.0
		sample[f"{job}_lag_s"] = schedule.job_lag_s(reports.finished_at(job), period, now)
	sample["buffered"] = state.buffered
	sample["buffer_age_s"] = buffer.oldest_buffered_age_s(now)
	watermark = rollup.get_watermark()
	due = floor_hour(
		frappe.utils.now_datetime() - timedelta(minutes=config.retention.aggregation_delay_minutes)
	)
	sample["rollup_backlog_h"] = (
		round(max(0.0, (due - watermark).total_seconds() / 3600), 2) if watermark else None
	)
	sample.update(
		dropped_total=state.dropped,
		capture_errors_total=state.capture_errors,
		unmeasured_total=state.unmeasured_requests,
	)
	sample["unavailable"] = [*reports.unavailable, *state.unavailable]
	if since_previous:
		sample.update(_since_previous(sample, reports.by_job.get("monitor") or {}, now))
	sample.update(_storage(config, reports))
	return sample


# the most recent requests whose capture cost one sample reads (a bound on its work)
_COST_ROWS = 5000


def _since_previous(sample: dict[str, Any], previous: dict[str, Any], now: float) -> dict[str, Any]:
	"""Counts and rates since the previous sample, and the capture's cost over the requests drained
	since then."""

	if not previous.get("finished_at"):
		return {"minutes": None}
	minutes = round((now - previous["finished_at"]) / 60, 3)
	since = format_datetime(from_epoch(previous["finished_at"]))
	measured = frappe.db.sql(f"select count(*) from `tab{METRIC}` where creation > %s", (since,))[0][0]
	recent = frappe.db.sql(
		f"""select capture_us, duration_ms from `tab{METRIC}` where creation > %s
		and operation_type in ({", ".join(["%s"] * len(REQUEST_TYPES))}) order by creation desc limit %s""",
		(since, *REQUEST_TYPES, _COST_ROWS),
	)
	dropped = counter_delta(sample["dropped_total"], previous.get("dropped_total"))
	errors = counter_delta(sample["capture_errors_total"], previous.get("capture_errors_total"))
	unmeasured = counter_delta(sample["unmeasured_total"], previous.get("unmeasured_total"))
	flusher_us = buffer.flusher_us_per_measurement() or 0.0
	costs = [float(us or 0) + flusher_us for us, _ms in recent]
	shares = [cost / (float(ms) * 1000) for cost, (_us, ms) in zip(costs, recent, strict=True) if ms]
	return {
		"minutes": minutes,
		"measured": int(measured),
		"dropped": dropped,
		"capture_errors": errors,
		"unmeasured": unmeasured,
		"loss_rate": loss_rate(int(measured), dropped),
		"capture_errors_per_min": per_minute(errors, minutes),
		"unmeasured_per_min": per_minute(unmeasured, minutes),
		"capture_us_p50": _rounded(quantile(costs, 0.5)),
		"capture_us_p95": _rounded(quantile(costs, 0.95)),
		"capture_share": _rounded(statistics.median(shares), 6) if shares else None,
	}


def loss_rate(measured: int, dropped: int | None) -> float | None:
	"""Dropped / (measured + dropped); 0 when nothing was measured or dropped."""
	if dropped is None:
		return None
	total = measured + dropped
	return round(dropped / total, 6) if total else 0.0


def _rounded(value: float | None, digits: int = 2) -> float | None:
	return None if value is None else round(value, digits)


def _storage(config: PerformanceConfig, reports: Any) -> dict[str, Any]:
	"""Table sizes as the retention job last measured them, their growth over the last day of
	samples, and the days until the budget."""

	measured = (reports.by_job.get("retention") or {}).get("storage") or []
	if not measured:
		return {"storage_mb": None, "storage_growth_mb_per_day": None, "storage_days": None}
	storage_mb = round(sum(t["bytes"] for t in measured) / 2**20, 3)
	day_ago = format_datetime(frappe.utils.now_datetime() - timedelta(days=1))
	earlier = frappe.db.sql(
		f"""select sampled_at, storage_mb from `tab{SAMPLE}` where storage_mb is not null and sampled_at <= %s
		order by sampled_at desc limit 1""",
		(day_ago,),
	)
	growth = days = None
	if earlier:
		elapsed_days = (frappe.utils.now_datetime() - as_datetime(earlier[0][0])).total_seconds() / 86400
		growth = round((storage_mb - float(earlier[0][1])) / elapsed_days, 3) if elapsed_days else None
	budget = config.meta.storage_budget_mb
	if budget and growth and growth > 0:
		days = round(max(0.0, budget - storage_mb) / growth, 1)
	return {"storage_mb": storage_mb, "storage_growth_mb_per_day": growth, "storage_days": days}


def sample_job() -> dict[str, Any]:
	"""Scheduled every minute: record one sample of the monitor's signals."""

	return record_sample(get_config())


def record_sample(config: PerformanceConfig) -> dict[str, Any]:
	"""Collect, judge and store one sample."""

	sample = collect(config, since_previous=True)
	judged = signals(sample, config)
	sample["level"] = worst_level(judged)
	row = {key: sample.get(key) for key in _SAMPLE_FIELDS}
	frappe.get_doc({"doctype": SAMPLE, "name": capture.new_id(), **row}).db_insert()
	frappe.db.commit()
	job_reports.record("monitor", {**sample, "signals": [asdict(s) for s in judged]})
	return sample


_SAMPLE_FIELDS = (
	"sampled_at",
	"level",
	"drain_lag_s",
	"rollup_lag_s",
	"retention_lag_s",
	"detection_lag_s",
	"alerts_lag_s",
	"buffered",
	"buffer_age_s",
	"rollup_backlog_h",
	"minutes",
	"measured",
	"dropped",
	"capture_errors",
	"unmeasured",
	"loss_rate",
	"capture_errors_per_min",
	"capture_us_p50",
	"capture_us_p95",
	"capture_share",
	"dropped_total",
	"capture_errors_total",
	"unmeasured_total",
	"storage_mb",
	"storage_growth_mb_per_day",
	"storage_days",
)
# the signals the status answer gives history for (sample columns)
HISTORY_COLUMNS = (
	"level",
	"drain_lag_s",
	"rollup_lag_s",
	"buffered",
	"buffer_age_s",
	"loss_rate",
	"capture_errors_per_min",
	"capture_us_p95",
	"capture_share",
	"rollup_backlog_h",
	"unmeasured",
	"storage_mb",
)


def latest(reports: Any = None) -> dict[str, Any] | None:
	"""The last recorded sample with its judged signals (from the job reports: no statement)."""

	reports = reports or job_reports.read()
	return reports.by_job.get("monitor")


def summary(config: PerformanceConfig, reports: Any = None) -> dict[str, Any]:
	"""The monitoring section of the health check and the dashboard: the last sample's level and
	signals, and whether the health verdict can be trusted."""
	last = latest(reports)
	if not last:
		return {"level": NO_DATA, "sampled_at": None, "signals": [], "trusted": True}
	judged = signals(last, config)
	level = worst_level(judged)
	return {
		"level": level,
		"sampled_at": last.get("sampled_at"),
		"signals": [asdict(s) for s in judged],
		"unmeasured_per_min": last.get("unmeasured_per_min"),
		"capture_share": last.get("capture_share"),
		"trusted": level != CRITICAL,
	}


def status(config: PerformanceConfig, hours: int) -> dict[str, Any]:
	"""The monitoring_status answer: signals now (live), their levels, and the history of the last
	`hours` of samples."""

	live = collect(config)
	last = latest() or {}
	# the rates and costs only a drain run can measure come from its last sample
	for key in (
		"loss_rate",
		"capture_errors_per_min",
		"capture_us_p95",
		"capture_us_p50",
		"capture_share",
		"unmeasured_per_min",
	):
		live.setdefault(key, last.get(key))
	judged = signals(live, config)
	since = format_datetime(frappe.utils.now_datetime() - timedelta(hours=hours))
	columns = ", ".join(f"`{c}`" for c in ("sampled_at", *HISTORY_COLUMNS))
	rows = frappe.db.sql(
		f"select {columns} from `tab{SAMPLE}` where sampled_at >= %s order by sampled_at", (since,)
	)
	return {
		"level": worst_level(judged),
		"signals": [asdict(s) for s in judged],
		"measured_at": live["sampled_at"],
		"unavailable": live["unavailable"],
		"stale": stale_parts(judged),
		"history": {
			"columns": ["sampled_at", *HISTORY_COLUMNS],
			"rows": [[str(row[0]), *row[1:]] for row in rows],
		},
	}


def heartbeat_verdict(config: PerformanceConfig) -> list[str]:
	"""The stale parts now (empty: all fresh). Rates that only a drain can measure come from the last
	sample; everything else is read live."""
	live = collect(config)
	last = latest() or {}
	for key in ("loss_rate", "capture_errors_per_min"):
		live.setdefault(key, last.get(key))
	return stale_parts(signals(live, config))
