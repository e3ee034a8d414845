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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance import internal_errors, job_reports, records, redis_store
from verenigingen_perf.utils.performance.alerts import delivery, sources, store
from verenigingen_perf.utils.performance.alerts import rules as alert_rules
from verenigingen_perf.utils.performance.config import PerformanceConfig, get_config
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
	# rules, sources, silences and windows this pass could not evaluate and went on without
	skipped: list[str] = field(default_factory=list)


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


def alerts_to_evaluate() -> tuple[dict[str, alert_rules.AlertState], list[alert_rules.AlertState]]:
	"""The open alerts (pending or firing) by fingerprint, and the resolved ones still to be notified
	as resolved (batched into their group's next notification), in one statement."""
	rows = frappe.get_all(
		ALERT,
		or_filters={
			"state": ("in", [alert_rules.PENDING, alert_rules.FIRING]),
			"notified_state": alert_rules.FIRING,
		},
		fields=ALERT_FIELDS,
	)
	current, awaiting = {}, []
	for row in rows:
		alert = _as_state(row)
		if alert.state == alert_rules.RESOLVED:
			awaiting.append(alert)
		else:
			current[alert.fingerprint] = alert
	return current, awaiting


def evaluate(
	rules: dict[str, alert_rules.Rule],
	readings: sources.Readings,
	current: dict[str, alert_rules.AlertState],
	now: datetime,
	skipped: list[alert_rules.Skipped] | None = None,
) -> list[alert_rules.AlertState]:
	"""Every alert after this pass (new, moved, and the open ones whose instance is gone: resolved).

	A rule that cannot be evaluated (its source could not be read, or its observations fail) is
	skipped and listed in `skipped`: its open alerts stay as they are, every other rule goes on."""
	skipped = [] if skipped is None else skipped
	after: dict[str, alert_rules.AlertState] = {}
	not_evaluated = set()
	for rule in rules.values():
		if rule.source in readings.failed:
			not_evaluated.add(rule.name)
			continue
		try:
			stepped = _step_rule(rule, readings, current, now, after)
		except Exception as error:
			not_evaluated.add(rule.name)
			skipped.append(alert_rules.Skipped("rule", rule.name, error))
			continue
		after.update(stepped)
	for key, alert in current.items():
		if key in after:
			continue
		if alert.rule in not_evaluated:
			after[key] = alert
		else:
			after[key] = alert_rules.step(
				rules.get(alert.rule) or _gone(alert), alert.labels, alert, False, None, now
			)
	return list(after.values())


def _step_rule(
	rule: alert_rules.Rule,
	readings: sources.Readings,
	current: dict[str, alert_rules.AlertState],
	now: datetime,
	taken: dict[str, alert_rules.AlertState],
) -> dict[str, alert_rules.AlertState]:
	"""The states of one rule's instances after this pass (nothing of it is kept if it fails)."""
	stepped: dict[str, alert_rules.AlertState] = {}
	for observation in sources.observations(rule, readings, now):
		labels = alert_rules.instance_labels(rule, observation)
		key = alert_rules.fingerprint(labels)
		if key in taken or key in stepped:
			continue
		state = alert_rules.step(
			rule,
			labels,
			# a copy: a rule that fails half way leaves its alerts as they were
			replace(current[key]) if key in current else None,
			alert_rules.breaches(rule, observation),
			observation.value,
			now,
		)
		if state is not None:
			stepped[key] = state
	return stepped


def _gone(alert: alert_rules.AlertState) -> alert_rules.Rule:
	"""A stand-in for a rule deleted or disabled while its alert was open (the alert resolves) or
	awaiting its resolved notification (it goes nowhere: the rule's channels are gone with it)."""
	return alert_rules.Rule(alert.rule, "health", "score", ">", severity=alert.severity)


def apply_suppression(
	alerts: list[alert_rules.AlertState],
	silences: list[alert_rules.Silence],
	windows: list[alert_rules.MaintenanceWindow],
	now: datetime,
	skipped: list[alert_rules.Skipped] | None = None,
) -> None:
	active, broken = alert_rules.active_suppressions(silences, windows, now)
	if skipped is not None:
		skipped += [alert_rules.Skipped("maintenance window", name, error) for name, error in broken]
	keys = alert_rules.inhibited_keys(alerts)
	for alert in alerts:
		if alert.state == alert_rules.RESOLVED:
			continue
		silenced = alert_rules.suppressed(alert.labels, active)
		inhibited = alert_rules.is_inhibited(alert, keys)
		if (silenced, inhibited) != (alert.silenced, alert.inhibited):
			alert.silenced, alert.inhibited, alert.changed = silenced, inhibited, True


def notification_timing(config: PerformanceConfig) -> alert_rules.NotificationTiming:
	alerting = config.alerting
	return alert_rules.NotificationTiming(
		group_wait=timedelta(seconds=alerting.group_wait_s),
		group_interval=timedelta(minutes=alerting.group_interval_minutes),
		repeat_interval=timedelta(minutes=alerting.repeat_interval_minutes),
	)


def run_evaluation(now: datetime | None = None) -> EvaluationReport:
	started = time.monotonic()
	report = EvaluationReport()
	config = get_config()
	with redis_store.exclusive("alerts", config.retention.job_lock_timeout_s) as acquired:
		if acquired is False:
			report.status = "skipped: another evaluation is under way"
			return report
		now = now or frappe.utils.now_datetime()
		skipped: list[alert_rules.Skipped] = []
		rules = store.enabled_rules(skipped)
		report.rules = len(rules)
		readings = sources.read(list(rules.values()), config, now)
		skipped += [alert_rules.Skipped("source", source, error) for source, error in readings.failed.items()]
		current, awaiting = alerts_to_evaluate()
		alerts = evaluate(rules, readings, current, now, skipped) + awaiting
		apply_suppression(
			alerts, store.silences(now, skipped), store.maintenance_windows(now, skipped), now, skipped
		)
		# alerts of a rule deleted or disabled meanwhile are still planned (and go to no channel), so
		# that none waits for a notification for ever
		notified_rules = {**{a.rule: _gone(a) for a in alerts}, **rules}
		notifications = alert_rules.plan_notifications(
			notified_rules, alerts, now, notification_timing(config)
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
			report.deliveries_queued += delivery.queue(notification, notified_rules[notification.rule], now)
		report.notifications = len(notifications)
		report.alerts_open = sum(a.state != alert_rules.RESOLVED for a in alerts)
		_report_skipped(skipped, report)
		frappe.db.commit()
		delivery.dispatch_due(now)
	report.duration_s = round(time.monotonic() - started, 3)
	return report


def _report_skipped(skipped: list[alert_rules.Skipped], report: EvaluationReport) -> None:
	"""Each skipped item in the job's report, and as the app's own failure (its traceback in the Error
	Log, rate-limited, and counted: the monitor's `capture_errors_per_min`). Never raised: a bad record
	must not stop the other rules, under tests too."""
	for item in skipped:
		report.skipped.append(str(item))
		internal_errors.report(f"alerts.{item.kind}", item.error, may_raise=False)


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
