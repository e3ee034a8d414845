"""What alert rules watch, read once per evaluation pass for all rules (so a pass's statements do not
grow with the number of rules): the health report, the monitor's last sample, the detail rows of the
last minutes, open regressions, recent anomalies and the latest database health snapshot. Each rule
then picks its observations."""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance import health, monitoring
from verenigingen_perf.utils.performance.alerts.rules import Observation, Rule, matches
from verenigingen_perf.utils.performance.config import PerformanceConfig
from verenigingen_perf.utils.performance.database import recommend, snapshot
from verenigingen_perf.utils.performance.schema import (
	ACKNOWLEDGED,
	ALL_OPERATIONS,
	ANOMALY,
	METRIC,
	OPEN,
	REGRESSION,
	REQUEST_TYPES,
)
from verenigingen_perf.utils.performance.timeutil import as_datetime, format_datetime

HOUR = timedelta(hours=1)


@dataclass
class Readings:
	"""Everything the enabled rules need, read once."""

	health: dict[str, Any] | None = None
	monitor: dict[str, Any] | None = None
	# per operation: durations, server errors, statements, over the longest window any rule asks for
	detail: dict[str, list[tuple[datetime, float, bool, int]]] = field(default_factory=dict)
	# hourly aggregate rows (windows longer than DETAIL_WINDOW_MINUTES), over the longest such window
	hourly: list[dict[str, Any]] = field(default_factory=list)
	regressions: list[dict[str, Any]] = field(default_factory=list)
	anomalies: list[dict[str, Any]] = field(default_factory=list)
	# the latest database health snapshot's figures (database_figures), None without a snapshot
	database: dict[str, tuple[float | None, str | None]] | None = None
	# the sources that could not be read this pass, with their errors (their rules are skipped)
	failed: dict[str, BaseException] = field(default_factory=dict)


def read(rules: list[Rule], config: PerformanceConfig, now: datetime) -> Readings:
	"""What the rules need, each source read on its own: one that fails (a stored snapshot that cannot
	be read, say) is named in `failed` with its error, and the rules of the other sources go on."""
	needed = {rule.source for rule in rules}
	readings = Readings()
	operation_windows = [r.window_minutes for r in rules if r.source == "operation"]
	readers = {
		"health": lambda: _read_health(readings, config, now),
		"monitor": lambda: _read_monitor(readings),
		"operation": lambda: _read_operations(readings, operation_windows, now),
		"regressions": lambda: _read_regressions(readings),
		"anomalies": lambda: _read_anomalies(readings, now),
		"database": lambda: _read_database(readings, config),
	}
	for source, reader in readers.items():
		if source not in needed:
			continue
		try:
			reader()
		except Exception as error:
			readings.failed[source] = error
	return readings


def _read_health(readings: Readings, config: PerformanceConfig, now: datetime) -> None:

	readings.health = health.system_health(config, now)


def _read_monitor(readings: Readings) -> None:

	readings.monitor = monitoring.latest()


def _read_operations(readings: Readings, windows: list[int], now: datetime) -> None:
	short = [w for w in windows if w <= DETAIL_WINDOW_MINUTES]
	long = [w for w in windows if w > DETAIL_WINDOW_MINUTES]
	if short:
		readings.detail = _detail_rows(now - timedelta(minutes=max(short)))
	if long:
		readings.hourly = health.read_aggregates("hour", _hours_start(now, max(long)))


def _read_regressions(readings: Readings) -> None:
	readings.regressions = frappe.get_all(
		REGRESSION,
		filters={"status": ("in", [OPEN, ACKNOWLEDGED])},
		fields=["name", "operation", "metric", "change_value"],
	)


def _read_anomalies(readings: Readings, now: datetime) -> None:
	readings.anomalies = frappe.get_all(
		ANOMALY,
		filters={"period_start": (">=", now - 2 * HOUR)},
		fields=["operation", "metric", "period_start", "score"],
	)


def _read_database(readings: Readings, config: PerformanceConfig) -> None:

	latest = snapshot.latest()
	readings.database = database_figures(latest, config) if latest else None


def database_figures(
	data: dict[str, Any], config: PerformanceConfig
) -> dict[str, tuple[float | None, str | None]]:
	"""What a database rule may watch in one snapshot: each figure with its level, when it has one."""

	connections = data.get("connections") or {}
	ratio = (data.get("cache") or {}).get("ratio")
	kinds = [r["kind"] for r in data.get("recommendations") or []]
	used = None
	if connections.get("max_connections"):
		used = (connections.get("connected") or 0) / connections["max_connections"]
	return {
		"cache_hit_ratio": (ratio, recommend.cache_level(ratio, config.database)),
		"connections_used_ratio": (used, None),
		"long_running": (len(data.get("long_running") or []), None),
		"recommendations": (len(kinds), None),
		"missing_indexes": (kinds.count("missing_index"), None),
		"unused_indexes": (kinds.count("unused_index"), None),
		"fragmented_tables": (kinds.count("fragmentation"), None),
		"total_mb": (sum(t.get("total_bytes") or 0 for t in data.get("tables") or []) / 2**20, None),
	}


# operation rules up to this window read the detail rows ("now"); longer ones the complete hourly
# aggregates of the window's hours (the last complete hour is the rollup's, so they lag up to an hour)
DETAIL_WINDOW_MINUTES = 60


def _hours_start(now: datetime, window_minutes: int) -> datetime:
	"""The first complete hour of a window of whole hours that ends with the last complete hour."""
	return now.replace(minute=0, second=0, microsecond=0) - HOUR * math.ceil(window_minutes / 60)


