"""The desk's performance calls: health check, member analysis, batch analysis and dashboard data.

System Manager and Performance Manager only; member analysis also needs read permission on the
member. Every argument is checked here, and a bad one is a validation error that names it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import frappe

from verenigingen_perf.api import begin_api_call
from verenigingen_perf.install import READER_ROLES
from verenigingen_perf.utils.performance import dashboard, health, member_analysis
from verenigingen_perf.utils.performance.config import BATCH_HARD_CAP, PerformanceConfig, get_config

# Frappe's name column is varchar(140)
_NAME_MAX_CHARS = 140
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# what a name never needs and an injection attempt usually has
_INJECTION = re.compile(
	r"(--|;|/\*|\*/|`|\\|\b(union|select|insert|update|delete|drop|sleep|benchmark)\b\s*[\s(]"
	r"|'\s*(or|and)\b)",
	re.IGNORECASE,
)


def _invalid(message: str) -> None:
	frappe.throw(message, frappe.ValidationError, title="Invalid argument")


def parse_member_name(value: Any, argument: str = "member_name") -> str:
	if not isinstance(value, str):
		_invalid(f"{argument}: must be a member's name (text), got {type(value).__name__}")
	name = value.strip()
	if not name:
		_invalid(f"{argument}: must not be empty")
	if len(name) > _NAME_MAX_CHARS:
		_invalid(f"{argument}: a name has at most {_NAME_MAX_CHARS} characters, got {len(name)}")
	if _CONTROL.search(name):
		_invalid(f"{argument}: must not contain control characters")
	if _INJECTION.search(name):
		_invalid(f"{argument}: {name[:40]!r} looks like SQL, not like a member's name")
	return name


def parse_member_names(value: Any) -> list[str]:
	"""A list, a JSON list string or a comma-separated string; de-duplicated in order."""
	items = value
	if isinstance(value, str):
		text = value.strip()
		if text.startswith("{"):
			_invalid("member_names: must be a list of names, got a JSON object")
		if text.startswith("["):
			try:
				items = json.loads(text)
			except ValueError:
				_invalid("member_names: starts like a JSON list but is not valid JSON")
		else:
			items = [part for part in text.split(",") if part.strip()]
	if not isinstance(items, list | tuple):
		_invalid(
			"member_names: must be a list of names, a JSON list or a comma-separated string, "
			f"got {type(value).__name__}"
		)
	if not items:
		_invalid("member_names: must name at least one member")
	names = [parse_member_name(item, f"member_names[{i}]") for i, item in enumerate(items)]
	return list(dict.fromkeys(names))


def parse_limit(value: Any, config: PerformanceConfig) -> int:
	maximum = config.analysis.batch_max_members
	if isinstance(value, bool) or value is None:
		_invalid(f"limit: must be a whole number from 1 to {maximum}, got {value!r}")
	try:
		number = float(value.strip()) if isinstance(value, str) else float(value)
	except (TypeError, ValueError):
		_invalid(f"limit: must be a whole number from 1 to {maximum}, got {value!r}")
	if not number.is_integer() or not 1 <= number <= maximum:
		_invalid(
			f"limit: must be a whole number from 1 to {maximum} (batch_max_members; never above "
			f"{BATCH_HARD_CAP}), got {value!r}"
		)
	return int(number)


def _check_member_access(doctype: str, member: str, argument: str) -> None:
	"""The doctype and member exist (clear errors), and the caller may read the member."""
	try:
		member_analysis.check_member(doctype, member)
	except member_analysis.MemberAnalysisError as e:
		exc = frappe.ValidationError if str(e).startswith("member_doctype") else frappe.DoesNotExistError
		frappe.throw(str(e).replace("member_name:", f"{argument}:", 1), exc)
	if not frappe.has_permission(doctype, "read", doc=member):
		frappe.throw(f"{argument}: you may not read {doctype} {member!r}", frappe.PermissionError)


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
		_invalid("member_name: is required")
	member = parse_member_name(member_name)
	config = get_config()
	return {
		"measurement": _measure(member, config, "member_name"),
		"thresholds": {
			"queries_per_operation": config.thresholds.queries_per_operation.__dict__,
			"api_response_ms": config.thresholds.api_response_ms.__dict__,
			"memory_mb": config.thresholds.memory_mb.__dict__,
			"n_plus_one_min_repeats": config.analysis.n_plus_one_min_repeats,
		},
		"environment": config.environment,
	}


@frappe.whitelist(methods=["GET", "POST"])
def batch_member_analysis(member_names: Any = None, limit: Any = None) -> dict[str, Any]:
	"""Several members at once: per-member results and failures, and a summary."""
	begin_api_call(*READER_ROLES)
	config = get_config()
	if member_names is None:
		_invalid("member_names: is required")
	names = parse_member_names(member_names)
	maximum = parse_limit(config.analysis.batch_max_members if limit is None else limit, config)
	if len(names) > maximum:
		_invalid(
			f"member_names: {len(names)} distinct members given, at most {maximum} allowed "
			"(limit); nothing was analysed"
		)
	doctype = config.analysis.member_doctype
	if not frappe.db.exists("DocType", doctype):
		_invalid(f"member_doctype: the doctype {doctype!r} does not exist on this site")
	return member_analysis.analyse_batch(
		names,
		config,
		lambda dt, name: bool(frappe.has_permission(dt, "read", doc=name)),
		doctype,
	)


@frappe.whitelist(methods=["GET", "POST"])
def performance_dashboard_data() -> dict[str, Any]:
	"""Health, key figures, series, slowest operations, storage and freshness; cached in Redis."""
	begin_api_call(*READER_ROLES)
	return dashboard.cached_dashboard(get_config())
