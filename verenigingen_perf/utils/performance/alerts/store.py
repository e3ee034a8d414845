"""Alert rules, channels, silences and maintenance windows as stored: reading them for the evaluation,
checking documents on save, rules to and from YAML, and the rules shipped with the app."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import frappe
import yaml
from frappe import _

from verenigingen_perf.utils.performance.alerts import rules as alert_rules
from verenigingen_perf.utils.performance.alerts import transport
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.messages import translated
from verenigingen_perf.utils.performance.schema import (
	ALERT_CHANNEL,
	ALERT_RULE,
	ALERT_SILENCE,
	MAINTENANCE_WINDOW,
)
from verenigingen_perf.utils.performance.timeutil import as_datetime

RULE_FIELDS = (
	"rule_name",
	"enabled",
	"description",
	"source",
	"metric",
	"operation",
	"window_minutes",
	"comparison",
	"threshold",
	"level",
	"for_minutes",
	"severity",
	"labels",
	"group_by",
	"group_wait_s",
	"group_interval_minutes",
	"repeat_interval_minutes",
)
# a silence longer than this is a rule to disable, not a silence
MAX_SILENCE_DAYS = 90
MAX_WINDOW_MINUTES = 7 * 24 * 60
MAX_CHANNEL_TIMEOUT_S = 60
MAX_CHANNEL_ATTEMPTS = 20
MAX_YAML_CHARS = 1_000_000
MAX_RULES = 5000
# a rules document nests four levels (rules, the list, a rule, its labels); more is no rules file
MAX_YAML_DEPTH = 10
# scalars, lists and mappings in one document: 5,000 rules of a few dozen values each
MAX_YAML_NODES = 500_000
# PyYAML's C parser when it was built with libyaml (the pure-Python one otherwise)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _rule_data(row: dict[str, Any], channels: list[str]) -> dict[str, Any]:
	return {**{k: row.get(k) for k in RULE_FIELDS}, "name": row["rule_name"], "channels": channels}


def _channels_by_rule() -> dict[str, list[str]]:
	by_rule: dict[str, list[str]] = {}
	for row in frappe.get_all(
		"Performance Alert Rule Channel",
		filters={"parenttype": ALERT_RULE},
		fields=["parent", "channel"],
		order_by="idx asc",
	):
		by_rule.setdefault(row["parent"], []).append(row["channel"])
	return by_rule


class StoredRecordError(ValueError):
	"""A record stored broken (edited in the database, or saved before a check existed)."""


def _skip(skipped: list[alert_rules.Skipped] | None, kind: str, name: str, errors: list[str]) -> None:
	if skipped is not None:
		skipped.append(alert_rules.Skipped(kind, name, StoredRecordError("; ".join(errors))))


def enabled_rules(skipped: list[alert_rules.Skipped] | None = None) -> dict[str, alert_rules.Rule]:
	"""Every enabled rule, validated (two statements, however many rules). A rule stored broken
	is skipped (and listed in `skipped`), never a reason to stop the others."""
	channels = _channels_by_rule()
	out = {}
	for row in frappe.get_all(ALERT_RULE, filters={"enabled": 1}, fields=list(RULE_FIELDS)):
		try:
			rule = alert_rules.validate(_rule_data(row, channels.get(row["rule_name"], [])))
		except alert_rules.RuleError as error:
			_skip(skipped, "rule", row["rule_name"], error.errors)
			continue
		out[rule.name] = rule
	return out


def silences(now: datetime, skipped: list[alert_rules.Skipped] | None = None) -> list[alert_rules.Silence]:
	"""The silences active now; one stored broken is skipped (and listed in `skipped`)."""
	rows = frappe.get_all(
		ALERT_SILENCE,
		filters={"ends_at": (">", now), "starts_at": ("<=", now)},
		fields=["name", "matchers", "starts_at", "ends_at"],
	)
	out = []
	for row in rows:
		matchers, errors = alert_rules.parse_matchers(row["matchers"], "silence")
		if errors:
			_skip(skipped, "silence", row["name"], errors)
			continue
		out.append(
			alert_rules.Silence(
				matchers, as_datetime(row["starts_at"]), as_datetime(row["ends_at"]), row["name"]
			)
		)
	return out


def maintenance_windows(
	now: datetime, skipped: list[alert_rules.Skipped] | None = None
) -> list[alert_rules.MaintenanceWindow]:
	"""The enabled maintenance windows; one stored broken (a cron that never starts within a year of
	`now` among them) is skipped (and listed in `skipped`)."""
	out = []
	for row in frappe.get_all(
		MAINTENANCE_WINDOW, filters={"enabled": 1}, fields=["name", "matchers", "cron", "duration_minutes"]
	):
		matchers, errors = alert_rules.parse_matchers(row["matchers"], "maintenance window")
		if problem := alert_rules.validate_cron(row["cron"], now):
			errors.append(_("maintenance window: cron: {0}").format(translated(problem, _)))
		if errors:
			_skip(skipped, "maintenance window", row["name"], errors)
			continue
		out.append(
			alert_rules.MaintenanceWindow(matchers, row["cron"], int(row["duration_minutes"]), row["name"])
		)
	return out


# --- checking documents on save ---------------------------------------------------------------------


def _refuse(errors: list[str]) -> None:
	frappe.throw(
		"<br>".join(frappe.utils.escape_html(translated(e, _)) for e in errors),
		frappe.ValidationError,
		title=_("Invalid alert rule"),
	)


def validate_rule_document(doc: Any) -> None:
	data = _rule_data(doc.as_dict(), [row.channel for row in doc.channels])
	known = frappe.get_all(ALERT_CHANNEL, pluck="name")
	try:
		alert_rules.validate(data, known)
	except alert_rules.RuleError as error:
		_refuse(error.errors)


def channel_errors(data: dict[str, Any]) -> list[str]:
	where = _("channel {0}").format(repr(str(data.get("channel_name") or "")[:60]))
	errors = []
	kind = data.get("channel_type")
	if kind not in ("desk", "email", "webhook"):
		errors.append(_("{0}: channel_type: must be desk, email or webhook").format(where))
	if kind == "desk" and not data.get("role"):
		errors.append(_("{0}: role: a desk channel notifies the users of a role; name one").format(where))
	if kind == "email" and not (data.get("role") or (data.get("recipients") or "").strip()):
		errors.append(_("{0}: recipients: an email channel needs a role or recipients").format(where))
	for address in (data.get("recipients") or "").split():
		if not frappe.utils.validate_email_address(address.strip(", ")):
			errors.append(_("{0}: recipients: {1} is not an email address").format(where, repr(address[:60])))
	if kind == "webhook":
		url = urlparse(str(data.get("url") or ""))
		if url.scheme not in ("http", "https") or not url.netloc or len(str(data.get("url"))) > 1000:
			errors.append(_("{0}: url: must be an http:// or https:// address").format(where))
		elif problem := private_address(str(data.get("url"))):
			errors.append(_("{0}: url: {1}").format(where, problem))
		if data.get("webhook_format") not in ("generic", "slack", "pagerduty"):
			errors.append(_("{0}: webhook_format: must be generic, slack or pagerduty").format(where))
	timeout = data.get("timeout_s")
	if not isinstance(timeout, int) or not 1 <= timeout <= MAX_CHANNEL_TIMEOUT_S:
		errors.append(
			_("{0}: timeout_s: must be a whole number from 1 to {1}").format(where, MAX_CHANNEL_TIMEOUT_S)
		)
	attempts = data.get("max_attempts")
	if not isinstance(attempts, int) or not 1 <= attempts <= MAX_CHANNEL_ATTEMPTS:
		errors.append(
			_("{0}: max_attempts: must be a whole number from 1 to {1}").format(where, MAX_CHANNEL_ATTEMPTS)
		)
	return errors


# saving a channel waits at most this long for its host's addresses
_RESOLVE_ON_SAVE_S = 3


def private_address(url: str) -> str | None:
	"""Why a webhook URL is refused (it resolves to a loopback, link-local or private address while
	`alert_webhook_refuse_private_addresses` is on), or None. A host that cannot be resolved now is
	not refused here: every attempt checks again."""
	if not get_config().alerting.webhook_refuse_private_addresses:
		return None
	try:
		transport.resolve(url, refuse_private=True, timeout_s=_RESOLVE_ON_SAVE_S)
	except transport.AddressRefused as refused:
		return str(refused)
	except transport.DeliveryError:
		return None
	return None


def validate_channel_document(doc: Any) -> None:
	if errors := channel_errors(doc.as_dict()):
		_refuse(errors)


def validate_silence_document(doc: Any) -> None:
	_matchers, errors = alert_rules.parse_matchers(doc.matchers, "silence")
	starts, ends = as_datetime(doc.starts_at), as_datetime(doc.ends_at)
	if ends <= starts:
		errors.append(_("silence: ends_at: must be after starts_at"))
	elif ends - starts > timedelta(days=MAX_SILENCE_DAYS):
		errors.append(
			_("silence: ends_at: a silence lasts at most {0} days (disable the rule instead)").format(
				MAX_SILENCE_DAYS
			)
		)
	if not (doc.reason or "").strip():
		errors.append(_("silence: reason: say why"))
	if errors:
		_refuse(errors)


def validate_window_document(doc: Any) -> None:
	_matchers, errors = alert_rules.parse_matchers(doc.matchers, "maintenance window")
	if problem := alert_rules.validate_cron(doc.cron, frappe.utils.now_datetime()):
		errors.append(_("maintenance window: cron: {0}").format(translated(problem, _)))
	if not isinstance(doc.duration_minutes, int) or not 1 <= doc.duration_minutes <= MAX_WINDOW_MINUTES:
		errors.append(
			_("maintenance window: duration_minutes: must be a whole number from 1 to {0}").format(
				MAX_WINDOW_MINUTES
			)
		)
	if errors:
		_refuse(errors)


# --- YAML ---------------------------------------------------------------------------------------------


def export_rules() -> str:
	channels = _channels_by_rule()
	rows = frappe.get_all(ALERT_RULE, fields=list(RULE_FIELDS), order_by="rule_name asc")
	documents = []
	for row in rows:
		data = _rule_data(row, channels.get(row["rule_name"], []))
		try:
			documents.append(alert_rules.validate(data).as_dict())
		except alert_rules.RuleError:
			documents.append({k: v for k, v in data.items() if v not in (None, "")})
	return yaml.safe_dump({"rules": documents}, sort_keys=False, allow_unicode=True)


def check_yaml_shape(text: str) -> None:
	"""Refuse, before anything is built, what would make loading a small text cost a lot: anchors and
	aliases (a few hundred bytes of nested aliases expand to gigabytes), nesting deeper than
	MAX_YAML_DEPTH and more than MAX_YAML_NODES values. Reads the parser's events, stopping at the
	first problem."""
	depth = nodes = 0
	for event in yaml.parse(text, Loader=_YAML_LOADER):
		if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
			raise alert_rules.RuleError(
				[
					_("yaml: anchors and aliases (&name, *name) are not accepted (line {0})").format(
						_line(event)
					)
				]
			)
		if isinstance(event, yaml.CollectionStartEvent):
			depth += 1
			if depth > MAX_YAML_DEPTH:
				raise alert_rules.RuleError(
					[
						_("yaml: nested more than {0} levels deep (line {1})").format(
							MAX_YAML_DEPTH, _line(event)
						)
					]
				)
		elif isinstance(event, yaml.CollectionEndEvent):
			depth -= 1
		if isinstance(event, yaml.NodeEvent):
			nodes += 1
			if nodes > MAX_YAML_NODES:
				raise alert_rules.RuleError([_("yaml: more than {0:,} values").format(MAX_YAML_NODES)])


def _line(event: Any) -> int:
	mark = getattr(event, "start_mark", None)
	return mark.line + 1 if mark is not None else 0


def import_rules(text: str) -> dict[str, Any]:
	"""Create or update the rules of a YAML document (`rules: [...]`), all or none: one bad rule and
	nothing changes (every error is listed)."""
	if len(text) > MAX_YAML_CHARS:
		raise alert_rules.RuleError([_("yaml: at most {0:,} characters").format(MAX_YAML_CHARS)])
	try:
		check_yaml_shape(text)
		document = yaml.load(text, Loader=_YAML_LOADER)
	except yaml.YAMLError as error:
		raise alert_rules.RuleError(
			[_("yaml: not valid YAML ({0})").format(str(error).splitlines()[0][:200])]
		) from None
	if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
		raise alert_rules.RuleError([_("yaml: must be a mapping with a list under 'rules'")])
	items = document["rules"]
	if len(items) > MAX_RULES:
		raise alert_rules.RuleError([_("yaml: at most {0} rules").format(MAX_RULES)])
	known = set(frappe.get_all(ALERT_CHANNEL, pluck="name"))
	parsed, errors, seen = [], [], set()
	for index, item in enumerate(items):
		if not isinstance(item, dict):
			errors.append(_("rules[{0}]: must be a mapping").format(index))
			continue
		try:
			rule = alert_rules.validate(item, known)
		except alert_rules.RuleError as error:
			errors += error.errors
			continue
		if rule.name in seen:
			errors.append(_("rule {0}: name: listed twice").format(repr(rule.name)))
		seen.add(rule.name)
		parsed.append(rule)
	if errors:
		raise alert_rules.RuleError(errors)
	created = updated = 0
	for rule in parsed:
		if frappe.db.exists(ALERT_RULE, rule.name):
			doc = frappe.get_doc(ALERT_RULE, rule.name)
			updated += 1
		else:
			doc = frappe.new_doc(ALERT_RULE)
			created += 1
		apply_rule(doc, rule)
		doc.save(ignore_permissions=True)
	return {"created": created, "updated": updated}


def apply_rule(doc: Any, rule: alert_rules.Rule) -> None:
	data = rule.as_dict()
	doc.rule_name = rule.name
	for key in RULE_FIELDS[1:]:
		value = data.get(key)
		if key == "labels":
			value = "\n".join(f"{k}={v}" for k, v in rule.labels)
		elif key == "group_by":
			value = ", ".join(rule.group_by)
		elif key == "enabled":
			value = 1 if rule.enabled else 0
		doc.set(key, value)
	doc.set("channels", [{"channel": channel} for channel in rule.channels])


# --- the rules shipped with the app ---------------------------------------------------------------

# thresholds are the configuration's levels ("level" comparisons), never numbers written here
SHIPPED_RULES = (
	{
		"name": "Health critical",
		"description": "The health score is at its critical level (health_critical) for 5 minutes.",
		"source": "health",
		"metric": "score",
		"comparison": "level",
		"level": "critical",
		"for_minutes": 5,
		"severity": "critical",
	},
	{
		"name": "Job lagging",
		"description": "One of the app's jobs is overdue beyond job_lag_warning_s.",
		"source": "monitor",
		"metric": "*_job_lag",
		"comparison": "level",
		"level": "warning",
		"for_minutes": 5,
		"severity": "warning",
		"group_by": ["rule"],
	},
	{
		"name": "Measurements dropped",
		"description": "The capture drops measurements beyond loss_rate_warning.",
		"source": "monitor",
		"metric": "loss_rate",
		"comparison": "level",
		"level": "warning",
		"severity": "warning",
	},
	{
		"name": "Error rate critical",
		"description": "The server error rate is at its critical level (error_rate_critical).",
		"source": "health",
		"metric": "error_rate",
		"comparison": "level",
		"level": "critical",
		"for_minutes": 5,
		"severity": "critical",
	},
	{
		"name": "Database cache hit ratio low",
		"description": "The latest database snapshot's cache hit ratio is below db_cache_hit_warning.",
		"source": "database",
		"metric": "cache_hit_ratio",
		"comparison": "level",
		"level": "warning",
		"severity": "warning",
	},
	{
		"name": "New regression",
		"description": "Detection opened a regression (one alert per operation and metric).",
		"source": "regressions",
		"metric": "",
		"comparison": ">",
		"threshold": 0,
		"severity": "warning",
	},
)


def install_shipped_rules() -> int:
	"""Create the shipped rules that do not exist (an edited or deleted one is left as it is)."""
	installed = 0
	for data in SHIPPED_RULES:
		if frappe.db.exists(ALERT_RULE, data["name"]):
			continue
		doc = frappe.new_doc(ALERT_RULE)
		apply_rule(doc, alert_rules.validate(data))
		doc.insert(ignore_permissions=True)
		installed += 1
	return installed
