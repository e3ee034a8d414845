"""Alerts for the desk and for automation: list and acknowledge alerts, silence them, try a rule, and
rules to and from YAML.

Reading, acknowledging and silencing: System Manager and Performance Manager (the people on call).
Importing rules: System Manager only (it changes what the site watches and whom it tells). Every
argument is checked here; a bad one is a validation error that names it and changes nothing.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import frappe
from frappe import _

from verenigingen_perf.api import arguments, begin_api_call
from verenigingen_perf.install import READER_ROLES
from verenigingen_perf.utils.performance.alerts import rules as alert_rules
from verenigingen_perf.utils.performance.alerts import sources, store
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.messages import translated
from verenigingen_perf.utils.performance.schema import ALERT, ALERT_RULE, ALERT_SILENCE

STATES = (alert_rules.PENDING, alert_rules.FIRING, alert_rules.RESOLVED)
MAX_LIMIT = 500
_NOTE_MAX_CHARS = 2000
ALERT_FIELDS = [
	"name",
	"rule",
	"state",
	"severity",
	"summary",
	"instance",
	"value",
	"silenced",
	"inhibited",
	"started_at",
	"fired_at",
	"resolved_at",
	"last_notified_at",
	"labels",
	"acknowledged_by",
	"acknowledged_at",
	"note",
]


@frappe.whitelist(methods=["GET", "POST"])
def list_alerts(state: Any = None, limit: Any = 100) -> dict[str, Any]:
	"""Alerts, newest first; of one state when given (pending, firing, resolved)."""
	begin_api_call(*READER_ROLES)
	if state not in (None, "") and state not in STATES:
		arguments.invalid(
			_("state: must be one of {0}, got {1}").format(", ".join(STATES), repr(str(state)[:40]))
		)
	filters = {"state": state} if state else {}
	rows = frappe.get_all(
		ALERT,
		filters=filters,
		fields=ALERT_FIELDS,
		order_by="started_at desc, name asc",
		limit=arguments.whole_number(limit, "limit", 1, MAX_LIMIT),
	)
	for row in rows:
		row["labels"] = json.loads(row["labels"] or "{}")
	return {"alerts": rows}


@frappe.whitelist(methods=["POST"])
def acknowledge_alert(name: Any = None, note: Any = None) -> dict[str, Any]:
	"""Record who has seen an alert, with a note (it changes no state and no notification)."""
	begin_api_call(*READER_ROLES)
	alert = arguments.name(name, "name")
	text = arguments.text(note, "note", _NOTE_MAX_CHARS, required=False)
	if not frappe.db.exists(ALERT, alert):
		frappe.throw(
			_("name: no alert is named {0}").format(repr(alert)),
			frappe.DoesNotExistError,
			title=_("Not found"),
		)
	frappe.db.set_value(
		ALERT,
		alert,
		{
			"acknowledged_by": frappe.session.user,
			"acknowledged_at": frappe.utils.now_datetime(),
			"note": text,
		},
	)
	frappe.db.commit()
	return frappe.db.get_value(ALERT, alert, ALERT_FIELDS, as_dict=True)


@frappe.whitelist(methods=["POST"])
def create_silence(
	matchers: Any = None, reason: Any = None, ends_at: Any = None, starts_at: Any = None
) -> dict[str, Any]:
	"""Silence the alerts whose labels match (label=value lines or a JSON object; values may be globs)
	from `starts_at` (default now) to `ends_at`."""
	begin_api_call(*READER_ROLES)
	if isinstance(matchers, dict):
		matchers = json.dumps(matchers)
	text = arguments.text(matchers, "matchers", 4000)
	why = arguments.name(reason, "reason")
	start = arguments.moment(starts_at, "starts_at") or frappe.utils.now_datetime()
	end = arguments.moment(ends_at, "ends_at")
	if end is None:
		arguments.invalid(_("ends_at: must be given (YYYY-MM-DD HH:MM:SS)"))
	doc = frappe.get_doc(
		{"doctype": ALERT_SILENCE, "matchers": text, "reason": why, "starts_at": start, "ends_at": end}
	)
	doc.insert(ignore_permissions=True)
	frappe.db.commit()
	return {"name": doc.name, "matchers": text, "starts_at": start, "ends_at": end, "reason": why}


@frappe.whitelist(methods=["GET", "POST"])
def test_rule(name: Any = None) -> dict[str, Any]:
	"""Evaluate one rule now, without recording or notifying anything: what it watches and whether
	each would breach."""
	begin_api_call(*READER_ROLES)
	rule_name = arguments.name(name, "name")
	if not frappe.db.exists(ALERT_RULE, rule_name):
		frappe.throw(
			_("name: no alert rule is named {0}").format(repr(rule_name)),
			frappe.DoesNotExistError,
			title=_("Not found"),
		)
	doc = frappe.get_doc(ALERT_RULE, rule_name)
	data = {
		**{k: doc.get(k) for k in store.RULE_FIELDS},
		"name": rule_name,
		"channels": [c.channel for c in doc.channels],
	}
	try:
		rule = alert_rules.validate(data)
	except alert_rules.RuleError as error:
		return {"rule": rule_name, "valid": False, "errors": [translated(e, _) for e in error.errors]}
	now = frappe.utils.now_datetime()
	readings = sources.read([rule], get_config(), now)
	return {
		"rule": rule_name,
		"valid": True,
		"evaluated_at": now,
		"instances": [
			{
				"instance": o.instance,
				"value": o.value,
				"level": o.level,
				"breaches": alert_rules.breaches(rule, o),
				"labels": alert_rules.instance_labels(rule, o),
			}
			for o in sources.observations(rule, readings, now)
		],
	}


@frappe.whitelist(methods=["GET", "POST"])
def export_rules() -> dict[str, Any]:
	"""Every rule as YAML (`rules: [...]`), for review and version control."""
	begin_api_call(*READER_ROLES)
	return {"yaml": store.export_rules()}


@frappe.whitelist(methods=["POST"])
def import_rules(yaml_text: Any = None) -> dict[str, Any]:
	"""Create or update rules from YAML, all or none: one bad rule and nothing changes."""
	begin_api_call("System Manager")
	text = arguments.text(yaml_text, "yaml_text", store.MAX_YAML_CHARS)
	try:
		result = store.import_rules(text)
	except alert_rules.RuleError as error:
		frappe.db.rollback()
		frappe.throw(
			"<br>".join(frappe.utils.escape_html(translated(e, _)) for e in error.errors),
			frappe.ValidationError,
			title=_("Invalid alert rules"),
		)
	frappe.db.commit()
	return result
