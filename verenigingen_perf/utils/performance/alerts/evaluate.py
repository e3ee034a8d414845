"""The alert evaluation job (every minute): every enabled rule against what it watches, the alerts'
states moved, silences, maintenance windows and inhibition applied, and the notifications that are due
queued for delivery (delivery itself runs in background jobs: a dead receiver never slows this down).

A pass reads a fixed set of things whatever the number of rules (rules and their channels, the
sources the rules use, the open alerts, silences, maintenance windows) and writes only what changed,
plus one statement stamping every open alert as evaluated.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance import buffer, job_reports, records
from verenigingen_perf.utils.performance.alerts import delivery, sources, store
from verenigingen_perf.utils.performance.alerts import rules as alert_rules
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.schema import ALERT
from verenigingen_perf.utils.performance.timeutil import as_datetime, format_datetime


@dataclass
class EvaluationReport:
	status: str = "ok"
	rules: int = 0
	alerts_open: int = 0
	opened: int = 0
	fired: int = 0
	resolved: int = 0
	notifications: int = 0
	deliveries_queued: int = 0
	duration_s: float = 0.0
	errors: list[str] = field(default_factory=list)


ALERT_FIELDS = [
	"name",
	"rule",
	"fingerprint",
	"labels",
	"severity",
	"state",
	"value",
	"started_at",
	"fired_at",
	"resolved_at",
	"last_notified_at",
	"notified_state",
	"silenced",
	"inhibited",
]


def evaluation_job() -> dict[str, Any]:
	"""Scheduled every minute. A failure is recorded in the job's report and raised."""
	return job_reports.run_and_record(
		"alerts", run_evaluation, lambda errors: EvaluationReport(status="failed", errors=errors)
	)


def _as_state(row: dict[str, Any]) -> alert_rules.AlertState:
	return alert_rules.AlertState(
		fingerprint=row["fingerprint"],
		rule=row["rule"],
		labels=json.loads(row["labels"] or "{}"),
		severity=row["severity"],
		state=row["state"],
		started_at=as_datetime(row["started_at"]),
		value=row["value"],
		fired_at=as_datetime(row["fired_at"]) if row["fired_at"] else None,
		resolved_at=as_datetime(row["resolved_at"]) if row["resolved_at"] else None,
		last_notified_at=as_datetime(row["last_notified_at"]) if row["last_notified_at"] else None,
		notified_state=row["notified_state"] or None,
		silenced=bool(row["silenced"]),
		inhibited=bool(row["inhibited"]),
		name=row["name"],
	)


def open_alerts() -> dict[str, alert_rules.AlertState]:
	rows = frappe.get_all(
		ALERT, filters={"state": ("in", [alert_rules.PENDING, alert_rules.FIRING])}, fields=ALERT_FIELDS
	)
	return {row["fingerprint"]: _as_state(row) for row in rows}


def evaluate(
	rules: dict[str, alert_rules.Rule],
	readings: sources.Readings,
	current: dict[str, alert_rules.AlertState],
	now: datetime,
) -> list[alert_rules.AlertState]:
	"""Every alert after this pass (new, moved, and the open ones whose instance is gone: resolved)."""
	after: dict[str, alert_rules.AlertState] = {}
	for rule in rules.values():
		for observation in sources.observations(rule, readings, now):
			labels = alert_rules.instance_labels(rule, observation)
			key = alert_rules.fingerprint(labels)
			if key in after:
				continue
			state = alert_rules.step(
				rule,
				labels,
				current.get(key),
				alert_rules.breaches(rule, observation),
				observation.value,
				now,
			)
			if state is not None:
				after[key] = state
	for key, alert in current.items():
		if key not in after:
			after[key] = alert_rules.step(
				rules.get(alert.rule) or _gone(alert), alert.labels, alert, False, None, now
			)
	return list(after.values())


