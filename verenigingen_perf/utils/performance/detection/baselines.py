"""Baselines: an operation's hourly aggregates of a period merged into reference figures.

Rolling baselines (one per operation) cover the `baseline_window_days` days that end
`regression_window_hours` before the start of the day being evaluated, so they never include the
hours under evaluation; the detection job recomputes them once a day. Pinned baselines are frozen
copies, computed the same way over the days before the moment they are pinned, under a name.
An operation with fewer than `baseline_min_samples` measurements gets a row that says
"insufficient data" and carries no figure.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance.config import DetectionConfig
from verenigingen_perf.utils.performance.detection import anomalies, rules, statistics
from verenigingen_perf.utils.performance.schema import AGGREGATE, BASELINE, PINNED, ROLLING
from verenigingen_perf.utils.performance.sketch import QUANTILES, Summary
from verenigingen_perf.utils.performance.timeutil import as_datetime, floor_day, floor_hour

OperationKey = tuple[str, str]  # (operation type, operation)
OK, INSUFFICIENT = "ok", "insufficient data"
# the aggregate columns a baseline or a window is merged from
SUMMARY_COLUMNS = (
	"operation",
	"operation_type",
	"period_start",
	"count",
	"error_count",
	"client_error_count",
	"duration_min_ms",
	"duration_max_ms",
	"duration_sum_ms",
	"query_sum",
	"query_max",
	"db_time_sum_ms",
	"memory_max_mb",
	"sketch",
)
# hourly rows are read a day at a time, so that a baseline's memory is its merged bins, not its rows
_READ_HOURS = 24


def add_row(summary: Summary, row: dict[str, Any]) -> None:
	"""Merge an hourly row into `summary`, the sketch bin by bin (no Summary per row: a baseline
	merges thousands)."""
	summary.count += int(row["count"] or 0)
	summary.error_count += int(row["error_count"] or 0)
	summary.client_error_count += int(row.get("client_error_count") or 0)
	summary.duration_min_ms = min(summary.duration_min_ms, float(row["duration_min_ms"] or 0))
	summary.duration_max_ms = max(summary.duration_max_ms, float(row["duration_max_ms"] or 0))
	summary.duration_sum_ms += float(row["duration_sum_ms"] or 0)
	summary.query_sum += int(row["query_sum"] or 0)
	summary.query_max = max(summary.query_max, int(row["query_max"] or 0))
	summary.memory_max_mb = max(summary.memory_max_mb, float(row["memory_max_mb"] or 0))
	summary.bins.add(row["sketch"] or None)


@dataclass
class DaySlots:
	"""Each duration quantile's log and sampling variance in every slot of `regression_window_hours` hours of every
	day, for how much they vary from day to day beyond sampling. Rows must come in time order (one
	slot is merged at a time)."""

	config: DetectionConfig
	current: tuple[datetime, int] | None = None
	summary: Summary = field(default_factory=Summary)
	# slot of the day -> quantile -> ([log], [sampling variance]), one of each per day
	found: dict[int, dict[float, tuple[list[float], list[float]]]] = field(default_factory=dict)

	def add(self, row: dict[str, Any]) -> None:
		at = as_datetime(row["period_start"])
		slot = (floor_day(at), at.hour // self.config.regression_window_hours)
		if slot != self.current:
			self.close()
			self.current, self.summary = slot, Summary()
		add_row(self.summary, row)

	def close(self) -> None:
		if self.current is None:
			return
		by_quantile = self.found.setdefault(self.current[1], {})
		for q in QUANTILES_JUDGED:
			if found := rules.log_quantile(self.summary, q, self.config):
				logs, variances = by_quantile.setdefault(q, ([], []))
				logs.append(found[0])
				variances.append(found[1])
		self.current = None

	def spreads(self) -> dict[float, float]:
		self.close()
		return {
			q: math.sqrt(
				statistics.pooled_excess_variance([slot[q] for slot in self.found.values() if q in slot])
			)
			for q in QUANTILES_JUDGED
		}


# the duration quantiles the regression detector judges
QUANTILES_JUDGED = tuple(QUANTILES[column] for column in rules.DURATION_METRICS.values())


@dataclass
class Accumulator:
	"""An operation's hourly rows merged: the summary, each hour's statements, errors and calls for
	their spread, and (when given `slots`) the duration quantiles' day-to-day spread."""

	summary: Summary = field(default_factory=Summary)
	hourly_statements: list[int] = field(default_factory=list)
	hourly_errors: list[int] = field(default_factory=list)
	hourly_calls: list[int] = field(default_factory=list)
	slots: DaySlots | None = None

	def add(self, row: dict[str, Any]) -> None:
		count = int(row["count"] or 0)
		if not count:
			return
		add_row(self.summary, row)
		if self.slots is not None:
			self.slots.add(row)
		self.hourly_statements.append(int(row["query_sum"] or 0))
		self.hourly_errors.append(int(row["error_count"] or 0))
		self.hourly_calls.append(count)

	def baseline(self) -> rules.Baseline:
		return rules.Baseline(
			self.summary,
			statistics.mean_spread(self.hourly_statements, self.hourly_calls),
			statistics.mean_spread(self.hourly_errors, self.hourly_calls),
		)


