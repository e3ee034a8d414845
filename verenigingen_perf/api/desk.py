"""What the desk's pages and number cards call: one operation, one trace, and the cards' figures.

System Manager and Performance Manager only. The cards read the same cached dashboard as the dashboard
page, so a card and the page show the same figure for the same moment; a card whose figure was not
measured says so instead of showing a number.
"""

from __future__ import annotations

import re
from typing import Any

import frappe
from frappe import _

from verenigingen_perf.api import arguments, begin_api_call
from verenigingen_perf.install import READER_ROLES
from verenigingen_perf.utils.performance import dashboard, operation_view, trace_view
from verenigingen_perf.utils.performance.config import get_config

# capture.new_id: 16 hex digits of time and 8 random ones; the buffer keeps at most 32
_TRACE_ID = re.compile(r"^[0-9a-f]{8,32}$")
DASHBOARD_ROUTE = ["performance-dashboard"]


@frappe.whitelist(methods=["GET", "POST"])
def operation_detail(operation: Any = None) -> dict[str, Any]:
	"""One operation's series, baselines, regressions and slowest recent detail rows."""
	begin_api_call(*READER_ROLES)
	name = arguments.name(operation, "operation")
	return operation_view.operation_view(name, get_config())


@frappe.whitelist(methods=["GET", "POST"])
def trace_detail(trace_id: Any = None) -> dict[str, Any]:
	"""One trace's spans as a waterfall (the X-Vperf-Trace response header names a request's trace)."""
	begin_api_call(*READER_ROLES)
	text = arguments.text(trace_id, "trace_id", 32, single_line=True).lower()
	if not _TRACE_ID.match(text):
		arguments.invalid(_("trace_id: must be 8 to 32 hexadecimal digits (the X-Vperf-Trace header)"))
	return trace_view.trace_view(text, get_config().desk.trace_max_spans)


# --- number cards (Frappe's "Custom" cards call these with the card's filters, unused here) ---------


def _card(value: float | int | None, fieldtype: str, route: list[str] | None = None) -> dict[str, Any] | str:
	if value is None:
		return _("No data")
	return {"value": value, "fieldtype": fieldtype, "route": route or DASHBOARD_ROUTE}


def _dashboard() -> dict[str, Any]:
	begin_api_call(*READER_ROLES)
	return dashboard.cached_dashboard(get_config())


@frappe.whitelist(methods=["GET", "POST"])
def health_score_card(filters: Any = None) -> dict[str, Any] | str:
	"""The health score, as the workspace's number card shows it ("No data" without a score)."""
	health = _dashboard()["health"]
	return _card(health.get("score"), "Float")


@frappe.whitelist(methods=["GET", "POST"])
def requests_last_hour_card(filters: Any = None) -> dict[str, Any] | str:
	"""Operations measured in the last hour, as the workspace's number card shows them."""
	return _card(_dashboard()["windows"]["last_hour"]["count"], "Int")


@frappe.whitelist(methods=["GET", "POST"])
def p95_last_hour_card(filters: Any = None) -> dict[str, Any] | str:
	"""The p95 duration (ms) of the last hour, as the workspace's number card shows it."""
	return _card(_dashboard()["windows"]["last_hour"]["p95_ms"], "Float")


@frappe.whitelist(methods=["GET", "POST"])
def error_rate_last_hour_card(filters: Any = None) -> dict[str, Any] | str:
	"""The error rate of the last hour in percent, as the workspace's number card shows it."""
	rate = _dashboard()["windows"]["last_hour"]["error_rate"]
	return _card(None if rate is None else round(rate * 100, 3), "Percent")


@frappe.whitelist(methods=["GET", "POST"])
def open_regressions_card(filters: Any = None) -> dict[str, Any] | str:
	"""Regressions open or acknowledged, as the workspace's number card shows them (it links to their list)."""
	count = _dashboard()["detection"]["open_regressions"]
	return _card(count, "Int", ["List", "Performance Regression", "List"])


@frappe.whitelist(methods=["GET", "POST"])
def firing_alerts_card(filters: Any = None) -> dict[str, Any] | str:
	"""Alerts firing now, as the workspace's number card shows them (it links to their list)."""
	count = _dashboard()["alerts"]["firing"]
	return _card(count, "Int", ["List", "Performance Alert", "List"])


@frappe.whitelist(methods=["GET", "POST"])
def last_24_hours_chart(**chart_arguments: Any) -> dict[str, Any]:
	"""The dashboard's hourly series as Frappe's dashboard chart draws it: p50 and p95 of the hours
	that had requests (an hour without any has no percentile, and is left out rather than drawn as 0).
	The chart's arguments (time span, filters) are ignored: the series has a fixed span."""
	points = [p for p in _dashboard()["hourly_series"] if p["count"]]
	if not points:
		# Frappe's chart widget shows its own "No Data" for an empty answer
		return {}
	return {
		"labels": [p["period_start"][11:16] for p in points],
		"datasets": [
			{"name": _("p50 (ms)"), "values": [p["p50_ms"] for p in points]},
			{"name": _("p95 (ms)"), "values": [p["p95_ms"] for p in points]},
		],
	}
