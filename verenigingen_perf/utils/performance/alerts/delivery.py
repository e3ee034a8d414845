"""Delivering notifications: one Performance Alert Delivery row per notification, channel and attempt.

The evaluation queues a row per channel (`queue`) and `dispatch_due` hands each due row to a background
job of its own (`deliver`), so a slow or dead receiver holds up only itself. A failed attempt is
recorded with its response code or error, and the next attempt is queued `retry_base_s` later, doubled
at every attempt, until the channel's `max_attempts`; then the row says "gave up". The body is built
when the notification is queued, so every attempt sends the same bytes (PagerDuty de-duplicates on the
alert's fingerprint; generic receivers get the notification's key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime, timedelta
from typing import Any

import frappe

from verenigingen_perf.utils.performance.alerts import rules as alert_rules
from verenigingen_perf.utils.performance.alerts import transport
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.schema import ALERT_CHANNEL, ALERT_DELIVERY, METRICS_USER

QUEUED, SENDING, SENT, FAILED, GAVE_UP = "queued", "sending", "sent", "failed", "gave up"
SIGNATURE_HEADER = "X-Vperf-Signature"
_ERROR_CHARS = 500


def _alert_view(alert: alert_rules.AlertState) -> dict[str, Any]:
	return {
		"fingerprint": alert.fingerprint,
		"name": alert.name,
		"rule": alert.rule,
		"severity": alert.severity,
		"state": alert.state,
		"labels": alert.labels,
		"value": alert.value,
		"started_at": str(alert.started_at),
		"fired_at": str(alert.fired_at) if alert.fired_at else None,
		"resolved_at": str(alert.resolved_at) if alert.resolved_at else None,
	}


def message(notification: alert_rules.Notification) -> dict[str, Any]:
	"""The notification as every channel renders it: its firing alerts, then the ones resolved since
	the group's previous notification."""
	lines = [
		f"- {a.labels.get('instance', '')}: {a.severity}, {a.state}"
		+ ("" if a.value is None else f", value {a.value:.4g}")
		for a in notification.alerts
	]
	counts = ", ".join(
		f"{len(alerts)} {state}"
		for state, alerts in (
			(alert_rules.FIRING, notification.firing),
			(alert_rules.RESOLVED, notification.resolved),
		)
		if alerts
	)
	title = f"[{notification.status.upper()}] {notification.rule} ({counts}) on {frappe.local.site}"
	return {
		"version": 1,
		"key": notification.key,
		"site": frappe.local.site,
		"status": notification.status,
		"rule": notification.rule,
		"group": dict(notification.group),
		"title": title,
		"text": "\n".join([title, *lines]),
		"alerts": [_alert_view(a) for a in notification.alerts],
	}


def queue(notification: alert_rules.Notification, rule: alert_rules.Rule, now: datetime) -> int:
	"""A queued delivery row per enabled channel of the rule (inside the evaluation's transaction)."""
	if not rule.channels:
		return 0
	enabled = set(
		frappe.get_all(
			ALERT_CHANNEL, filters={"name": ("in", list(rule.channels)), "enabled": 1}, pluck="name"
		)
	)
	body = json.dumps(message(notification), default=str)
	names = ", ".join(a.name or "" for a in notification.alerts)[:10_000]
	queued = 0
	for channel in rule.channels:
		if channel not in enabled:
			continue
		frappe.get_doc(
			{
				"doctype": ALERT_DELIVERY,
				"name": frappe.generate_hash(length=20),
				"notification": notification.key,
				"notification_status": notification.status,
				"channel": channel,
				"status": QUEUED,
				"attempt": 1,
				"next_attempt_at": now,
				"alerts": names,
				"payload": body,
			}
		).db_insert()
		queued += 1
	return queued


