"""What detection found, as the API, the health check and the dashboard give it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import frappe
from frappe import _

from verenigingen_perf.utils.performance.config import PerformanceConfig
from verenigingen_perf.utils.performance.detection import baselines as baseline_store
from verenigingen_perf.utils.performance.schema import (
	ACKNOWLEDGED,
	ANOMALY,
	BASELINE,
	OPEN,
	PINNED,
	REGRESSION,
	ROLLING,
)
from verenigingen_perf.utils.performance.timeutil import format_datetime

# a baseline as answered: without its name and sketch (and its error count: the rate says it)
BASELINE_FIELDS = [
	*baseline_store.DESCRIPTION_COLUMNS,
	*(c for c in baseline_store.FIGURE_COLUMNS if c != "error_count"),
]
REGRESSION_FIELDS = [
	"name",
	"operation",
	"operation_type",
	"metric",
	"status",
	"before_value",
	"after_value",
	"change_value",
	"p_value",
	"baseline_samples",
	"window_samples",
	"baseline_kind",
	"baseline_pin",
	"first_detected",
	"last_confirmed",
	"resolved_at",
	"acknowledged_by",
	"acknowledged_at",
	"note",
]
ANOMALY_FIELDS = [
	"operation",
	"operation_type",
	"metric",
	"period_start",
	"direction",
	"value",
	"expected",
	"score",
	"samples",
	"history",
	"history_size",
]


def _figures(row: dict[str, Any]) -> dict[str, Any]:
	"""A baseline row as answered: no figure where the data was insufficient."""
	if row["status"] != baseline_store.OK:
		for key in baseline_store.FIGURE_COLUMNS:
			if key in row:
				row[key] = None
	return row


def baselines(operation: str | None) -> dict[str, Any]:
	if operation is not None:
		rows = frappe.get_all(
			BASELINE, filters={"operation": operation}, fields=BASELINE_FIELDS, order_by="computed_at desc"
		)
		return {
			"operation": operation,
			"baselines": [_figures(r) for r in rows],
			"status": "ok"
			if any(r["status"] == baseline_store.OK for r in rows)
			else baseline_store.INSUFFICIENT,
		}
	rows = frappe.get_all(
		BASELINE, filters={"baseline_kind": ROLLING}, fields=BASELINE_FIELDS, order_by="operation asc"
	)
	pins = frappe.db.sql(
		f"""select pin_name, min(period_start) as period_start, max(period_end) as period_end,
			max(computed_at) as computed_at, count(*) as operations
		from `tab{BASELINE}` where baseline_kind=%s group by pin_name order by max(computed_at) desc""",
		(PINNED,),
		as_dict=True,
	)
	return {"baselines": [_figures(r) for r in rows], "pins": pins}


def pin(name: str, operations: list[str] | None, config: PerformanceConfig) -> dict[str, Any]:
	if baseline_store.pin_exists(name):
		frappe.throw(
			_(
				"name: a baseline is already pinned as {0}; pinned baselines are frozen, choose another name"
			).format(repr(name)),
			frappe.ValidationError,
			title=_("Invalid argument"),
		)
	result = baseline_store.pin(name, operations, config.detection, frappe.utils.now_datetime())
	frappe.db.commit()
	return result


def regressions(status: str | None, operation: str | None, limit: int) -> dict[str, Any]:
	filters: dict[str, Any] = {}
	if status:
		filters["status"] = status
	if operation:
		filters["operation"] = operation
	rows = frappe.get_all(
		REGRESSION,
		filters=filters,
		fields=REGRESSION_FIELDS,
		order_by="first_detected desc, name asc",
		limit=limit,
	)
	return {"regressions": rows, "limit": limit}


def acknowledge(name: str, note: str) -> dict[str, Any]:
	row = frappe.db.get_value(REGRESSION, name, ["name", "status"], as_dict=True, for_update=True)
	if row is None:
		frappe.throw(
			_("name: no regression is named {0}").format(repr(name)),
			frappe.DoesNotExistError,
			title=_("Not found"),
		)
	if row["status"] != OPEN:
		frappe.throw(
			_("name: only an open regression can be acknowledged; {0} is {1}").format(
				repr(name), row["status"]
			),
			frappe.ValidationError,
			title=_("Invalid argument"),
		)
	frappe.db.set_value(
		REGRESSION,
		name,
		{
			"status": ACKNOWLEDGED,
			"acknowledged_by": frappe.session.user,
			"acknowledged_at": frappe.utils.now_datetime(),
			"note": note,
		},
	)
	frappe.db.commit()
	return frappe.db.get_value(REGRESSION, name, REGRESSION_FIELDS, as_dict=True)


def anomalies(since: datetime, limit: int) -> dict[str, Any]:
	rows = frappe.get_all(
		ANOMALY,
		filters={"period_start": [">=", since]},
		fields=ANOMALY_FIELDS,
		order_by="period_start desc, score desc",
		limit=limit,
	)
	return {"since": since, "anomalies": rows, "limit": limit}


def summary(config: PerformanceConfig, now: datetime, worst: int) -> dict[str, Any]:
	"""For the health check and the dashboard: how many regressions are open and how many anomalies
	the last `detection_report_hours` had, with the worst few of each (two statements: each count
	rides along its rows as a window function)."""
	since = now - timedelta(hours=config.detection.detection_report_hours)
	regression_rows = frappe.db.sql(
		f"""select operation, operation_type, metric, status, change_value, first_detected,
			count(*) over () as total
		from `tab{REGRESSION}` where status in (%s, %s)
		order by change_value desc, name limit %s""",
		(OPEN, ACKNOWLEDGED, worst),
		as_dict=True,
	)
	anomaly_rows = frappe.db.sql(
		f"""select operation, operation_type, metric, period_start, score, direction,
			count(*) over () as total
		from `tab{ANOMALY}` where period_start >= %s
		order by score desc, name limit %s""",
		(format_datetime(since), worst),
		as_dict=True,
	)
	return {
		"open_regressions": int(regression_rows[0].pop("total")) if regression_rows else 0,
		"worst_regressions": [_without_total(r) for r in regression_rows],
		"anomalies": int(anomaly_rows[0].pop("total")) if anomaly_rows else 0,
		"anomalies_since": since,
		"worst_anomalies": [_without_total(r) for r in anomaly_rows],
	}


def _without_total(row: dict[str, Any]) -> dict[str, Any]:
	return {k: v for k, v in row.items() if k != "total"}
