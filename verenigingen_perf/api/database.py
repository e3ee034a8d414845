"""Database health: the latest snapshot with its recommendations, on-demand snapshots, pins and
comparisons (see utils/performance/database/).

System Manager only: statement shapes reveal the schema (Performance Managers read every other
performance figure, not these). Every argument is checked here; a bad one is a validation error that
names it and the rule, and changes nothing.
"""

from __future__ import annotations

from typing import Any

import frappe
from frappe import _

from verenigingen_perf.api import arguments, begin_api_call
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.database import snapshot

ROLE = "System Manager"
MAX_LIMIT = 500


def _name(value: Any, argument: str, required: bool = True) -> str | None:
	return arguments.name(value, argument, required=required) or None


def _read(name: str) -> dict[str, Any]:
	try:
		return snapshot.read(name)
	except frappe.DoesNotExistError:
		frappe.local.response.http_status_code = 404
		raise


@frappe.whitelist(methods=["GET", "POST"])
def database_health() -> dict[str, Any]:
	"""The latest snapshot's key figures and recommendations (what the dashboard's Database section shows)."""
	begin_api_call(ROLE)
	config = get_config()
	return snapshot.summary(snapshot.latest(), config)


@frappe.whitelist(methods=["POST"])
def take_snapshot() -> dict[str, Any]:
	"""Take a snapshot now (its cache ratio from two readings `db_cache_sample_s` apart)."""
	begin_api_call(ROLE)
	config = get_config()
	data = snapshot.take(snapshot.ON_DEMAND, config)
	return snapshot.summary(data, config)


@frappe.whitelist(methods=["GET", "POST"])
def get_snapshot(name: Any = None) -> dict[str, Any]:
	"""One snapshot's figures as stored."""
	begin_api_call(ROLE)
	return _read(_name(name, "name"))


@frappe.whitelist(methods=["GET", "POST"])
def list_snapshots(limit: Any = 50) -> dict[str, Any]:
	"""The snapshots' key figures, newest first, at most `limit`."""
	begin_api_call(ROLE)
	return {"snapshots": snapshot.listing(arguments.whole_number(limit, "limit", 1, MAX_LIMIT))}


@frappe.whitelist(methods=["POST"])
def pin_snapshot(name: Any = None, pin_name: Any = None) -> dict[str, Any]:
	"""Keep a snapshot past the retention under a name (a release, say), to compare against."""
	begin_api_call(ROLE)
	record, pin = _name(name, "name"), _name(pin_name, "pin_name")
	try:
		return snapshot.pin(record, pin)
	except frappe.DoesNotExistError:
		frappe.local.response.http_status_code = 404
		raise


@frappe.whitelist(methods=["GET", "POST"])
def compare_snapshots(old: Any = None, new: Any = None) -> dict[str, Any]:
	"""Compare two snapshots; without `old`, the latest pinned one; without `new`, the latest one."""
	begin_api_call(ROLE)
	old_name, new_name = _name(old, "old", required=False), _name(new, "new", required=False)
	newer = _read(new_name) if new_name else snapshot.latest()
	older = _read(old_name) if old_name else snapshot.latest(pinned=True)
	if newer is None:
		arguments.invalid(_("new: there is no snapshot yet"))
	if older is None:
		arguments.invalid(_("old: no snapshot is pinned; name the snapshot to compare against"))
	return snapshot.compare_snapshots(older, newer, get_config())