def dispatch_due(now: datetime) -> int:
	"""Hand every due queued delivery to a background job of its own. Each is claimed first with a
	token of this dispatcher (an UPDATE only one dispatcher's row can match), so that two dispatchers
	never send one twice. An attempt whose worker died without an outcome is failed, and retried,
	once it is `LOST_AFTER` old."""
	_fail_lost(now)
	due = frappe.get_all(
		ALERT_DELIVERY, filters={"status": QUEUED, "next_attempt_at": ("<=", now)}, pluck="name", limit=1000
	)
	sent = 0
	for name in due:
		if not claim(name):
			continue
		frappe.enqueue(
			"verenigingen_perf.utils.performance.alerts.delivery.deliver",
			queue="short",
			delivery=name,
			enqueue_after_commit=False,
		)
		sent += 1
	return sent


def claim(delivery: str) -> bool:
	"""Claim a queued delivery for one attempt (committed): True for the one caller whose token the
	row then holds, False for every other (another dispatcher claimed it first)."""
	token = frappe.generate_hash(length=16)
	frappe.db.sql(
		f"update `tab{ALERT_DELIVERY}` set status=%s, claim=%s where name=%s and status=%s",
		(SENDING, token, delivery, QUEUED),
	)
	frappe.db.commit()
	return frappe.db.get_value(ALERT_DELIVERY, delivery, "claim") == token


# an attempt has its channel's timeout (at most a minute) per request; one still "sending" an hour
# after it was due lost its worker
LOST_AFTER = timedelta(hours=1)


def _fail_lost(now: datetime) -> None:
	lost = frappe.get_all(
		ALERT_DELIVERY,
		filters={"status": SENDING, "next_attempt_at": ("<", now - LOST_AFTER)},
		fields=["name", "channel", "attempt", "payload", "notification", "notification_status", "alerts"],
		limit=1000,
	)
	for row in lost:
		channel = frappe.get_doc(ALERT_CHANNEL, row["channel"])
		_failed(row, channel, now, None, "no outcome: the worker of this attempt was lost")


def deliver(delivery: str) -> str:
	"""One attempt (a background job): send, record the outcome, queue the next attempt on failure.
	Only an attempt still "sending" (claimed by `dispatch_due`) is sent. One that succeeds after it
	was given up as lost still counts: it is recorded as sent, and the retry queued for it is
	cancelled, so that the notification does not go out twice."""
	row = frappe.db.get_value(
		ALERT_DELIVERY,
		delivery,
		["name", "channel", "attempt", "payload", "notification", "notification_status", "alerts", "status"],
		as_dict=True,
	)
	if row is None:
		return "missing"
	if row["status"] != SENDING:
		return "not claimed"
	channel = frappe.get_doc(ALERT_CHANNEL, row["channel"])
	payload = json.loads(row["payload"])
	now = frappe.utils.now_datetime()
	try:
		code = _send(channel, payload)
	except Exception as error:
		_failed(row, channel, now, None, f"{type(error).__name__}: {error}")
		return FAILED
	if code is not None and not 200 <= code < 300:
		_failed(row, channel, now, code, f"HTTP {code}")
		return FAILED
	frappe.db.set_value(
		ALERT_DELIVERY, delivery, {"status": SENT, "sent_at": now, "response_code": code or 0}
	)
	frappe.db.sql(
		f"""update `tab{ALERT_DELIVERY}` set status=%s, error=%s
		where notification=%s and channel=%s and attempt>%s and status=%s""",
		(
			GAVE_UP,
			f"attempt {row['attempt']} was delivered after all",
			row["notification"],
			row["channel"],
			row["attempt"],
			QUEUED,
		),
	)
	frappe.db.commit()
	return SENT