def hourly_rows(start: datetime, end: datetime, operations: list[str] | None = None) -> list[dict[str, Any]]:
	"""Hourly aggregate rows with period_start in [start, end), optionally of some operations only."""
	filters: list[list[Any]] = [
		["granularity", "=", "hour"],
		["period_start", ">=", start],
		["period_start", "<", end],
	]
	if operations is not None:
		filters.append(["operation", "in", operations])
	return frappe.get_all(AGGREGATE, filters=filters, fields=list(SUMMARY_COLUMNS), order_by="period_start")


def hourly_rows_at(starts: list[datetime]) -> list[dict[str, Any]]:
	"""The hourly aggregate rows of the hours starting at `starts`, every operation's."""
	if not starts:
		return []
	return frappe.get_all(
		AGGREGATE,
		filters={"granularity": "hour", "period_start": ["in", starts]},
		fields=list(SUMMARY_COLUMNS),
	)


def merge_period(
	start: datetime, end: datetime, operations: list[str] | None = None, config: DetectionConfig | None = None
) -> dict[OperationKey, Accumulator]:
	"""Each operation's rows of [start, end) merged; with `config`, also the day-to-day spread of
	its duration quantiles (what a stored baseline keeps)."""
	merged: dict[OperationKey, Accumulator] = defaultdict(
		(lambda: Accumulator(slots=DaySlots(config))) if config else Accumulator
	)
	chunk = timedelta(hours=_READ_HOURS)
	at = start
	while at < end:
		for row in hourly_rows(at, min(at + chunk, end), operations):
			merged[(row["operation_type"], row["operation"])].add(row)
		at += chunk
	return merged


def rolling_period(hour: datetime, config: DetectionConfig) -> tuple[datetime, datetime]:
	"""The period of the rolling baseline that judges `hour`'s window."""
	end = floor_day(hour) - timedelta(hours=config.regression_window_hours)
	return end - timedelta(days=config.baseline_window_days), end


def baseline_name(kind: str, pin: str, operation_type: str, operation: str) -> str:
	digest = hashlib.sha1("\x1f".join((kind, pin, operation_type, operation)).encode()).hexdigest()
	return f"{kind[:3]}-{digest[:24]}"


