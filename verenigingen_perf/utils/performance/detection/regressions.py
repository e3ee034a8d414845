"""Regression detection of one hour: every operation's evaluation window against its baseline, and
the Performance Regression records that follow (opened, updated, resolved).

One open (or acknowledged) record per operation and metric: the record's `open_key` is unique in the
database while it is open, so even two evaluations at once cannot open a second. A record is resolved
once its metric has stayed within the threshold for `regression_resolve_hours` evaluated hours. Its
level (`level_value`) follows the window until the window lies wholly inside the episode; a metric
that then rises above that level by the size rule is a new regression: the record is resolved as
superseded (`superseded_by`) and a new one opened, so a regression that starts under an open record
is not lost.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance import records
from verenigingen_perf.utils.performance.config import DetectionConfig
from verenigingen_perf.utils.performance.detection import baselines, rules
from verenigingen_perf.utils.performance.schema import ACKNOWLEDGED, OPEN, REGRESSION, RESOLVED, ROLLING
from verenigingen_perf.utils.performance.sketch import Summary
from verenigingen_perf.utils.performance.timeutil import as_datetime

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass
class RegressionCounts:
	operations_evaluated: int = 0
	opened: int = 0
	updated: int = 0
	resolved: int = 0
	insufficient: int = 0
	opened_names: list[str] = field(default_factory=list)


def open_key(operation_type: str, operation: str, metric: str) -> str:
	return hashlib.sha1("\x1f".join((operation_type, operation, metric)).encode()).hexdigest()


def windows(hour: datetime, config: DetectionConfig) -> dict[baselines.OperationKey, rules.Window]:
	"""Each operation's window: the `regression_window_hours` hours ending with `hour`."""
	start = hour - HOUR * (config.regression_window_hours - 1)
	merged: dict[baselines.OperationKey, rules.Window] = defaultdict(lambda: rules.Window(Summary(), []))
	for row in baselines.hourly_rows(start, hour + HOUR):
		window = merged[(row["operation_type"], row["operation"])]
		window.summary.merge(Summary.from_values(row))
		window.hours.append(
			rules.HourTotals(int(row["count"] or 0), int(row["query_sum"] or 0), int(row["error_count"] or 0))
		)
	return merged


def same_hours(hour: datetime, config: DetectionConfig) -> dict[baselines.OperationKey, rules.SameHours]:
	"""Each operation's window hours of day on each of the `baseline_window_days` days before
	`hour`'s window (a day without a row of the operation: an empty summary)."""
	days = range(1, config.baseline_window_days + 1)
	day_of = {
		hour - DAY * day - HOUR * back: day for day in days for back in range(config.regression_window_hours)
	}
	merged: dict[baselines.OperationKey, dict[int, baselines.Accumulator]] = defaultdict(
		lambda: {day: baselines.Accumulator() for day in days}
	)
	for row in baselines.hourly_rows_at(list(day_of)):
		merged[(row["operation_type"], row["operation"])][day_of[as_datetime(row["period_start"])]].add(row)
	return {key: rules.SameHours([by_day[day].summary for day in days]) for key, by_day in merged.items()}


def same_hours_period(hour: datetime, config: DetectionConfig) -> tuple[datetime, datetime]:
	"""The span of `same_hours`: from the earliest day's first hour to the latest day's last."""
	first = hour - DAY * config.baseline_window_days - HOUR * (config.regression_window_hours - 1)
	return first, hour - DAY + HOUR


def open_records() -> dict[str, dict[str, Any]]:
	rows = frappe.get_all(
		REGRESSION,
		filters={"status": ["in", [OPEN, ACKNOWLEDGED]]},
		fields=["name", "open_key", "back_within_since", "status", "first_detected", "level_value"],
	)
	return {row["open_key"]: row for row in rows}


def evaluate_hour(hour: datetime, config: DetectionConfig) -> RegressionCounts:
	counts = RegressionCounts()
	stored = baselines.read(config.regression_use_pinned_baseline)
	current = open_records()
	by_hour_of_day = same_hours(hour, config)
	for key, window in windows(hour, config).items():
		reference = stored.get(key)
		if reference is None:
			counts.insufficient += 1
			continue
		# a pinned baseline is a deliberate reference, compared with as it was frozen
		hours = by_hour_of_day.get(key, rules.SameHours([])) if reference.kind == ROLLING else None
		findings = rules.evaluate(reference.baseline, window, config, hours)
		if not findings:
			counts.insufficient += 1
			continue
		counts.operations_evaluated += 1
		if hours and sum(bool(day.count) for day in hours.days) >= config.regression_min_replicates:
			reference = replace(reference, period=same_hours_period(hour, config))
		for finding in findings:
			_apply(hour, key, finding, reference, current.get(open_key(*key, finding.metric)), config, counts)
	return counts