def _failed(row: dict[str, Any], channel: Any, now: datetime, code: int | None, error: str) -> None:
	attempt = int(row["attempt"])
	final = attempt >= int(channel.max_attempts or 1)
	frappe.db.set_value(
		ALERT_DELIVERY,
		row["name"],
		{"status": GAVE_UP if final else FAILED, "response_code": code or 0, "error": error[:_ERROR_CHARS]},
	)
	if not final:
		delay = get_config().alerting.retry_base_s * 2 ** (attempt - 1)
		frappe.get_doc(
			{
				"doctype": ALERT_DELIVERY,
				"name": frappe.generate_hash(length=20),
				"notification": row["notification"],
				"notification_status": row["notification_status"],
				"channel": row["channel"],
				"status": QUEUED,
				"attempt": attempt + 1,
				"next_attempt_at": now + timedelta(seconds=delay),
				"alerts": row["alerts"],
				"payload": row["payload"],
			}
		).db_insert()
	frappe.db.commit()


def _send(channel: Any, payload: dict[str, Any]) -> int | None:
	if channel.channel_type == "desk":
		_desk(channel, payload)
		return None
	if channel.channel_type == "email":
		_email(channel, payload)
		return None
	return _webhook(channel, payload)


def role_users(role: str) -> list[str]:
	"""The enabled users of a role who read notifications (not the app's metrics user: nobody reads
	its bell or its mail)."""
	users = frappe.get_all(
		"User",
		filters={
			"enabled": 1,
			"name": (
				"in",
				frappe.get_all("Has Role", filters={"role": role, "parenttype": "User"}, pluck="parent"),
			),
		},
		pluck="name",
	)
	return [user for user in users if user != METRICS_USER]


def _desk(channel: Any, payload: dict[str, Any]) -> None:
	for user in role_users(channel.role):
		frappe.get_doc(
			{
				"doctype": "Notification Log",
				"for_user": user,
				"type": "Alert",
				"subject": payload["title"][:140],
				"email_content": frappe.utils.escape_html(payload["text"]).replace("\n", "<br>"),
			}
		).insert(ignore_permissions=True)


def _email(channel: Any, payload: dict[str, Any]) -> None:
	recipients = [r.strip(", ") for r in (channel.recipients or "").split() if r.strip(", ")]
	if channel.role:
		recipients += [u for u in role_users(channel.role) if u not in ("Administrator", "Guest")]
	recipients = list(dict.fromkeys(recipients))
	if not recipients:
		raise ValueError("no recipient: the role has no enabled users and no address is listed")
	frappe.sendmail(
		recipients=recipients,
		subject=payload["title"],
		message=frappe.utils.escape_html(payload["text"]).replace("\n", "<br>"),
		delayed=True,
	)


def webhook_bodies(channel_format: str, payload: dict[str, Any], secret: str | None) -> list[dict[str, Any]]:
	if channel_format == "slack":
		return [{"text": payload["text"]}]
	if channel_format == "pagerduty":
		return [
			{
				"routing_key": secret or "",
				"event_action": "trigger" if alert["state"] == alert_rules.FIRING else "resolve",
				"dedup_key": alert["fingerprint"],
				"payload": {
					"summary": f"{alert['rule']}: {alert['labels'].get('instance', '')}"[:1024],
					"source": payload["site"],
					"severity": "critical" if alert["severity"] == "critical" else "warning",
					"custom_details": {"labels": alert["labels"], "value": alert["value"]},
				},
			}
			for alert in payload["alerts"]
		]
	return [payload]


def signature(secret: str, body: bytes) -> str:
	return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _webhook(channel: Any, payload: dict[str, Any]) -> int:
	"""Every body of the notification (PagerDuty: one per alert), all within the channel's
	`timeout_s` of wall clock (transport.post)."""
	secret = channel.get_password("secret", raise_exception=False) if channel.secret else None
	refuse_private = get_config().alerting.webhook_refuse_private_addresses
	deadline = time.monotonic() + channel.timeout_s
	code = 0
	for body in webhook_bodies(channel.webhook_format, payload, secret):
		data = json.dumps(body, sort_keys=True).encode()
		headers = {"Content-Type": "application/json"}
		if secret and channel.webhook_format != "pagerduty":
			headers[SIGNATURE_HEADER] = signature(secret, data)
		code = transport.post(channel.url, data, headers, channel.timeout_s, refuse_private, deadline)
		if not 200 <= code < 300:
			return code
	return code
