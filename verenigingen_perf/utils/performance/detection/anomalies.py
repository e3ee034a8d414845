"""Anomaly detection of one hour: each operation's count, error rate and p95 against the same hour of
the week in the last `anomaly_weeks` weeks (or the last `anomaly_recent_hours` hours while fewer than
`anomaly_min_history` of those weeks have data). Operations with traffic in that history but none
this hour are judged too (a drop to zero). Each metric's noise floor is scaled by the dispersion the
operation showed the day before (`dispersions`, kept in its rolling baseline): real counts vary
several times more than Poisson counts, and a batch operation's come in bursts. Records are named
after (operation type, operation, metric, hour), so re-evaluating an hour never records it twice.

An anomaly of the change an open regression already reports (p95 while a duration regression of
the operation is open, the error rate while its error-rate regression is) is folded into that
regression (`folded_anomalies`) instead of being recorded again every hour it lasts.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance.config import DetectionConfig
from verenigingen_perf.utils.performance.detection import rules, statistics
from verenigingen_perf.utils.performance.schema import (
	ACKNOWLEDGED,
	AGGREGATE,
	ANOMALY,
	BASELINE,
	OPEN,
	REGRESSION,
	ROLLING,
)
from verenigingen_perf.utils.performance.sketch import QUANTILES, Summary
from verenigingen_perf.utils.performance.timeutil import as_datetime

HOUR = timedelta(hours=1)
WEEK = timedelta(days=7)
SAME_HOUR, RECENT = "same hour of the week", "recent hours"
_COLUMNS = ("operation", "operation_type", "period_start", "count", "error_count", "p95_ms")
_NO_TRAFFIC = rules.HourFigures(0, 0, 0.0)


@dataclass
class AnomalyCounts:
	operations_evaluated: int = 0
	recorded: int = 0
	folded: int = 0


def anomaly_name(operation_type: str, operation: str, metric: str, hour: datetime) -> str:
	text = "\x1f".join((operation_type, operation, metric, hour.isoformat()))
	return "ano-" + hashlib.sha1(text.encode()).hexdigest()[:24]


def _rows(starts: list[datetime], with_sketch: bool = False) -> list[dict[str, Any]]:
	columns = [*_COLUMNS, "duration_min_ms", "duration_max_ms", "sketch"] if with_sketch else list(_COLUMNS)
	return frappe.get_all(
		AGGREGATE,
		filters={"granularity": "hour", "period_start": ["in", starts]},
		fields=columns,
	)


def _hour_figures(row: dict[str, Any]) -> rules.HourFigures:
	count = int(row["count"] or 0)
	noise = statistics.quantile_log_sd(
		Summary.from_values({**row, **_ZERO_SUMS}).bins,
		QUANTILES["p95_ms"],
		count,
		float(row["duration_min_ms"] or 0),
		float(row["duration_max_ms"] or 0),
	)
	return rules.HourFigures(count, int(row["error_count"] or 0), float(row["p95_ms"] or 0), noise)


# Summary.from_values needs these; only the sketch is read here
_ZERO_SUMS = {
	"duration_sum_ms": 0.0,
	"query_sum": 0,
	"query_max": 0,
	"db_time_sum_ms": 0.0,
	"memory_max_mb": 0.0,
}


def dispersions(day_start: datetime, config: DetectionConfig) -> dict[tuple[str, str], rules.Dispersion]:
	"""Each operation's dispersion of each anomaly metric, from the 24 hours before `day_start`: every
	hour is scored against the history the detector would choose for it (`_history`), in units of
	sampling noise alone (`rules.anomaly_deviations`)."""
	hours = [day_start - HOUR * back for back in range(1, 25)]
	current: dict[tuple[str, str], dict[datetime, rules.HourFigures]] = defaultdict(dict)
	for row in _rows(hours, with_sketch=True):
		current[(row["operation_type"], row["operation"])][as_datetime(row["period_start"])] = _hour_figures(
			row
		)
	earlier_hours = {
		start for hour in hours for start in (*_weeks(hour, config), *_recent_hours(hour, config))
	}
	earlier = _plain_by_key(sorted(earlier_hours))
	found = {}
	for key in current.keys() | earlier.keys():
		deviations: dict[str, list[tuple[float, float]]] = defaultdict(list)
		for hour in hours:
			history, _kind = _history(hour, earlier.get(key, {}), config)
			figures = current.get(key, {}).get(hour, _NO_TRAFFIC)
			if not any(h.count for h in history) and not figures.count:
				continue
			for metric, found_at in rules.anomaly_deviations(figures, history, config).items():
				deviations[metric].append(found_at)
		found[key] = rules.Dispersion(
			*(
				statistics.dispersion([d for d, _ in deviations[m]], [level for _, level in deviations[m]])
				for m in rules.ANOMALY_METRICS
			)
		)
	return found


def _weeks(hour: datetime, config: DetectionConfig) -> list[datetime]:
	return [hour - WEEK * week for week in range(1, config.anomaly_weeks + 1)]


def _recent_hours(hour: datetime, config: DetectionConfig) -> list[datetime]:
	return [hour - HOUR * back for back in range(1, config.anomaly_recent_hours + 1)]


def _history(
	hour: datetime, known: dict[datetime, rules.HourFigures], config: DetectionConfig
) -> tuple[list[rules.HourFigures], str]:
	"""The history `hour` is judged against, from an operation's `known` hourly figures: the same
	hour of the week in the last `anomaly_weeks` weeks when at least `anomaly_min_history` of them
	have data (a week without a row for this hour had no traffic in it: a count of 0, not a gap),
	else the last `anomaly_recent_hours` hours."""
	weeks = _weeks(hour, config)
	if sum(week in known for week in weeks) >= config.anomaly_min_history:
		return [known.get(week, _NO_TRAFFIC) for week in weeks], SAME_HOUR
	return [known.get(start, _NO_TRAFFIC) for start in _recent_hours(hour, config)], RECENT


def _plain_by_key(starts: list[datetime]) -> dict[tuple[str, str], dict[datetime, rules.HourFigures]]:
	by_key: dict[tuple[str, str], dict[datetime, rules.HourFigures]] = defaultdict(dict)
	for row in _rows(starts):
		by_key[(row["operation_type"], row["operation"])][as_datetime(row["period_start"])] = _plain(row)
	return by_key


def stored_dispersions() -> dict[tuple[str, str], rules.Dispersion]:
	"""The dispersions kept in the rolling baselines."""
	columns = [column for pair in DISPERSION_COLUMNS.values() for column in pair]
	rows = frappe.get_all(
		BASELINE, filters={"baseline_kind": ROLLING}, fields=["operation_type", "operation", *columns]
	)
	# a row stored before dispersions were kept holds 0: taken as Poisson
	return {
		(r["operation_type"], r["operation"]): rules.Dispersion(
			*(
				statistics.Overdispersion(max(float(r[base] or 0), 1.0), max(float(r[per_level] or 0), 0.0))
				for base, per_level in DISPERSION_COLUMNS.values()
			)
		)
		for r in rows
	}


# where a rolling baseline keeps each anomaly metric's dispersion: (base, per level)
DISPERSION_COLUMNS = {
	rules.COUNT: ("count_dispersion", "count_dispersion_per_level"),
	rules.ERROR_RATE: ("error_dispersion", "error_dispersion_per_level"),
	rules.P95: ("p95_dispersion", "p95_dispersion_per_level"),
}


def _open_regressions() -> dict[tuple[str, str], dict[str, str]]:
	"""The open (or acknowledged) regressions: per operation, metric to record name."""
	found: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
	for r in frappe.get_all(
		REGRESSION,
		filters={"status": ["in", [OPEN, ACKNOWLEDGED]]},
		fields=["name", "operation_type", "operation", "metric"],
	):
		found[(r["operation_type"], r["operation"])][r["metric"]] = r["name"]
	return found


# the regression metrics whose open record reports an anomaly metric's change, the first preferred
FOLDED_INTO = {
	rules.P95: ("duration_p95", "duration_p99", "duration_p50"),
	rules.ERROR_RATE: (rules.ERROR_RATE,),
}


def _folded_into(finding: rules.AnomalyFinding, regressions: dict[str, str]) -> str | None:
	return next((regressions[m] for m in FOLDED_INTO.get(finding.metric, ()) if m in regressions), None)


def evaluate_hour(hour: datetime, config: DetectionConfig) -> AnomalyCounts:
	counts = AnomalyCounts()
	current = {
		(r["operation_type"], r["operation"]): _hour_figures(r) for r in _rows([hour], with_sketch=True)
	}
	known = _plain_by_key(_weeks(hour, config))
	lacking = [
		key
		for key in current.keys() | known.keys()
		if sum(week in known.get(key, {}) for week in _weeks(hour, config)) < config.anomaly_min_history
	]
	if lacking:
		# the recent hours are read only when some operation lacks the weeks
		for key, by_hour in _plain_by_key(_recent_hours(hour, config)).items():
			known[key].update(by_hour)
	now = frappe.utils.now_datetime()
	found: list[dict[str, Any]] = []
	dispersion = stored_dispersions()
	regressions = _open_regressions()
	folded: dict[str, int] = defaultdict(int)
	for key in current.keys() | known.keys():
		history, kind = _history(hour, known.get(key, {}), config)
		if not any(h.count for h in history) and key not in current:
			continue
		counts.operations_evaluated += 1
		figures = current.get(key, _NO_TRAFFIC)
		for finding in rules.anomalies(figures, history, config, dispersion.get(key, rules.Dispersion())):
			if into := _folded_into(finding, regressions.get(key, {})):
				folded[into] += 1
			else:
				found.append(_record(hour, key, finding, figures, kind, len(history), now))
	_insert_new(found)
	_fold(folded)
	counts.recorded = len(found)
	counts.folded = sum(folded.values())
	return counts


def _fold(folded: dict[str, int]) -> None:
	table = frappe.qb.DocType(REGRESSION)
	for name, hours in folded.items():
		(
			frappe.qb.update(table)
			.set(table.folded_anomalies, table.folded_anomalies + hours)
			.where(table.name == name)
		).run()


def _plain(row: dict[str, Any]) -> rules.HourFigures:
	return rules.HourFigures(int(row["count"] or 0), int(row["error_count"] or 0), float(row["p95_ms"] or 0))


def _record(
	hour: datetime,
	key: tuple[str, str],
	finding: rules.AnomalyFinding,
	figures: rules.HourFigures,
	kind: str,
	history_size: int,
	now: datetime,
) -> dict[str, Any]:
	operation_type, operation = key
	return {
		"name": anomaly_name(operation_type, operation, finding.metric, hour),
		"operation": operation,
		"operation_type": operation_type,
		"metric": finding.metric,
		"period_start": hour,
		"direction": finding.direction,
		"value": finding.value,
		"expected": finding.expected,
		"score": max(min(finding.score, 1e12), -1e12),
		"samples": figures.count,
		"history": kind,
		"history_size": history_size,
		"detected_at": now,
	}


def _insert_new(records: list[dict[str, Any]]) -> None:
	"""Insert the records whose names are not stored yet (an hour evaluated again adds nothing)."""
	if not records:
		return
	names = [r["name"] for r in records]
	stored = set(frappe.get_all(ANOMALY, filters={"name": ["in", names]}, pluck="name"))
	fresh = [r for r in records if r["name"] not in stored]
	if not fresh:
		return
	columns = (*fresh[0].keys(), "creation", "modified", "owner", "modified_by")
	now, user = frappe.utils.now_datetime(), frappe.session.user
	frappe.db.bulk_insert(ANOMALY, columns, [(*r.values(), now, now, user, user) for r in fresh])
