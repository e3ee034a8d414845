"""Anomaly detection of one hour: each operation's count, error rate and p95 against the same hour of
the week in the last `anomaly_weeks` weeks (or the last `anomaly_recent_hours` hours while fewer than
`anomaly_min_history` of those weeks have data). Operations with traffic in that history but none
this hour are judged too (a drop to zero). Records are named after (operation type, operation,
metric, hour), so re-evaluating an hour never records it twice.
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
from verenigingen_perf.utils.performance.schema import AGGREGATE, ANOMALY
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


def evaluate_hour(hour: datetime, config: DetectionConfig) -> AnomalyCounts:
	counts = AnomalyCounts()
	weeks = [hour - WEEK * w for w in range(1, config.anomaly_weeks + 1)]
	current = {
		(r["operation_type"], r["operation"]): _hour_figures(r) for r in _rows([hour], with_sketch=True)
	}
	same_hour: dict[tuple[str, str], dict[datetime, rules.HourFigures]] = defaultdict(dict)
	for row in _rows(weeks):
		same_hour[(row["operation_type"], row["operation"])][as_datetime(row["period_start"])] = _plain(row)
	recent: dict[tuple[str, str], dict[datetime, rules.HourFigures]] | None = None
	now = frappe.utils.now_datetime()
	found: list[dict[str, Any]] = []
	for key in current.keys() | same_hour.keys():
		by_week = same_hour.get(key, {})
		if len(by_week) >= config.anomaly_min_history:
			# a week without a row for this hour had no traffic in it: a count of 0, not a gap
			history, kind = [by_week.get(week, _NO_TRAFFIC) for week in weeks], SAME_HOUR
		else:
			if recent is None:
				recent = _recent(hour, config)
			by_hour = recent.get(key, {})
			history = [
				by_hour.get(hour - HOUR * h, _NO_TRAFFIC) for h in range(1, config.anomaly_recent_hours + 1)
			]
			kind = RECENT
		if not any(h.count for h in history) and key not in current:
			continue
		counts.operations_evaluated += 1
		figures = current.get(key, _NO_TRAFFIC)
		for finding in rules.anomalies(figures, history, config):
			found.append(_record(hour, key, finding, figures, kind, len(history), now))
	_insert_new(found)
	counts.recorded = len(found)
	return counts


def _plain(row: dict[str, Any]) -> rules.HourFigures:
	return rules.HourFigures(int(row["count"] or 0), int(row["error_count"] or 0), float(row["p95_ms"] or 0))


def _recent(
	hour: datetime, config: DetectionConfig
) -> dict[tuple[str, str], dict[datetime, rules.HourFigures]]:
	starts = [hour - HOUR * h for h in range(1, config.anomaly_recent_hours + 1)]
	by_key: dict[tuple[str, str], dict[datetime, rules.HourFigures]] = defaultdict(dict)
	for row in _rows(starts):
		by_key[(row["operation_type"], row["operation"])][as_datetime(row["period_start"])] = _plain(row)
	return by_key


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
