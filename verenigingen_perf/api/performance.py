"""The desk's performance calls: health check, member analysis, batch analysis and dashboard data.

System Manager and Performance Manager only; member analysis also needs read permission on the
member. Every argument is checked here, and a bad one is a validation error that names it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import frappe
from frappe import _

from verenigingen_perf.api import arguments, begin_api_call
from verenigingen_perf.install import READER_ROLES
from verenigingen_perf.utils.performance import dashboard, health, member_analysis
from verenigingen_perf.utils.performance.config import (
	BATCH_HARD_CAP,
	PerformanceConfig,
	get_config,
	validate_member_doctype,
)

# names listed (before de-duplication) in one batch call: generous, but never unbounded
_MAX_LISTED_NAMES = 10 * BATCH_HARD_CAP


_invalid = arguments.invalid


def parse_member_name(value: Any, argument: str = "member_name") -> str:
	"""A member's name: a name is passed to the database as a parameter only, so apart from its length
	and control characters any text is a valid one ("Union Street" included)."""
	if not isinstance(value, str):
		_invalid(_("{0}: must be a member's name (text), got {1}").format(argument, type(value).__name__))
	return arguments.name(value, argument)


def parse_member_names(value: Any) -> list[str]:
	"""A list, a JSON list string or a comma-separated string; de-duplicated in order."""
	names = arguments.name_list(value, "member_names", _MAX_LISTED_NAMES, parse_member_name)
	if not names:
		_invalid(_("member_names: must name at least one member"))
	return names


def parse_limit(value: Any, config: PerformanceConfig) -> int:
	maximum = config.analysis.batch_max_members
	if isinstance(value, bool) or value is None:
		_invalid(_("limit: must be a whole number from 1 to {0}, got {1}").format(maximum, repr(value)))
	try:
		number = float(value.strip()) if isinstance(value, str) else float(value)
	except (TypeError, ValueError):
		_invalid(_("limit: must be a whole number from 1 to {0}, got {1}").format(maximum, repr(value)))
	if not number.is_integer() or not 1 <= number <= maximum:
		_invalid(
			f"limit: must be a whole number from 1 to {maximum} (batch_max_members; never above "
			f"{BATCH_HARD_CAP}), got {value!r}"
		)
	return int(number)


def _check_member_doctype(doctype: str) -> None:
	"""The configured member doctype can hold members (a clear error naming the setting if not)."""
	if problem := validate_member_doctype(doctype):
		_invalid(_("{0} (set member_doctype in Performance Settings)").format(problem))


def _check_member_access(doctype: str, member: str, argument: str) -> None:
	"""Permission first, so no answer tells a caller which members exist: without read permission on
	the doctype every name is refused alike (403); a missing member and one the caller may not read
	are both 'not found' (404)."""
	_check_member_doctype(doctype)
	if not frappe.has_permission(doctype, "read"):
		frappe.throw(_("{0}: you may not read {1} records").format(argument, doctype), frappe.PermissionError)
	if not _can_read(doctype, member):
		frappe.throw(
			f"{argument}: {member_analysis.not_readable_reason(doctype, member)}", frappe.DoesNotExistError
		)


def _can_read(doctype: str, member: str) -> bool:
	return bool(frappe.db.exists(doctype, member)) and bool(
		frappe.has_permission(doctype, "read", doc=member)
	)


def _measure(member: str, config: PerformanceConfig, argument: str) -> dict[str, Any]:
	doctype = config.analysis.member_doctype
	_check_member_access(doctype, member, argument)
	return member_analysis.measure_member_performance(member, config, doctype).as_dict()


@frappe.whitelist(methods=["GET", "POST"])
def quick_health_check(member_name: Any = None) -> dict[str, Any]:
	"""System health from the recent aggregates; with a member name, also that member's measurement."""
	begin_api_call(*READER_ROLES)
	member = None if member_name is None else parse_member_name(member_name)
	config = get_config()
	answer = {"system": health.system_health(config)}
	if member is not None:
		answer["member"] = _measure(member, config, "member_name")
	return answer


@frappe.whitelist(methods=["GET", "POST"])
def comprehensive_member_analysis(member_name: Any = None) -> dict[str, Any]:
	"""What loading this member in the desk costs, measured, with recommendations."""
	begin_api_call(*READER_ROLES)
	if member_name is None:
		_invalid(_("member_name: is required"))
	member = parse_member_name(member_name)
	config = get_config()
	return {
		"measurement": _measure(member, config, "member_name"),
		"thresholds": {
			"api_queries": asdict(config.thresholds.api_queries),
			"api_response_ms": asdict(config.thresholds.api_response_ms),
			"memory_mb": asdict(config.thresholds.memory_mb),
			"n_plus_one_min_repeats": config.analysis.n_plus_one_min_repeats,
			"slow_query_ms": config.monitoring.slow_query_ms,
		},
		"environment": config.environment,
	}


@frappe.whitelist(methods=["GET", "POST"])
def batch_member_analysis(member_names: Any = None, limit: Any = None) -> dict[str, Any]:
	"""Several members at once: per-member results and failures, and a summary."""
	begin_api_call(*READER_ROLES)
	config = get_config()
	if member_names is None:
		_invalid(_("member_names: is required"))
	names = parse_member_names(member_names)
	maximum = parse_limit(config.analysis.batch_max_members if limit is None else limit, config)
	if len(names) > maximum:
		_invalid(
			f"member_names: {len(names)} distinct members given, at most {maximum} allowed "
			"(limit); nothing was analysed"
		)
	doctype = config.analysis.member_doctype
	_check_member_doctype(doctype)
	if not frappe.has_permission(doctype, "read"):
		reason = _("no permission to read {0} records").format(doctype)
		failures = [{"member": name, "reason": reason} for name in names]
		return {
			"doctype": doctype,
			"results": [],
			"failures": failures,
			"summary": member_analysis.batch_summary([], failures),
		}
	return member_analysis.analyse_batch(names, config, _can_read, doctype)


@frappe.whitelist(methods=["GET", "POST"])
def performance_dashboard_data() -> dict[str, Any]:
	"""Health, key figures, series, slowest operations, storage and freshness; cached in Redis."""
	begin_api_call(*READER_ROLES)
	return dashboard.cached_dashboard(get_config())