def _gone(alert: alert_rules.AlertState) -> alert_rules.Rule:
	"""A stand-in for a rule deleted or disabled while its alert was open: the alert resolves."""
	return alert_rules.Rule(alert.rule, "health", "score", ">", severity=alert.severity)


def apply_suppression(
	alerts: list[alert_rules.AlertState],
	silences: list[alert_rules.Silence],
	windows: list[alert_rules.MaintenanceWindow],
	now: datetime,
) -> None:
	keys = alert_rules.inhibited_keys(alerts)
	for alert in alerts:
		if alert.state == alert_rules.RESOLVED:
			continue
		silenced = alert_rules.suppressed(alert.labels, silences, windows, now)
		inhibited = alert_rules.is_inhibited(alert, keys)
		if (silenced, inhibited) != (alert.silenced, alert.inhibited):
			alert.silenced, alert.inhibited, alert.changed = silenced, inhibited, True


def run_evaluation(now: datetime | None = None) -> EvaluationReport:
	started = time.monotonic()
	report = EvaluationReport()
	config = get_config()
	with buffer.exclusive("alerts", config.retention.job_lock_timeout_s) as acquired:
		if acquired is False:
			report.status = "skipped: another evaluation is under way"
			return report
		now = now or frappe.utils.now_datetime()
		rules = store.enabled_rules()
		report.rules = len(rules)
		readings = sources.read(list(rules.values()), config, now)
		current = open_alerts()
		alerts = evaluate(rules, readings, current, now)
		apply_suppression(alerts, store.silences(now), store.maintenance_windows(), now)
		notifications = alert_rules.plan_notifications(
			rules, alerts, now, timedelta(seconds=config.alerting.group_wait_s)
		)
		for alert in alerts:
			if alert.changed:
				_save(alert, now, report)
		if current:
			frappe.db.sql(
				f"update `tab{ALERT}` set last_evaluated=%s where state in (%s, %s)",
				(format_datetime(now), alert_rules.PENDING, alert_rules.FIRING),
			)
		for notification in notifications:
			report.deliveries_queued += delivery.queue(notification, rules[notification.rule], now)
		report.notifications = len(notifications)
		report.alerts_open = sum(a.state != alert_rules.RESOLVED for a in alerts)
		frappe.db.commit()
		delivery.dispatch_due(now)
	report.duration_s = round(time.monotonic() - started, 3)
	return report


def _summary(alert: alert_rules.AlertState) -> str:
	value = "" if alert.value is None else f" = {alert.value:.4g}"
	return f"{alert.rule}: {alert.labels.get('instance', '')}{value}"[:140]


def _save(alert: alert_rules.AlertState, now: datetime, report: EvaluationReport) -> None:
	values = {
		"state": alert.state,
		"value": alert.value or 0.0,
		"fired_at": alert.fired_at,
		"resolved_at": alert.resolved_at,
		"last_notified_at": alert.last_notified_at,
		"notified_state": alert.notified_state,
		"silenced": int(alert.silenced),
		"inhibited": int(alert.inhibited),
		"last_evaluated": now,
		"summary": _summary(alert),
		"open_key": None if alert.state == alert_rules.RESOLVED else alert.fingerprint,
	}
	if alert.name is None:
		doc = frappe.get_doc(
			{
				"doctype": ALERT,
				"name": frappe.generate_hash(length=20),
				"rule": alert.rule,
				"fingerprint": alert.fingerprint,
				"labels": json.dumps(alert.labels, sort_keys=True),
				"severity": alert.severity,
				"instance": alert.labels.get("instance", "")[:140],
				"started_at": alert.started_at,
				**values,
			}
		)
		if not records.insert_once(doc):
			return  # another evaluation opened this alert a moment ago
		alert.name = doc.name
		report.opened += 1
	else:
		frappe.db.set_value(ALERT, alert.name, values, update_modified=False)
	if alert.state == alert_rules.FIRING and alert.fired_at == now:
		report.fired += 1
	if alert.state == alert_rules.RESOLVED:
		report.resolved += 1
