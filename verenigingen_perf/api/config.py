"""Whitelisted configuration endpoints (System Manager only): parse, check permission, delegate."""

from typing import Any

import frappe
from frappe import _

from verenigingen_perf.api import begin_api_call
from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.messages import translated


def _parse_values(values: Any) -> dict[str, Any]:
	if isinstance(values, str):
		try:
			values = frappe.parse_json(values) if values.strip() else {}
		except ValueError:
			frappe.throw(_("values: must be a JSON object of setting name to value"), frappe.ValidationError)
	if values is None:
		return {}
	if not isinstance(values, dict):
		frappe.throw(
			_("values: must be an object of setting name to value, got {0}").format(type(values).__name__),
			frappe.ValidationError,
		)
	return values


def _parse_environment(environment: Any) -> str | None:
	if environment is None:
		return None
	if not isinstance(environment, str) or (environment and environment not in config.ENVIRONMENTS):
		frappe.throw(
			_("environment: must be blank or one of {0}, got {1}").format(
				", ".join(config.ENVIRONMENTS), repr(environment)
			),
			frappe.ValidationError,
		)
	return environment


@frappe.whitelist(methods=["GET", "POST"])
def get_config() -> dict[str, Any]:
	"""The effective configuration: environment, which source decided it, values and overrides."""
	begin_api_call("System Manager")
	return config.describe(config.get_config())


@frappe.whitelist(methods=["POST"])
def update_config(values: Any = None, environment: Any = None) -> dict[str, Any]:
	"""Persist overrides in Performance Settings; a rejected update changes nothing."""
	begin_api_call("System Manager")
	parsed = _parse_values(values)
	env = _parse_environment(environment)
	try:
		return config.describe(config.update_config(parsed, env))
	except config.ConfigValidationError as e:
		frappe.throw(
			"; ".join(translated(error, _) for error in e.errors),
			frappe.ValidationError,
			title=_("Invalid performance settings"),
		)


@frappe.whitelist(methods=["GET", "POST"])
def validate_config(values: Any = None, environment: Any = None) -> dict[str, Any]:
	"""Check proposed overrides without saving: {valid, errors[, environment, overrides]}."""
	begin_api_call("System Manager")
	report = config.validation_report(_parse_values(values), _parse_environment(environment))
	return {**report, "errors": [translated(error, _) for error in report["errors"]]}