def baseline_row(
	kind: str,
	pin: str,
	key: OperationKey,
	accumulator: Accumulator,
	start: datetime,
	end: datetime,
	config: DetectionConfig,
	now: datetime,
	dispersion: rules.Dispersion | None = None,
) -> dict[str, Any]:
	operation_type, operation = key
	summary = accumulator.summary
	dispersion = dispersion or rules.Dispersion()
	row: dict[str, Any] = {
		"name": baseline_name(kind, pin, operation_type, operation),
		"operation": operation,
		"operation_type": operation_type,
		"baseline_kind": kind,
		"pin_name": pin or None,
		"period_start": start,
		"period_end": end,
		"computed_at": now,
		"sample_count": summary.count,
		"hours_with_data": len(accumulator.hourly_calls),
		**{
			column: value
			for metric, columns in anomalies.DISPERSION_COLUMNS.items()
			for column, value in zip(
				columns, (dispersion.of(metric).base, dispersion.of(metric).per_level), strict=True
			)
		},
	}
	if summary.count < config.baseline_min_samples:
		return {**row, "status": INSUFFICIENT}
	spread = statistics.mean_spread(accumulator.hourly_statements, accumulator.hourly_calls)
	# errors that come in bursts scatter more from hour to hour than a binomial rate would
	errors = statistics.mean_spread(accumulator.hourly_errors, accumulator.hourly_calls)
	p50, p95, p99 = summary.quantiles((0.50, 0.95, 0.99))
	return {
		**row,
		"status": OK,
		"error_count": summary.error_count,
		"error_rate": summary.error_count / summary.count,
		"p50_ms": p50,
		"p95_ms": p95,
		"p99_ms": p99,
		"statements_mean": spread.mean,
		"statements_sd": spread.per_call_sd,
		"error_rate_sd": errors.per_call_sd,
		**_day_spread_values(accumulator),
		"memory_max_mb": summary.memory_max_mb,
		"sketch": summary.bins.dumps(),
	}


def _day_spread_values(accumulator: Accumulator) -> dict[str, float]:
	spreads = accumulator.slots.spreads() if accumulator.slots else {}
	return {column: spreads.get(q, 0.0) for column, q in DAY_SPREAD_COLUMNS.items()}


# the stored day-to-day spread of each judged quantile's log
DAY_SPREAD_COLUMNS = {"p50_day_spread": 0.5, "p95_day_spread": 0.95, "p99_day_spread": 0.99}
# the figures of a baseline, none of which an "insufficient data" baseline has
FIGURE_COLUMNS = (
	"error_count",
	"error_rate",
	"p50_ms",
	"p95_ms",
	"p99_ms",
	"statements_mean",
	"statements_sd",
	"error_rate_sd",
	*DAY_SPREAD_COLUMNS,
	"memory_max_mb",
)
# what describes a baseline (the answers give these and its figures), then what is stored besides
DESCRIPTION_COLUMNS = (
	"operation",
	"operation_type",
	"baseline_kind",
	"pin_name",
	"status",
	"period_start",
	"period_end",
	"computed_at",
	"sample_count",
	"hours_with_data",
)
# what the anomaly detector reads of a rolling baseline (every row has them, "insufficient data" too)
DISPERSION_COLUMNS = tuple(column for pair in anomalies.DISPERSION_COLUMNS.values() for column in pair)
_STORED_COLUMNS = ("name", *DESCRIPTION_COLUMNS, *FIGURE_COLUMNS, *DISPERSION_COLUMNS, "sketch")


def store(rows: list[dict[str, Any]]) -> None:
	"""Insert baseline rows (their names must be free). An "insufficient data" row's figures are
	stored as the columns' default (0: Frappe's number columns are never NULL) and never answered."""
	now = frappe.utils.now_datetime()
	user = frappe.session.user
	columns = (*_STORED_COLUMNS, "creation", "modified", "owner", "modified_by")
	values = [
		(
			*tuple(row.get(c, 0 if c in FIGURE_COLUMNS else None) for c in _STORED_COLUMNS),
			now,
			now,
			user,
			user,
		)
		for row in rows
	]
	if values:
		frappe.db.bulk_insert(BASELINE, columns, values)


def rolling_computed_for() -> datetime | None:
	"""The end of the period the stored rolling baselines cover (None: none stored)."""
	value = frappe.db.get_value(BASELINE, {"baseline_kind": ROLLING}, "period_end")
	return as_datetime(value) if value else None


