"""The desk dashboard's data: health, key figures per window, series, slowest operations, storage and
freshness, all from aggregates; cached in Redis for the configured time.

A cold answer reads hourly rows for the last 24 hours (and the health window), daily site-wide rows
for the last 30 days and the watermark: three statements. A cached answer runs none. Without Redis
it is built from the database every time and says what it could not read.

Key figures and series are those of requests (API calls and page loads, from the site-wide rows);
`by_type` gives the same figures for each kind of operation, jobs included.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import frappe
import redis

from verenigingen_perf.utils.performance import health, job_reports, monitoring, rollup
from verenigingen_perf.utils.performance.alerts import rules as alert_rules
from verenigingen_perf.utils.performance.config import PerformanceConfig
from verenigingen_perf.utils.performance.detection import reports as detection
from verenigingen_perf.utils.performance.redis_store import key, redis_client
from verenigingen_perf.utils.performance.schema import (
	ALERT,
	ALL_OPERATIONS,
	JOB,
	OPERATION_TYPES,
	REQUEST_TYPES,
)
from verenigingen_perf.utils.performance.timeutil import epoch_text, floor_day, floor_hour, format_datetime

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
	try:
		cached = redis_client().get(key(CACHE_KEY)) if ttl else None
	except redis.exceptions.RedisError:
		cached = None
	if cached is not None:
		return {**json.loads(cached), "cached": True}
	data = build_dashboard(config)
	if ttl:
		try:
			redis_client().set(key(CACHE_KEY), json.dumps(data, default=str), ex=ttl)
		except redis.exceptions.RedisError:
			pass
	return {**data, "cached": False}


def clear_dashboard_cache() -> None:
	try:
		redis_client().delete(key(CACHE_KEY))
	except redis.exceptions.RedisError:
		pass


def build_dashboard(config: PerformanceConfig, now: datetime | None = None) -> dict[str, Any]:
	"""Every figure merges each aggregate row once: site-wide rows into periods, periods into
	windows, the rows of each operation into that operation's figures."""
	now = now or frappe.utils.now_datetime()
	current_hour, today = floor_hour(now), floor_day(now)
	reports = job_reports.read()
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
	report, slowest_in_window = health.health_from_rows(hourly, config, now, reports)

	site_wide = {"hour": [r for r in hourly if r["operation"] == ALL_OPERATIONS], "day": daily}
	day_start = current_hour - timedelta(hours=HOURLY_SERIES_HOURS - 1)
	last_day = [r for r in hourly if r["period_start"] >= day_start and r["operation"] != ALL_OPERATIONS]
	per_operation = health.figures_by(last_day, "operation")

	# the aggregates reach the rollup's watermark: a rate is over the time they cover, not up to now
	watermark = rollup.get_watermark()
	covered_until = min(now, watermark) if watermark else now
	windows = {}
	for name, length, granularity in WINDOWS:
		# whole periods: the complete ones the window spans, and the current one so far
		start = (current_hour if granularity == "hour" else today) - length
		rows = [r for r in site_wide[granularity] if r["period_start"] >= start]
		by_type = health.figures_by(rows, "operation_type")
		requests = health.PeriodFigures()
		for operation_type in REQUEST_TYPES:
			requests.merge(by_type.get(operation_type) or health.PeriodFigures())
		seconds = (covered_until - start).total_seconds()
		windows[name] = {
			**requests.key_figures(seconds),
			"since": format_datetime(start),
			"by_type": {
				t: (by_type.get(t) or health.PeriodFigures()).key_figures(seconds) for t in OPERATION_TYPES
			},
		}

	return {
		"health": health.with_trust(
			{**report.as_dict(), "slowest_operations": slowest_in_window}, monitoring.summary(config, reports)
		),
		"windows": windows,
		"slowest_operations_24h": health.slowest(
			per_operation, config.analysis.slowest_operations, health.operation_types(last_day)
		),
		"hourly_series": _series(site_wide["hour"], current_hour, timedelta(hours=1), HOURLY_SERIES_HOURS),
		"daily_series": _series(site_wide["day"], today, timedelta(days=1), DAILY_SERIES_DAYS),
		"storage": storage_figures(reports),
		"freshness": health.freshness(reports, watermark),
		"detection": detection.summary(config, now, config.analysis.slowest_operations),
		"alerts": alert_counts(),
		"environment": config.environment,
		"generated_at": format_datetime(now),
		"cache_ttl_s": config.monitoring.dashboard_cache_ttl_s,
		"refresh_s": config.desk.refresh_s,
	}


ACTIVE_ALERT_STATES = (alert_rules.PENDING, alert_rules.FIRING)


def alert_counts() -> dict[str, int]:
	"""Alerts not resolved, by state; silenced ones counted apart (one statement)."""
	rows = frappe.db.sql(
		f"""select state, silenced, count(*) from `tab{ALERT}`
		where state in ({", ".join(["%s"] * len(ACTIVE_ALERT_STATES))}) group by state, silenced""",
		ACTIVE_ALERT_STATES,
	)
	counts = {state: 0 for state in ACTIVE_ALERT_STATES} | {"silenced": 0}
	for state, silenced, count in rows:
		counts["silenced" if int(silenced or 0) else state] += int(count)
	return counts


def _series(rows: list[dict[str, Any]], last: datetime, step: timedelta, points: int) -> list[dict[str, Any]]:
	"""One point per period, oldest first: the requests' count, errors and percentiles (none for a
	period without requests) and how many jobs ran."""
	requests = health.figures_by((r for r in rows if r["operation_type"] in REQUEST_TYPES), "period_start")
	jobs = health.figures_by((r for r in rows if r["operation_type"] == JOB), "period_start")
	series = []
	for i in range(points - 1, -1, -1):
		start = last - step * i
		figures = requests.get(start) or health.PeriodFigures()
		p50, p95 = figures.quantiles((0.5, 0.95))
		series.append(
			{
				"period_start": format_datetime(start),
				"count": figures.count,
				"errors": figures.error_count,
				"client_errors": figures.client_error_count,
				"p50_ms": p50,
				"p95_ms": p95,
				"jobs": (jobs.get(start) or health.PeriodFigures()).count,
			}
		)
	return series


def storage_figures(reports: job_reports.Reports) -> dict[str, Any]:
	"""Table sizes as the retention job last measured them (measuring a big table takes seconds)."""
	report = reports.by_job.get("retention") or {}
	if not report.get("storage"):
		return {"measured_at": None, "tables": [], "note": "not measured yet: the retention job measures it"}
	return {"measured_at": epoch_text(report.get("finished_at")), "tables": report["storage"]}
