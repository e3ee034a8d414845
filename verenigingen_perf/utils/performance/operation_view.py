"""One operation as the desk's operation view shows it: hourly figures for a week and daily figures for
90 days from the aggregates, its baselines and regressions, and its slowest recent detail rows.

Four reads of the aggregates and detection tables and one of the detail rows, each through an index
that starts with the operation (the detail rows' `(operation, started_at)`), so the cost does not grow
with the other operations' traffic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance import health
from verenigingen_perf.utils.performance.config import PerformanceConfig
from verenigingen_perf.utils.performance.detection import reports as detection
from verenigingen_perf.utils.performance.schema import METRIC
from verenigingen_perf.utils.performance.timeutil import as_datetime, floor_day, floor_hour, format_datetime

HOURLY_POINTS = 7 * 24
DAILY_POINTS = 90
QUANTILES = (0.5, 0.95, 0.99)
SLOW_ROW_FIELDS = [
	"name",
	"trace_id",
	"started_at",
	"duration_ms",
	"query_count",
	"db_time_ms",
	"status",
	"http_status",
	"user",
	"error",
]


def point(start: datetime, figures: health.PeriodFigures) -> dict[str, Any]:
	"""One period of a series: counts, percentiles and statements per call (None without data)."""
	p50, p95, p99 = figures.quantiles(QUANTILES)
	count = figures.count
	return {
		"period_start": format_datetime(start),
		"count": count,
		"errors": figures.error_count,
		"client_errors": figures.client_error_count,
		"p50_ms": p50,
		"p95_ms": p95,
		"p99_ms": p99,
		"mean_ms": round(figures.duration_sum_ms / count, 3) if count else None,
		"queries_per_call": round(figures.query_sum / count, 3) if count else None,
	}


def series(
	rows: Iterable[Mapping[str, Any]], last: datetime, step: timedelta, points: int
) -> list[dict[str, Any]]:
	"""One point per period, oldest first, periods without rows included (count 0)."""
	by_period = health.figures_by(rows, "period_start")
	return [
		point(start, by_period.get(start) or health.PeriodFigures())
		for start in (last - step * i for i in range(points - 1, -1, -1))
	]


def totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
	figures = health.PeriodFigures()
	for row in rows:
		figures.add(row)
	p50, p95, p99 = figures.quantiles(QUANTILES)
	count = figures.count
	return {
		"count": count,
		"errors": figures.error_count,
		"client_errors": figures.client_error_count,
		"error_rate": figures.rate(figures.error_count),
		"p50_ms": p50,
		"p95_ms": p95,
		"p99_ms": p99,
		"max_ms": round(figures.duration_max_ms, 3) if count else None,
		"queries_per_call": round(figures.query_sum / count, 3) if count else None,
	}


def slow_rows(operation: str, since: datetime, limit: int) -> list[dict[str, Any]]:
	rows = frappe.get_all(
		METRIC,
		filters={"operation": operation, "started_at": (">=", format_datetime(since))},
		fields=SLOW_ROW_FIELDS,
		order_by="duration_ms desc",
		limit=limit,
	)
	return [{**row, "started_at": format_datetime(as_datetime(row["started_at"]))} for row in rows]


def operation_view(operation: str, config: PerformanceConfig, now: datetime | None = None) -> dict[str, Any]:
	now = now or frappe.utils.now_datetime()
	current_hour, today = floor_hour(now), floor_day(now)
	hourly_since = current_hour - timedelta(hours=HOURLY_POINTS - 1)
	hourly = health.read_aggregates("hour", hourly_since, operation=operation)
	daily = health.read_aggregates("day", today - timedelta(days=DAILY_POINTS - 1), operation=operation)
	slow_since = now - timedelta(hours=config.desk.slow_rows_hours)
	slowest = slow_rows(operation, slow_since, config.desk.slow_rows)
	baselines = detection.baselines(operation)
	return {
		"operation": operation,
		"operation_types": sorted({row["operation_type"] for row in (*hourly, *daily)}),
		"measured": bool(hourly or daily or slowest),
		"last_7d": totals(hourly),
		"hourly_series": series(hourly, current_hour, timedelta(hours=1), HOURLY_POINTS),
		"daily_series": series(daily, today, timedelta(days=1), DAILY_POINTS),
		"baselines": baselines["baselines"],
		"baseline_status": baselines["status"],
		"regressions": detection.regressions(None, operation, config.desk.slow_rows)["regressions"],
		"slow_rows": slowest,
		"slow_rows_since": format_datetime(slow_since),
		"generated_at": format_datetime(now),
	}
