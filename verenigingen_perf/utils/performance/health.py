"""The health score: recent hourly aggregates and the app's own jobs, judged against the configuration.

Formula (also in docs/health.md). Every component has a measured value and a warning and a critical level
from the configuration; the health thresholds give the score at those levels (H_w, H_c):

	value <= warning:             100 - (100 - H_w) * value / warning
	warning < value <= critical:  H_w - (H_w - H_c) * (value - warning) / (critical - warning)
	value > critical:             H_c * critical / value

so a component scores exactly H_w at its warning level and H_c at its critical level. The health score
is the lowest component score (the weakest component decides), and its level is healthy at or above
H_w, warning at or above H_c, critical below. With no aggregated measurement in the window the answer
is "no data", never a score; a component with nothing to measure (no page loads in the window, say)
is "no data" and does not take part.

Each kind of operation is judged on its own levels: API calls, page loads and background jobs do
different work. Measured code blocks (`measure()`) run inside requests and jobs, so they are not
judged again. The error rate counts the site's errors (HTTP 5xx, jobs that raised); an HTTP 4xx is
the caller's error (a visitor asking for what does not exist), reported apart and not judged.

The judging half is pure Python; the collecting half reads the aggregates through Frappe.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance import buffer, job_reports, monitoring, rollup, schedule
from verenigingen_perf.utils.performance.config import Level, PerformanceConfig, PerformanceThresholds
from verenigingen_perf.utils.performance.detection import reports as detection
from verenigingen_perf.utils.performance.levels import CRITICAL, HEALTHY, NO_DATA, WARNING, value_level
from verenigingen_perf.utils.performance.schema import (
	AGGREGATE,
	ALL_OPERATIONS,
	API,
	JOB,
	PAGE,
)
from verenigingen_perf.utils.performance.sketch import StoredSketchMerger, decode_stored
from verenigingen_perf.utils.performance.timeutil import as_datetime, epoch_text, format_datetime

# the most a score can be: the top of the 0-100 scale, not a threshold
FULL_SCORE = 100.0
# the operation types the health score judges (measured blocks run inside them)
JUDGED_TYPES = (API, PAGE, JOB)


# --- judging (pure) -------------------------------------------------------------------------------


def component_score(value: float, level: Level, health: Level) -> float:
	"""The piecewise-linear score of one measured value (see the module docstring)."""
	if value <= level.warning:
		return FULL_SCORE - (FULL_SCORE - health.warning) * max(value, 0.0) / level.warning
	if value <= level.critical:
		share = (value - level.warning) / (level.critical - level.warning)
		return health.warning - (health.warning - health.critical) * share
	return health.critical * level.critical / value


def score_level(score: float, health: Level) -> str:
	if score >= health.warning:
		return HEALTHY
	return WARNING if score >= health.critical else CRITICAL


@dataclass
class Component:
	name: str
	value: float | None
	unit: str
	warning: float
	critical: float
	score: float | None
	level: str
	source: str


@dataclass
class TypeFigures:
	"""What one kind of operation did in the window."""

	count: int = 0
	p95_ms: float | None = None
	queries_per_operation: float | None = None
	error_rate: float | None = None
	client_error_rate: float | None = None


@dataclass
class WindowFigures:
	"""What the health check measured over its window (None: nothing to measure)."""

	window_hours: int
	operations_measured: int = 0
	count: int = 0
	by_type: dict[str, TypeFigures] = field(default_factory=dict)
	error_rate: float | None = None
	client_error_rate: float | None = None
	memory_max_mb: float | None = None
	job_lag_s: dict[str, float | None] = field(default_factory=dict)

	def of(self, operation_type: str) -> TypeFigures:
		return self.by_type.get(operation_type) or TypeFigures()


@dataclass
class HealthReport:
	score: float | None
	level: str
	components: list[Component]
	measured: WindowFigures
	message: str

	def as_dict(self) -> dict[str, Any]:
		return asdict(self)


def _component(
	name: str, value: float | None, unit: str, level: Level, health: Level, source: str
) -> Component:
	if value is None:
		return Component(name, None, unit, level.warning, level.critical, None, NO_DATA, source)
	score = round(component_score(value, level, health), 2)
	return Component(
		name, value, unit, level.warning, level.critical, score, value_level(value, level), source
	)


def judge(figures: WindowFigures, thresholds: PerformanceThresholds) -> HealthReport:
	health = thresholds.health_score
	window = f"hourly aggregates of the last {figures.window_hours} h"
	api, page, job = figures.of(API), figures.of(PAGE), figures.of(JOB)
	components = [
		_component("api_response_p95", api.p95_ms, "ms", thresholds.api_response_ms, health, window),
		_component(
			"api_queries", api.queries_per_operation, "statements", thresholds.api_queries, health, window
		),
		_component("page_load_p95", page.p95_ms, "ms", thresholds.page_load_ms, health, window),
		_component(
			"page_queries", page.queries_per_operation, "statements", thresholds.page_queries, health, window
		),
		_component("job_duration_p95", job.p95_ms, "ms", thresholds.job_duration_ms, health, window),
		_component("error_rate", figures.error_rate, "ratio", thresholds.error_rate, health, window),
		_component("memory", figures.memory_max_mb, "MB", thresholds.memory_mb, health, window),
		*(
			_component(
				f"{job_name}_job_lag",
				lag,
				"s",
				thresholds.job_lag_s,
				health,
				f"seconds the {job_name} job is overdue, from its last report",
			)
			for job_name, lag in sorted(figures.job_lag_s.items())
		),
	]
	if not figures.count:
		return HealthReport(
			None,
			NO_DATA,
			components,
			figures,
			f"no data: no aggregated measurement in the last {figures.window_hours} h yet",
		)
	scored = [c for c in components if c.score is not None]
	weakest = min(scored, key=lambda c: c.score)
	score = weakest.score
	return HealthReport(
		score,
		score_level(score, health),
		components,
		figures,
		f"{score_level(score, health)}: the weakest component is {weakest.name} ({weakest.level})",
	)


# --- figures from aggregate rows (pure) -------------------------------------------------------------


class PeriodFigures:
	"""Count, errors, sums, extremes and the merged sketch of a set of aggregate rows."""

	__slots__ = (
		"client_error_count",
		"count",
		"duration_max_ms",
		"duration_min_ms",
		"duration_sum_ms",
		"error_count",
		"memory_max_mb",
		"merger",
		"query_sum",
	)

	def __init__(self) -> None:
		self.count = 0
		self.error_count = 0
		self.client_error_count = 0
		self.duration_sum_ms = 0.0
		self.duration_min_ms = math.inf
		self.duration_max_ms = 0.0
		self.query_sum = 0
		self.memory_max_mb = 0.0
		self.merger = StoredSketchMerger()

	def add(self, row: Mapping[str, Any]) -> None:
		"""Add an aggregate row (numbers as `read_aggregates` normalises them)."""
		count = row["count"]
		if not count:
			return
		self.count += count
		self.error_count += row["error_count"]
		self.client_error_count += row["client_error_count"]
		self.duration_sum_ms += row["duration_sum_ms"]
		if row["duration_min_ms"] < self.duration_min_ms:
			self.duration_min_ms = row["duration_min_ms"]
		if row["duration_max_ms"] > self.duration_max_ms:
			self.duration_max_ms = row["duration_max_ms"]
		self.query_sum += row["query_sum"]
		if row["memory_max_mb"] > self.memory_max_mb:
			self.memory_max_mb = row["memory_max_mb"]
		self.merger.add(row["sketch"])

	def merge(self, other: PeriodFigures) -> None:
		if not other.count:
			return
		self.count += other.count
		self.error_count += other.error_count
		self.client_error_count += other.client_error_count
		self.duration_sum_ms += other.duration_sum_ms
		self.duration_min_ms = min(self.duration_min_ms, other.duration_min_ms)
		self.duration_max_ms = max(self.duration_max_ms, other.duration_max_ms)
		self.query_sum += other.query_sum
		self.memory_max_mb = max(self.memory_max_mb, other.memory_max_mb)
		self.merger.merge(other.merger)

	def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
		if not self.count:
			return [None for _ in qs]
		values = self.merger.quantiles(qs, self.duration_min_ms, self.duration_max_ms)
		return [round(v, 3) for v in values]

	def rate(self, part: int) -> float | None:
		return round(part / self.count, 6) if self.count else None

	def key_figures(self, seconds: float) -> dict[str, Any]:
		p50, p95 = self.quantiles((0.5, 0.95))
		return {
			"count": self.count,
			"p50_ms": p50,
			"p95_ms": p95,
			"mean_ms": round(self.duration_sum_ms / self.count, 3) if self.count else None,
			"throughput_per_min": round(self.count / (seconds / 60), 3) if seconds > 0 else None,
			"error_rate": self.rate(self.error_count),
			"client_error_rate": self.rate(self.client_error_count),
			"queries_per_operation": round(self.query_sum / self.count, 3) if self.count else None,
		}


def figures_by(rows: Iterable[Mapping[str, Any]], column: str) -> dict[Any, PeriodFigures]:
	"""The rows added up per value of `column` (each row merged once)."""
	grouped: defaultdict[Any, PeriodFigures] = defaultdict(PeriodFigures)
	for row in rows:
		grouped[row[column]].add(row)
	return grouped


def window_figures(
	rows: Iterable[Mapping[str, Any]], window_hours: int
) -> tuple[WindowFigures, dict[str, PeriodFigures]]:
	"""The health figures from the window's hourly rows: per judged type from the site-wide rows,
	and per operation (for the slowest operations) from the others."""
	rows = list(rows)
	per_type = figures_by((row for row in rows if row["operation"] == ALL_OPERATIONS), "operation_type")
	per_operation = figures_by((row for row in rows if row["operation"] != ALL_OPERATIONS), "operation")
	judged = PeriodFigures()
	figures = WindowFigures(window_hours=window_hours, operations_measured=len(per_operation))
	for operation_type in JUDGED_TYPES:
		of_type = per_type.get(operation_type)
		if of_type is None or not of_type.count:
			continue
		judged.merge(of_type)
		figures.by_type[operation_type] = TypeFigures(
			count=of_type.count,
			p95_ms=of_type.quantiles((0.95,))[0],
			queries_per_operation=round(of_type.query_sum / of_type.count, 3),
			error_rate=of_type.rate(of_type.error_count),
			client_error_rate=of_type.rate(of_type.client_error_count),
		)
	if judged.count:
		figures.count = judged.count
		figures.error_rate = judged.rate(judged.error_count)
		figures.client_error_rate = judged.rate(judged.client_error_count)
		figures.memory_max_mb = round(judged.memory_max_mb, 3)
	return figures, per_operation


def slowest(
	per_operation: Mapping[str, PeriodFigures], limit: int, types: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
	"""The operations with the highest p95, slowest first."""
	ranked = []
	for operation, figures in per_operation.items():
		if not figures.count:
			continue
		p95 = figures.quantiles((0.95,))[0]
		ranked.append(
			{
				"operation": operation,
				"operation_type": (types or {}).get(operation),
				"p95_ms": p95,
				"count": figures.count,
				"error_rate": figures.rate(figures.error_count),
				"client_error_rate": figures.rate(figures.client_error_count),
			}
		)
	ranked.sort(key=lambda item: (-item["p95_ms"], item["operation"]))
	return ranked[:limit]


def slowest_since(since: datetime, limit: int) -> list[dict[str, Any]]:
	"""The operations with the highest p95 in the hourly aggregates from the hour of `since` on."""
	rows = [
		row
		for row in read_aggregates("hour", since.replace(minute=0, second=0, microsecond=0))
		if row["operation"] != ALL_OPERATIONS
	]
	return slowest(figures_by(rows, "operation"), limit, operation_types(rows))


def operation_types(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
	return {row["operation"]: row["operation_type"] for row in rows if row["operation"] != ALL_OPERATIONS}


# --- collecting (Frappe) ----------------------------------------------------------------------------

# the columns the health check and the dashboard read from aggregate rows
READ_COLUMNS = (
	"operation",
	"operation_type",
	"period_start",
	"count",
	"error_count",
	"client_error_count",
	"duration_sum_ms",
	"duration_min_ms",
	"duration_max_ms",
	"query_sum",
	"memory_max_mb",
	"sketch",
)
# the app's jobs whose lag the health check judges: the name they report under, their method
JOBS = {
	"drain": "verenigingen_perf.utils.performance.buffer.drain_job",
	"rollup": "verenigingen_perf.utils.performance.rollup.rollup_job",
}


def read_aggregates(granularity: str, since: datetime, operation: str | None = None) -> list[dict[str, Any]]:
	"""Aggregate rows of one granularity from `since` on (of one operation, if given), in one
	statement, numbers normalised and each sketch decoded once. Rows come as tuples and are made
	into dicts here: the framework's own `as_dict` and a conversion per column cost more than the
	query."""

	columns = ", ".join(f"`{c}`" for c in READ_COLUMNS)
	# the tuple unpacked below is READ_COLUMNS, in that order
	where, values = "granularity=%s and period_start >= %s", [granularity, format_datetime(since)]
	if operation is not None:
		where += " and operation=%s"
		values.append(operation)
	rows = frappe.db.sql(f"select {columns} from `tab{AGGREGATE}` where {where}", values)
	return [
		{
			"operation": row_operation,
			"operation_type": operation_type,
			"period_start": as_datetime(period_start),
			"count": int(count or 0),
			"error_count": int(error_count or 0),
			"client_error_count": int(client_error_count or 0),
			"duration_sum_ms": float(duration_sum or 0),
			"duration_min_ms": float(duration_min or 0),
			"duration_max_ms": float(duration_max or 0),
			"query_sum": int(query_sum or 0),
			"memory_max_mb": float(memory_max or 0),
			"sketch": decode_stored(sketch) if sketch else None,
		}
		for (
			row_operation,
			operation_type,
			period_start,
			count,
			error_count,
			client_error_count,
			duration_sum,
			duration_min,
			duration_max,
			query_sum,
			memory_max,
			sketch,
		) in rows
		# a collation may match a name that only looks like it; the caller asked for this one
		if operation is None or row_operation == operation
	]


def job_lags(reports: Any, now_epoch: float) -> dict[str, float | None]:
	return {
		job: schedule.job_lag_s(
			reports.finished_at(job), schedule.schedule_period_s(method) or 0.0, now_epoch
		)
		for job, method in JOBS.items()
	}


def window_start(now: datetime, hours: int) -> datetime:
	"""The first hour the window covers: the current (incomplete) hour and `hours` complete ones."""
	return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)


def health_from_rows(
	rows: Iterable[Mapping[str, Any]], config: PerformanceConfig, now: datetime, reports: Any
) -> tuple[HealthReport, list[dict[str, Any]]]:
	"""The health report and the slowest operations from hourly rows (only those in the window)."""
	start = window_start(now, config.analysis.health_window_hours)
	in_window = [r for r in rows if r["period_start"] >= start]
	figures, per_operation = window_figures(in_window, config.analysis.health_window_hours)
	figures.job_lag_s = job_lags(reports, time.time())
	ranked = slowest(per_operation, config.analysis.slowest_operations, operation_types(in_window))
	return judge(figures, config.thresholds), ranked


_UNREAD = object()


def freshness(reports: Any, watermark: Any = _UNREAD) -> dict[str, Any]:
	"""How current the data is: the rollup watermark (read here unless the caller has it), the jobs'
	last reports, what waits in the buffer; `unavailable` names what could not be read (Redis down),
	never a guessed figure."""

	if watermark is _UNREAD:
		watermark = rollup.get_watermark()
	state = buffer.state()
	return {
		"aggregated_until": format_datetime(watermark) if watermark else None,
		"last_drain_at": epoch_text(reports.finished_at("drain")),
		"last_rollup_at": epoch_text(reports.finished_at("rollup")),
		"last_retention_at": epoch_text(reports.finished_at("retention")),
		"job_reports_from": reports.source,
		"buffered_measurements": asdict(state),
		"unavailable": [*reports.unavailable, *state.unavailable],
	}


def with_trust(report: dict[str, Any], monitor: dict[str, Any]) -> dict[str, Any]:
	"""The health answer with the monitoring section. A healthy verdict needs a monitor that sees the
	site: while the monitoring is critical (its jobs stalled, measurements dropped, the capture
	failing) the figures may be incomplete, so the level is at most "warning" and the message says
	why; the score stays what was measured."""
	report = {**report, "monitoring": monitor}
	if not monitor.get("trusted", True) and report["level"] == HEALTHY:
		failing = ", ".join(s["name"] for s in monitor["signals"] if s["level"] == CRITICAL)
		report["level"] = WARNING
		report["message"] = (
			f"warning: not trusted while the monitoring is critical ({failing}); measured: {report['message']}"
		)
	return report


def system_health(config: PerformanceConfig, now: datetime | None = None) -> dict[str, Any]:
	"""The quick health check's system part: score, level, components, slowest operations,
	freshness and the monitoring section."""

	now = now or frappe.utils.now_datetime()
	reports = job_reports.read()
	rows = read_aggregates("hour", window_start(now, config.analysis.health_window_hours))
	report, slowest_operations = health_from_rows(rows, config, now, reports)
	answer = {
		**report.as_dict(),
		"slowest_operations": slowest_operations,
		"freshness": freshness(reports),
		"detection": detection.summary(config, now, config.analysis.slowest_operations),
		"environment": config.environment,
		"measured_at": format_datetime(now),
	}
	return with_trust(answer, monitoring.summary(config, reports))