# a bound on one pass's work whatever the traffic (a flood of requests must not make the minute's
# evaluation grow without end): the most recent measurements of the window, at most this many
MAX_DETAIL_ROWS = 200_000


def _detail_rows(since: datetime) -> dict[str, list[tuple[datetime, float, bool, int]]]:
	by_operation: dict[str, list[tuple[datetime, float, bool, int]]] = defaultdict(list)
	for created, operation, duration, status, statements in frappe.db.sql(
		f"""select creation, operation, duration_ms, status, query_count from `tab{METRIC}`
		where creation >= %s order by creation desc limit %s""",
		(format_datetime(since), MAX_DETAIL_ROWS),
	):
		by_operation[operation].append(
			(as_datetime(created), float(duration or 0), status == "error", int(statements or 0))
		)
	return by_operation


def observations(rule: Rule, readings: Readings, now: datetime) -> list[Observation]:
	if rule.source == "health":
		return _health(rule, readings.health or {})
	if rule.source == "monitor":
		return _monitor(rule, readings.monitor or {})
	if rule.source == "operation" and rule.window_minutes > DETAIL_WINDOW_MINUTES:
		return _aggregated_operations(rule, readings.hourly, now)
	if rule.source == "operation":
		return _operations(rule, readings.detail, now)
	if rule.source == "regressions":
		return _records(rule, readings.regressions, "change_value", ("operation", "metric"))
	if rule.source == "database":
		if readings.database is None or readings.database[rule.metric][0] is None:
			return []
		value, level = readings.database[rule.metric]
		return [Observation(rule.metric, value, level)]
	return _records(rule, readings.anomalies, "score", ("operation", "metric", "period_start"))


def _records(
	rule: Rule, rows: list[dict[str, Any]], value: str, identity: tuple[str, ...]
) -> list[Observation]:
	"""One observation per regression or anomaly record of the rule's operation and metric."""
	return [
		Observation(
			" ".join(str(row[key]) for key in identity),
			float(row[value] or 0),
			labels=(("metric", row["metric"]), ("operation", row["operation"])),
		)
		for row in rows
		if matches(rule.operation, row["operation"]) and (not rule.metric or rule.metric == row["metric"])
	]


def _health(rule: Rule, report: dict[str, Any]) -> list[Observation]:
	if rule.metric == "score":
		return [Observation("score", report.get("score"), report.get("level"))]
	return [
		Observation(c["name"], c["value"], c["level"])
		for c in report.get("components", [])
		if fnmatch.fnmatchcase(c["name"], rule.metric)
	]


def _monitor(rule: Rule, sample: dict[str, Any]) -> list[Observation]:
	return [
		Observation(s["name"], s.get("value"), s.get("level"))
		for s in sample.get("signals", [])
		if fnmatch.fnmatchcase(s["name"], rule.metric)
	]


def _operations(
	rule: Rule, detail: dict[str, list[tuple[datetime, float, bool, int]]], now: datetime
) -> list[Observation]:
	since = now - timedelta(minutes=rule.window_minutes)
	if not rule.operation:
		rows = [row for rows in detail.values() for row in rows if row[0] >= since]
		return [Observation(ALL_OPERATIONS, _figure(rule.metric, rows))] if rows else []
	out = []
	for operation, rows in detail.items():
		if matches(rule.operation, operation):
			recent = [row for row in rows if row[0] >= since]
			if recent:
				out.append(
					Observation(operation, _figure(rule.metric, recent), labels=(("operation", operation),))
				)
	return out


def _aggregated_operations(rule: Rule, hourly: list[dict[str, Any]], now: datetime) -> list[Observation]:
	"""An operation rule over hours: its figure from the merged hourly aggregates (sketches merged,
	never averaged); without `operation`, from the site-wide rows of the request types."""

	start = _hours_start(now, rule.window_minutes)
	rows = [r for r in hourly if start <= r["period_start"] < now.replace(minute=0, second=0, microsecond=0)]
	if not rule.operation:
		site = health.PeriodFigures()
		for row in rows:
			if row["operation"] == ALL_OPERATIONS and row["operation_type"] in REQUEST_TYPES:
				site.add(row)
		return [Observation(ALL_OPERATIONS, _aggregate_figure(rule.metric, site))] if site.count else []
	by_operation = health.figures_by(
		(r for r in rows if r["operation"] != ALL_OPERATIONS and matches(rule.operation, r["operation"])),
		"operation",
	)
	return [
		Observation(operation, _aggregate_figure(rule.metric, figures), labels=(("operation", operation),))
		for operation, figures in by_operation.items()
		if figures.count
	]


def _aggregate_figure(metric: str, figures: Any) -> float:
	if metric == "count":
		return float(figures.count)
	if metric == "error_rate":
		return figures.error_count / figures.count
	if metric == "statements_per_call":
		return figures.query_sum / figures.count
	quantile = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}[metric]
	return float(figures.quantiles((quantile,))[0])


def _figure(metric: str, rows: list[tuple[datetime, float, bool, int]]) -> float:
	count = len(rows)
	if metric == "count":
		return float(count)
	if metric == "error_rate":
		return sum(1 for row in rows if row[2]) / count
	if metric == "statements_per_call":
		return sum(row[3] for row in rows) / count
	quantile = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}[metric]
	ordered = sorted(row[1] for row in rows)
	# nearest rank, as the batch analysis reports its p95
	return ordered[max(0, math.ceil(quantile * count) - 1)]
