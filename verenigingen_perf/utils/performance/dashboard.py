"""The desk dashboard's data: health, key figures per window, series, slowest operations, storage and
freshness, all from aggregates; cached in Redis for the configured time.

A cold answer reads hourly rows for the last 24 hours (and the health window), daily rows for the
last 30 days and the watermark: three statements. A cached answer runs none.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import frappe
import redis

from verenigingen_perf.utils.performance import health
from verenigingen_perf.utils.performance.config import PerformanceConfig
from verenigingen_perf.utils.performance.redis_store import key, redis_client
from verenigingen_perf.utils.performance.rollup import floor_day, floor_hour, format_datetime
from verenigingen_perf.utils.performance.schema import ALL_OPERATIONS

CACHE_KEY = "dashboard"
HOURLY_SERIES_HOURS = 24
DAILY_SERIES_DAYS = 30
# windows of the key figures: name, length, and which aggregates cover it
WINDOWS = (
	("last_hour", timedelta(hours=1), "hour"),
	("last_24h", timedelta(hours=24), "hour"),
	("last_7d", timedelta(days=7), "day"),
)


def cached_dashboard(config: PerformanceConfig) -> dict[str, Any]:
	"""The dashboard, from Redis when a fresh copy is there (no SQL), else built and stored."""
	ttl = config.monitoring.dashboard_cache_ttl_s
	client = redis_client()
	try:
		cached = client.get(key(CACHE_KEY)) if ttl else None
	except redis.exceptions.ConnectionError:
		cached = None
	if cached is not None:
		return {**json.loads(cached), "cached": True}
	data = build_dashboard(config)
	if ttl:
		try:
			client.set(key(CACHE_KEY), json.dumps(data, default=str), ex=ttl)
		except redis.exceptions.ConnectionError:
			pass
	return {**data, "cached": False}


def clear_dashboard_cache() -> None:
	try:
		redis_client().delete(key(CACHE_KEY))
	except redis.exceptions.ConnectionError:
		pass


def build_dashboard(config: PerformanceConfig, now: datetime | None = None) -> dict[str, Any]:
	"""Every figure merges each aggregate row once: site-wide rows into periods, periods into
	windows, the rows of each operation into that operation's figures."""
	now = now or frappe.utils.now_datetime()
	current_hour, today = floor_hour(now), floor_day(now)
	hourly_since = min(
		current_hour - timedelta(hours=HOURLY_SERIES_HOURS),
		health.window_start(now, config.analysis.health_window_hours),
	)
	hourly = health.read_aggregates("hour", hourly_since)
	daily = health.read_aggregates(
		"day",
		min(today - timedelta(days=DAILY_SERIES_DAYS - 1), today - WINDOWS[-1][1]),
		operation=ALL_OPERATIONS,
	)
	report, slowest_in_window = health.health_from_rows(hourly, config, now)

	periods = {
		"hour": health.figures_by(
			(row for row in hourly if row["operation"] == ALL_OPERATIONS), "period_start"
		),
		"day": health.figures_by(daily, "period_start"),
	}
	day_start = current_hour - timedelta(hours=HOURLY_SERIES_HOURS - 1)
	per_operation = health.figures_by(
		(row for row in hourly if row["period_start"] >= day_start and row["operation"] != ALL_OPERATIONS),
		"operation",
	)

	windows = {}
	for name, length, granularity in WINDOWS:
		# whole periods: the complete ones the window spans, and the current one so far
		start = (current_hour if granularity == "hour" else today) - length
		figures = health.PeriodFigures()
		for period, period_figures in periods[granularity].items():
			if period >= start:
				figures.merge(period_figures)
		windows[name] = {
			**figures.key_figures((now - start).total_seconds()),
			"since": format_datetime(start),
		}

	return {
		"health": {**report.as_dict(), "slowest_operations": slowest_in_window},
		"windows": windows,
		"slowest_operations_24h": health.slowest(per_operation, config.analysis.slowest_operations),
		"hourly_series": _series(periods["hour"], current_hour, timedelta(hours=1), HOURLY_SERIES_HOURS),
		"daily_series": _series(periods["day"], today, timedelta(days=1), DAILY_SERIES_DAYS),
		"storage": storage_figures(),
		"freshness": health.freshness(),
		"environment": config.environment,
		"generated_at": format_datetime(now),
		"cache_ttl_s": config.monitoring.dashboard_cache_ttl_s,
	}


def _series(
	periods: dict[datetime, health.PeriodFigures], last: datetime, step: timedelta, points: int
) -> list[dict[str, Any]]:
	"""One point per period, oldest first; a period without rows has count 0 and no percentiles."""
	series = []
	for i in range(points - 1, -1, -1):
		start = last - step * i
		figures = periods.get(start) or health.PeriodFigures()
		p50, p95 = figures.quantiles((0.5, 0.95))
		series.append(
			{
				"period_start": format_datetime(start),
				"count": figures.count,
				"errors": figures.error_count,
				"p50_ms": p50,
				"p95_ms": p95,
			}
		)
	return series


def storage_figures() -> dict[str, Any]:
	"""Table sizes as the retention job last measured them (measuring a big table takes seconds)."""
	from verenigingen_perf.utils.performance import buffer

	report = buffer.job_reports().get("last_retention") or {}
	if not report.get("storage"):
		return {"measured_at": None, "tables": [], "note": "not measured yet: the retention job measures it"}
	return {
		"measured_at": health._epoch_text(report.get("finished_at")),
		"tables": report["storage"],
	}
