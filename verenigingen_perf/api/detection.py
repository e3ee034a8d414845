"""Baselines, regressions and anomalies for the desk: read them, pin a baseline, acknowledge a regression.

System Manager and Performance Manager only (reads and writes alike). Every argument is checked here;
a bad one is a validation error that names it and the rule, and changes nothing.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import frappe
from frappe import _

from verenigingen_perf.api import arguments, begin_api_call
from verenigingen_perf.install import READER_ROLES
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.detection import reports
from verenigingen_perf.utils.performance.schema import ACKNOWLEDGED, OPEN, RESOLVED

# Frappe's Data columns hold 140 characters
_NOTE_MAX_CHARS = 2000
# operations one pin may list (the rollup keeps at most max_operations_per_hour a period anyway)
MAX_PINNED_OPERATIONS = 1000
MAX_LIMIT = 500
STATUSES = (OPEN, ACKNOWLEDGED, RESOLVED)
# how far back `since` may reach: no aggregate is kept longer than the daily retention's maximum
_MAX_SINCE_DAYS = 7300


def _name(value: Any, argument: str, required: bool = True) -> str | None:
	return arguments.name(value, argument, required=required) or None


def _operations(value: Any) -> list[str] | None:
	"""A list, a JSON list or a comma-separated string of operation names; None: every operation."""
	if value is None or (isinstance(value, str) and not value.strip()):
		return None
	names = arguments.name_list(value, "operations", MAX_PINNED_OPERATIONS, arguments.name, "operation names")
	if not names:
		arguments.invalid(_("operations: must name at least one operation, or be left out for all"))
	return names


def _status(value: Any) -> str | None:
	if value is None or value == "":
		return None
	if value not in STATUSES:
		arguments.invalid(
			_("status: must be one of {0}, got {1}").format(", ".join(STATUSES), repr(str(value)[:40]))
		)
	return value


def _since(value: Any, now: datetime) -> datetime | None:
	moment = arguments.moment(value, "since")
	if moment is None:
		return None
	if moment > now:
		arguments.invalid(_("since: must not be in the future"))
	if moment < now - timedelta(days=_MAX_SINCE_DAYS):
		arguments.invalid(_("since: at most {0} days back").format(_MAX_SINCE_DAYS))
	return moment


@frappe.whitelist(methods=["GET", "POST"])
def get_baselines(operation: Any = None) -> dict[str, Any]:
	"""The rolling baselines and the pins (without `operation`), or every baseline of one operation."""
	begin_api_call(*READER_ROLES)
	return reports.baselines(_name(operation, "operation", required=False))


@frappe.whitelist(methods=["POST"])
def pin_baseline(name: Any = None, operations: Any = None) -> dict[str, Any]:
	"""Freeze the baselines of the last `baseline_window_days` days under `name` (a release, say),
	for every operation or the listed ones."""
	begin_api_call(*READER_ROLES)
	pin = _name(name, "name")
	listed = _operations(operations)
	return reports.pin(pin, listed, get_config())


@frappe.whitelist(methods=["GET", "POST"])
def list_regressions(status: Any = None, operation: Any = None, limit: Any = 100) -> dict[str, Any]:
	"""Regressions, newest first: of one status and one operation when given."""
	begin_api_call(*READER_ROLES)
	return reports.regressions(
		_status(status),
		_name(operation, "operation", required=False),
		arguments.whole_number(limit, "limit", 1, MAX_LIMIT),
	)


@frappe.whitelist(methods=["POST"])
def acknowledge_regression(name: Any = None, note: Any = None) -> dict[str, Any]:
	"""Mark an open regression as seen, with a note; it still resolves by itself when the metric is back."""
	begin_api_call(*READER_ROLES)
	record = _name(name, "name")
	return reports.acknowledge(record, arguments.text(note, "note", _NOTE_MAX_CHARS, required=False))


@frappe.whitelist(methods=["GET", "POST"])
def list_anomalies(since: Any = None, limit: Any = 100) -> dict[str, Any]:
	"""Anomalies of the hours since `since` (default: the last `detection_report_hours`), newest first."""
	begin_api_call(*READER_ROLES)
	now = frappe.utils.now_datetime()
	config = get_config()
	start = _since(since, now) or now - timedelta(hours=config.detection.detection_report_hours)
	return reports.anomalies(start, arguments.whole_number(limit, "limit", 1, MAX_LIMIT))