def refresh_rolling(hour: datetime, config: DetectionConfig) -> bool:
	"""Recompute the rolling baselines if the stored ones do not cover `hour`'s period; True if
	they were recomputed."""
	start, end = rolling_period(hour, config)
	if rolling_computed_for() == end:
		return False
	merged = merge_period(start, end, config=config)
	previous = anomalies.stored_dispersions()
	dispersions = {
		key: today.averaged(previous.get(key), config.baseline_window_days)
		for key, today in anomalies.dispersions(floor_day(hour), config).items()
	}
	now = frappe.utils.now_datetime()
	rows = [
		baseline_row(ROLLING, "", key, acc, start, end, config, now, dispersions.get(key))
		for key, acc in merged.items()
	]
	frappe.db.delete(BASELINE, {"baseline_kind": ROLLING})
	store(rows)
	return True


def pin(name: str, operations: list[str] | None, config: DetectionConfig, now: datetime) -> dict[str, Any]:
	"""Freeze the baselines of the `baseline_window_days` days before now (complete hours) under
	`name`, for every operation or the listed ones."""
	end = floor_hour(now)
	start = end - timedelta(days=config.baseline_window_days)
	merged = merge_period(start, end, operations, config)
	rows = [baseline_row(PINNED, name, key, acc, start, end, config, now) for key, acc in merged.items()]
	store(rows)
	return {
		"name": name,
		"period_start": start,
		"period_end": end,
		"operations": len(rows),
		"insufficient_data": sorted(r["operation"] for r in rows if r["status"] == INSUFFICIENT),
	}


def pin_exists(name: str) -> bool:
	return bool(frappe.db.exists(BASELINE, {"baseline_kind": PINNED, "pin_name": name}))


@dataclass(frozen=True)
class StoredBaseline:
	"""A stored baseline as the detectors use it; `period` is what a regression record names as its
	reference (the same hours of day within it, where those were compared with)."""

	kind: str
	pin: str | None
	period: tuple[datetime, datetime]
	baseline: rules.Baseline


def _as_baseline(row: dict[str, Any]) -> StoredBaseline:
	summary = Summary.from_values(
		{
			"count": row["sample_count"],
			"error_count": row["error_count"],
			"duration_min_ms": 0.0,
			"duration_max_ms": 0.0,
			"duration_sum_ms": 0.0,
			"query_sum": round(float(row["statements_mean"] or 0) * int(row["sample_count"] or 0)),
			"query_max": 0,
			"db_time_sum_ms": 0.0,
			"memory_max_mb": row["memory_max_mb"],
			"sketch": row["sketch"],
		}
	)
	# the extremes are not stored: the sketch's own range bounds the percentiles instead
	summary.duration_min_ms, summary.duration_max_ms = 0.0, float("inf")
	samples = int(row["sample_count"] or 0)
	spread = statistics.MeanSpread(
		float(row["statements_mean"] or 0), samples, float(row["statements_sd"] or 0)
	)
	# a row stored before the errors' spread was kept holds 0: the exact test alone decides
	errors = statistics.MeanSpread(float(row["error_rate"] or 0), samples, float(row["error_rate_sd"] or 0))
	return StoredBaseline(
		kind=row["baseline_kind"],
		pin=row["pin_name"],
		period=(as_datetime(row["period_start"]), as_datetime(row["period_end"])),
		baseline=rules.Baseline(
			summary,
			spread,
			errors,
			{q: float(row[column] or 0) for column, q in DAY_SPREAD_COLUMNS.items()},
		),
	)


def read(use_pinned: bool) -> dict[OperationKey, StoredBaseline]:
	"""The baselines the regression check compares with: rolling, or (when asked) each operation's
	latest pinned baseline, falling back to its rolling one."""
	fields = [*_STORED_COLUMNS]
	rows = frappe.get_all(BASELINE, filters={"baseline_kind": ROLLING, "status": OK}, fields=fields)
	chosen = {(r["operation_type"], r["operation"]): _as_baseline(r) for r in rows}
	if use_pinned:
		pinned = frappe.get_all(
			BASELINE,
			filters={"baseline_kind": PINNED, "status": OK},
			fields=fields,
			order_by="computed_at asc",
		)
		for r in pinned:
			chosen[(r["operation_type"], r["operation"])] = _as_baseline(r)
	return chosen