def _apply(
	hour: datetime,
	key: baselines.OperationKey,
	finding: rules.Finding,
	reference: baselines.StoredBaseline,
	record: dict[str, Any] | None,
	config: DetectionConfig,
	counts: RegressionCounts,
) -> None:
	figures = {
		"after_value": finding.after,
		"before_value": finding.before,
		"change_value": finding.change,
		"p_value": finding.p_value,
		"test_statistic": _finite(finding.statistic),
		"baseline_samples": finding.baseline_samples,
		"window_samples": finding.window_samples,
		"baseline_kind": reference.kind,
		"baseline_pin": reference.pin,
		"baseline_period_start": reference.period[0],
		"baseline_period_end": reference.period[1],
	}
	if finding.flagged:
		if record is not None and _settled(record, hour, config):
			if rules.worse_than_level(finding, float(record["level_value"] or 0), config):
				_supersede(hour, key, finding, record, figures, counts)
				return
		if record is None:
			if opened := _open(hour, key, finding.metric, figures):
				counts.opened_names.append(opened)
				counts.opened += 1
		else:
			update = {**figures, "last_confirmed": hour, "back_within_since": None}
			if not _settled(record, hour, config):
				update["level_value"] = finding.after
			frappe.db.set_value(REGRESSION, record["name"], update, update_modified=True)
			counts.updated += 1
		return
	if record is None:
		return
	if not finding.within:
		if record["back_within_since"]:
			frappe.db.set_value(REGRESSION, record["name"], "back_within_since", None)
		return
	since = as_datetime(record["back_within_since"]) if record["back_within_since"] else hour
	if hour + HOUR - since >= HOUR * config.regression_resolve_hours:
		frappe.db.set_value(
			REGRESSION,
			record["name"],
			{**figures, "status": RESOLVED, "resolved_at": hour + HOUR, "open_key": None},
		)
		counts.resolved += 1
	elif not record["back_within_since"]:
		frappe.db.set_value(REGRESSION, record["name"], "back_within_since", since)


def _settled(record: dict[str, Any], hour: datetime, config: DetectionConfig) -> bool:
	"""Whether the record's level is settled: it followed the window up to the hour whose window
	lay wholly after the first detection (a regression found in its first hour fills the window
	only then), and is compared with from the next hour on."""
	first = as_datetime(record["first_detected"]) if record.get("first_detected") else hour
	return hour - first >= HOUR * config.regression_window_hours


def _supersede(
	hour: datetime,
	key: baselines.OperationKey,
	finding: rules.Finding,
	record: dict[str, Any],
	figures: dict[str, Any],
	counts: RegressionCounts,
) -> None:
	"""A new regression under an open record: the record resolves (its key freed first, for the new
	one's), pointing at the record opened in its place."""
	frappe.db.set_value(
		REGRESSION, record["name"], {"status": RESOLVED, "resolved_at": hour, "open_key": None}
	)
	counts.resolved += 1
	if opened := _open(hour, key, finding.metric, figures):
		frappe.db.set_value(REGRESSION, record["name"], "superseded_by", opened)
		counts.opened_names.append(opened)
		counts.opened += 1


def _open(hour: datetime, key: baselines.OperationKey, metric: str, figures: dict[str, Any]) -> str | None:
	operation_type, operation = key
	doc = frappe.get_doc(
		{
			"doctype": REGRESSION,
			"name": frappe.generate_hash(length=20),
			"operation": operation,
			"operation_type": operation_type,
			"metric": metric,
			"status": OPEN,
			"first_detected": hour,
			"last_confirmed": hour,
			"open_key": open_key(operation_type, operation, metric),
			"level_value": figures["after_value"],
			**figures,
		}
	)
	# a plain row insert: the job writes it, no document hooks apply, and the unique open_key is
	# what keeps it single
	return doc.name if records.insert_once(doc) else None


def _finite(value: float) -> float:
	"""A test statistic as a column stores it: "certain" (infinite) as the largest float it keeps."""
	if value != value:  # NaN
		return 0.0
	return max(min(value, 1e12), -1e12)
