"""Alerting on a real site: rules evaluated against real measurements, alert records, deliveries to a
real local HTTP receiver (signed, retried, timed out), email and desk channels, YAML, the API."""

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import frappe
import pytest

from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.testing import query_budget
from verenigingen_perf.testing.fixtures import bench_mode
from verenigingen_perf.utils.performance import buffer, capture, config, timeutil
from verenigingen_perf.utils.performance.alerts import delivery, evaluate, store
from verenigingen_perf.utils.performance.alerts import rules as alert_rules
from verenigingen_perf.utils.performance.schema import (
	ALERT,
	ALERT_CHANNEL,
	ALERT_DELIVERY,
	ALERT_RULE,
	ALERT_RULE_CHANNEL,
	ALERT_SILENCE,
	MAINTENANCE_WINDOW,
)

API = "verenigingen_perf.api.alerts"
# 342 bytes that expand to 9^9 values: nine levels of nine aliases each
YAML_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
	f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
OP = "/api/method/test.alerts.slow"
EVALUATION_JOB = "verenigingen_perf.utils.performance.alerts.evaluate.evaluation_job"
SECRET = "s3cret-for-tests"


class Receiver:
	"""A webhook receiver on loopback: records every request; answers from `codes` (then 200), after
	`delay_s`."""

	def __init__(self) -> None:
		self.requests: list[tuple[dict, bytes]] = []
		self.codes: list[int] = []
		self.delay_s = 0.0
		receiver = self

		class Handler(BaseHTTPRequestHandler):
			def do_POST(self) -> None:
				body = self.rfile.read(int(self.headers["Content-Length"]))
				time.sleep(receiver.delay_s)
				receiver.requests.append((dict(self.headers), body))
				code = receiver.codes.pop(0) if receiver.codes else 200
				self.send_response(code)
				self.end_headers()

			def log_message(self, *args) -> None:
				pass

		self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
		self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
		threading.Thread(target=self.server.serve_forever, daemon=True).start()

	def close(self) -> None:
		self.server.shutdown()
		self.server.server_close()


@pytest.fixture
def receiver():
	server = Receiver()
	yield server
	server.close()


@pytest.fixture
def alerting(clean_slate, scheduled_jobs_paused):
	"""No alert records, test rules only (the shipped ones switched off meanwhile), a short retry; the
	site's scheduled evaluation paused (the tests evaluate on a clock of their own)."""
	shipped = frappe.get_all(ALERT_RULE, filters={"enabled": 1}, pluck="name")

	def wipe() -> None:
		frappe.db.rollback()
		for doctype in (ALERT, ALERT_DELIVERY, ALERT_SILENCE, MAINTENANCE_WINDOW):
			frappe.db.delete(doctype)
		# plain deletes: deleting documents would leave the framework's copies and feed comments
		frappe.db.delete(ALERT_RULE_CHANNEL, {"parent": ("like", "test %")})
		frappe.db.delete(ALERT_RULE, {"name": ("like", "test %")})
		frappe.db.delete(ALERT_CHANNEL, {"name": ("like", "test %")})
		frappe.db.sql("delete from `__Auth` where doctype=%s and name like 'test %%'", (ALERT_CHANNEL,))
		frappe.db.delete("Email Queue", {"message": ("like", "%test slow operation%")})
		frappe.db.delete("Notification Log", {"subject": ("like", "%test slow operation%")})
		frappe.db.commit()

	wipe()
	frappe.db.sql(f"update `tab{ALERT_RULE}` set enabled=0")
	# the receivers of these tests listen on loopback
	config.update_config({"alert_retry_base_s": 1, "alert_webhook_refuse_private_addresses": False})
	frappe.db.commit()
	with scheduled_jobs_paused(EVALUATION_JOB):
		yield
		wipe()
		for name in shipped:
			frappe.db.set_value(ALERT_RULE, name, "enabled", 1)
		frappe.db.commit()


def test_the_scheduled_evaluation_is_paused_while_a_test_evaluates_and_put_back_after(
	site, scheduled_jobs_paused
):
	job = {"method": EVALUATION_JOB}
	before = frappe.db.get_value("Scheduled Job Type", job, ["stopped", "modified"])
	assert before[0] == 0
	with scheduled_jobs_paused(EVALUATION_JOB):
		assert frappe.db.get_value("Scheduled Job Type", job, "stopped") == 1
	assert frappe.db.get_value("Scheduled Job Type", job, ["stopped", "modified"]) == before


def channel(name: str, **fields) -> str:
	doc = frappe.get_doc(
		{
			"doctype": ALERT_CHANNEL,
			"channel_name": f"test {name}",
			"timeout_s": 2,
			"max_attempts": 3,
			**fields,
		}
	)
	doc.insert(ignore_permissions=True)
	frappe.db.commit()
	return doc.name


def slow_rule(channels: list[str], **fields) -> str:
	doc = frappe.new_doc(ALERT_RULE)
	doc.update(
		{
			"rule_name": "test slow operation",
			"source": "operation",
			"metric": "p95_ms",
			"operation": "/api/method/test.alerts.*",
			"window_minutes": 5,
			"comparison": ">",
			"threshold": 100,
			"severity": "critical",
			"group_by": "rule",
			"repeat_interval_minutes": 60,
			**fields,
		}
	)
	doc.set("channels", [{"channel": c} for c in channels])
	doc.insert(ignore_permissions=True)
	frappe.db.commit()
	return doc.name


def measure(duration_ms: float, count: int = 20, operation: str = OP) -> None:
	"""Detail rows ingested just now, as the drain writes them."""
	now = timeutil.format_datetime(frappe.utils.now_datetime())
	rows = [
		buffer.detail_row(
			capture.new_id(),
			now,
			{
				"operation": operation,
				"operation_type": "api",
				"started_at": now,
				"duration_ms": duration_ms,
				"status": "ok",
				"query_count": 3,
			},
		)
		for _ in range(count)
	]
	buffer.insert_rows(rows)
	frappe.db.commit()


def deliveries() -> list[dict]:
	frappe.db.rollback()  # a fresh snapshot: the workers wrote these rows
	return frappe.get_all(
		ALERT_DELIVERY,
		fields=["channel", "status", "attempt", "notification_status", "response_code", "error"],
		order_by="attempt asc, creation asc",
	)


def test_a_rule_fires_notifies_a_signed_webhook_once_and_resolves(
	site, alerting, receiver, run_background_jobs
):
	hook = channel("hook", channel_type="webhook", url=receiver.url, webhook_format="generic", secret=SECRET)
	slow_rule([hook])
	measure(400.0)
	now = frappe.utils.now_datetime()
	first = evaluate.run_evaluation(now)
	assert (first.opened, first.fired, first.notifications) == (1, 1, 0)  # group_wait: 30 s
	second = evaluate.run_evaluation(now + timedelta(minutes=1))
	assert (second.opened, second.notifications, second.deliveries_queued) == (0, 1, 1)
	run_background_jobs()
	assert len(receiver.requests) == 1
	headers, body = receiver.requests[0]
	expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
	assert headers["X-Vperf-Signature"] == expected
	message = json.loads(body)
	assert message["status"] == "firing" and message["alerts"][0]["labels"]["operation"] == OP
	# still firing a minute later: no second notification before the repeat interval
	evaluate.run_evaluation(now + timedelta(minutes=2))
	run_background_jobs()
	assert len(receiver.requests) == 1
	alert = frappe.get_all(ALERT, fields=["state", "fired_at", "value", "open_key"])
	assert len(alert) == 1 and alert[0]["state"] == "firing" and alert[0]["value"] == 400.0
	# the measurements leave the 5-minute window: resolved, and told so
	resolved = evaluate.run_evaluation(now + timedelta(minutes=10))
	assert resolved.resolved == 1
	run_background_jobs()
	assert [json.loads(b)["status"] for _h, b in receiver.requests] == ["firing", "resolved"]
	assert frappe.db.get_value(ALERT, {"fingerprint": ("is", "set")}, ["state", "open_key"]) == (
		"resolved",
		None,
	)
	assert [d["status"] for d in deliveries()] == ["sent", "sent"]


def test_a_receiver_that_is_down_gets_retries_then_the_delivery_without_duplicate(
	site, alerting, receiver, run_background_jobs
):
	receiver.codes = [503, 502]
	hook = channel("flaky", channel_type="webhook", url=receiver.url, webhook_format="slack")
	slow_rule([hook])
	measure(400.0)
	now = frappe.utils.now_datetime()
	evaluate.run_evaluation(now)
	evaluate.run_evaluation(now + timedelta(minutes=1))
	for _ in range(3):
		run_background_jobs()
		time.sleep(2.2)  # retry_base_s 1: the next attempt is due 1 s, then 2 s later
		delivery.dispatch_due(frappe.utils.now_datetime())
	run_background_jobs()
	assert [(d["attempt"], d["status"], d["response_code"]) for d in deliveries()] == [
		(1, "failed", 503),
		(2, "failed", 502),
		(3, "sent", 200),
	]
	bodies = {body for _h, body in receiver.requests}
	assert len(receiver.requests) == 3 and len(bodies) == 1
	assert json.loads(bodies.pop())["text"].startswith("[FIRING] test slow operation")


def test_a_slow_receiver_times_out_and_is_recorded(site, alerting, receiver, run_background_jobs):
	receiver.delay_s = 3
	hook = channel(
		"slow",
		channel_type="webhook",
		url=receiver.url,
		webhook_format="pagerduty",
		timeout_s=1,
		max_attempts=1,
		secret="routing-key",
	)
	slow_rule([hook])
	measure(400.0)
	now = frappe.utils.now_datetime()
	evaluate.run_evaluation(now)
	notified = evaluate.run_evaluation(now + timedelta(minutes=1))
	# the evaluation only queued: nothing was sent in it, the delivery waits for its own job
	assert notified.deliveries_queued == 1 and receiver.requests == []
	assert [d["status"] for d in deliveries()] == ["sending"]
	run_background_jobs()
	[attempt] = deliveries()
	assert attempt["status"] == "gave up" and "DeadlineExceeded: no answer within 1 s" in attempt["error"]
	# the receiver records the request once its own (3 s) delay has passed
	deadline = time.monotonic() + 30
	while not receiver.requests and time.monotonic() < deadline:
		time.sleep(0.2)
	body = json.loads(receiver.requests[0][1])
	assert (
		body["routing_key"] == "routing-key"
		and body["event_action"] == "trigger"
		and len(body["dedup_key"]) == 32
	)


FLUSH_JOB = "frappe.email.queue.flush"


@pytest.fixture
def outgoing_email_account(site, scheduled_jobs_paused):
	"""An outgoing email account, so that Frappe queues mail, with the site's scheduled flush of the
	mail queue paused meanwhile: nothing is sent (a live bench's flush found the test's mail and left
	an Error Log). Inserted as a row: saving one checks its SMTP server."""
	name = "test alerts outbox"
	with scheduled_jobs_paused(FLUSH_JOB):
		frappe.get_doc(
			{
				"doctype": "Email Account",
				"name": name,
				"email_account_name": name,
				"email_id": "alerts@example.com",
				"enable_outgoing": 1,
				"default_outgoing": 1,
				"smtp_server": "127.0.0.1",
			}
		).db_insert()
		frappe.db.commit()
		yield name
		frappe.db.rollback()
		# the test's own mail goes before its account; mail the site queued meanwhile stays, routed
		# as the site routes it without the test's account
		own = frappe.get_all(
			"Email Queue",
			filters={"email_account": name, "message": ("like", "%test slow operation%")},
			pluck="name",
		)
		if own:
			frappe.db.delete("Email Queue Recipient", {"parent": ("in", own)})
			frappe.db.delete("Email Queue", {"name": ("in", own)})
		frappe.db.set_value("Email Queue", {"email_account": name}, "email_account", None)
		frappe.db.delete("Email Account", {"name": name})
		frappe.db.commit()


def test_a_channel_that_cannot_deliver_says_why(site, alerting, run_background_jobs):
	"""Without an outgoing email account, the email channel's attempts fail with Frappe's reason."""
	if frappe.db.exists("Email Account", {"default_outgoing": 1, "enable_outgoing": 1}):
		pytest.skip("this site has an outgoing email account")
	mail = channel("mail", channel_type="email", recipients="oncall@example.com", max_attempts=1)
	slow_rule([mail])
	measure(400.0)
	now = frappe.utils.now_datetime()
	evaluate.run_evaluation(now)
	evaluate.run_evaluation(now + timedelta(minutes=1))
	run_background_jobs()
	[attempt] = deliveries()
	assert attempt["status"] == "gave up" and "Email Account" in attempt["error"]


def test_email_and_desk_channels(site, alerting, make_user, run_background_jobs, outgoing_email_account):
	user = make_user(PERFORMANCE_MANAGER)
	mail = channel("mail", channel_type="email", recipients="oncall@example.com")
	desk = channel("desk", channel_type="desk", role=PERFORMANCE_MANAGER)
	slow_rule([mail, desk])
	measure(400.0)
	now = frappe.utils.now_datetime()
	evaluate.run_evaluation(now)
	evaluate.run_evaluation(now + timedelta(minutes=1))
	run_background_jobs()
	assert [(d["status"], d["error"]) for d in deliveries()] == [("sent", None), ("sent", None)]
	queued = frappe.get_all(
		"Email Queue", filters={"message": ("like", "%test slow operation%")}, pluck="name"
	)
	assert len(queued) == 1
	recipients = frappe.get_all("Email Queue Recipient", filters={"parent": queued[0]}, pluck="recipient")
	assert "oncall@example.com" in recipients
	logs = frappe.get_all(
		"Notification Log", filters={"subject": ("like", "%test slow operation%")}, pluck="for_user"
	)
	assert user in logs


def test_silence_holds_back_and_releases(site, alerting, receiver, run_background_jobs):
	hook = channel("hook", channel_type="webhook", url=receiver.url)
	slow_rule([hook])
	measure(400.0)
	now = frappe.utils.now_datetime()
	frappe.get_doc(
		{
			"doctype": ALERT_SILENCE,
			"matchers": "rule=test slow*",
			"starts_at": now - timedelta(minutes=1),
			"ends_at": now + timedelta(minutes=2),
			"reason": "deploy",
		}
	).insert(ignore_permissions=True)
	frappe.db.commit()
	evaluate.run_evaluation(now)
	evaluate.run_evaluation(now + timedelta(minutes=1))
	assert frappe.db.get_value(ALERT, {"state": "firing"}, "silenced") == 1 and deliveries() == []
	evaluate.run_evaluation(now + timedelta(minutes=3))
	run_background_jobs()
	assert frappe.db.get_value(ALERT, {"state": "firing"}, "silenced") == 0
	assert [json.loads(b)["status"] for _h, b in receiver.requests] == ["firing"]


def test_one_pass_reads_the_same_whatever_the_number_of_rules(site, alerting):
	measure(400.0)
	now = frappe.utils.now_datetime()
	for i in range(3):
		slow_rule([], rule_name=f"test rule {i}", threshold=100 + i)
	evaluate.run_evaluation(now)  # warm caches; opens the alerts
	with query_budget(40, maximum=True) as few:
		evaluate.run_evaluation(now + timedelta(seconds=5))
	for i in range(3, 30):
		slow_rule([], rule_name=f"test rule {i}", threshold=100 + i)
	evaluate.run_evaluation(now + timedelta(seconds=10))
	with query_budget(40, maximum=True) as many:
		evaluate.run_evaluation(now + timedelta(seconds=15))
	assert many.count == few.count


def test_yaml_round_trip_and_a_bad_import_changes_nothing(site, alerting):
	hook = channel("hook", channel_type="webhook", url="https://example.invalid/hook")
	slow_rule([hook], labels="team=members")
	text = store.export_rules()
	assert "test slow operation" in text and "team: members" in text
	frappe.db.set_value(ALERT_RULE, "test slow operation", "threshold", 999)
	frappe.db.commit()
	assert store.import_rules(text)["updated"] >= 1
	frappe.db.commit()
	assert frappe.db.get_value(ALERT_RULE, "test slow operation", "threshold") == 100
	bad = text.replace("threshold: 100.0", "threshold: 55.0") + (
		"- name: test broken\n  source: operation\n  metric: p42\n"
	)
	from verenigingen_perf.utils.performance.alerts import rules

	with pytest.raises(rules.RuleError) as raised:
		store.import_rules(bad)
	frappe.db.rollback()
	assert "rule 'test broken': metric" in str(raised.value)
	assert frappe.db.get_value(ALERT_RULE, "test slow operation", "threshold") == 100
	assert not frappe.db.exists(ALERT_RULE, "test broken")


def test_shipped_rules_exist_and_thresholds_come_from_the_configuration(site):
	shipped = {rule["name"]: rule for rule in store.SHIPPED_RULES}
	stored = frappe.get_all(
		ALERT_RULE, filters={"name": ("in", list(shipped))}, fields=["name", "comparison", "threshold"]
	)
	assert {row["name"] for row in stored} == set(shipped)
	# every shipped threshold is the configuration's level, or "any open regression"
	assert all(
		row["comparison"] == "level" or (row["comparison"], row["threshold"]) == (">", 0) for row in stored
	)
	assert store.install_shipped_rules() == 0  # never twice


def test_alert_api_permissions_and_bad_input(site, alerting, http, make_user):
	hook = channel("hook", channel_type="webhook", url="https://example.invalid/hook")
	slow_rule([hook])
	allowed = {
		"Performance Manager": http(make_user(PERFORMANCE_MANAGER)),
		"Administrator": http("Administrator"),
	}
	refused = {"plain user": http(make_user()), "Guest": http(None)}
	calls = {
		"list_alerts": {},
		"acknowledge_alert": {"name": "x"},
		"create_silence": {"matchers": "rule=x", "reason": "r", "ends_at": "2999-01-01 00:00:00"},
		"test_rule": {"name": "test slow operation"},
		"export_rules": {},
		"import_rules": {"yaml_text": "rules: []"},
	}
	for who, client in refused.items():
		for method, params in calls.items():
			response = client.call(f"{API}.{method}", **params)
			assert response.status_code == 403, (who, method, response.status_code)
			assert "Traceback" not in response.text
	manager = allowed["Performance Manager"]
	assert manager.call(f"{API}.import_rules", yaml_text="rules: []").status_code == 403
	tried = manager.call(f"{API}.test_rule", name="test slow operation").json()["message"]
	assert tried["valid"] is True and tried["instances"] == []
	assert "test slow operation" in manager.call(f"{API}.export_rules").json()["message"]["yaml"]
	admin = allowed["Administrator"]
	bad = [
		("list_alerts", {"state": "burning"}, "state: must be one of"),
		("list_alerts", {"limit": "0"}, "limit: must be a whole number"),
		("acknowledge_alert", {"name": ""}, "name: must not be empty"),
		(
			"create_silence",
			{"matchers": "", "reason": "r", "ends_at": "2999-01-01 00:00:00"},
			"matchers: must not be empty",
		),
		("create_silence", {"matchers": "rule=x", "reason": "r"}, "ends_at: must be given"),
		(
			"create_silence",
			{"matchers": "rule=x", "reason": "r", "ends_at": "soon"},
			"ends_at: must be a date",
		),
		(
			"create_silence",
			{"matchers": "rule", "reason": "r", "ends_at": "2999-01-01 00:00:00"},
			"line 1 must be name=value",
		),
		(
			"create_silence",
			{"matchers": "rule=x", "reason": "r", "ends_at": "2000-01-01 00:00:00"},
			"ends_at: must be after starts_at",
		),
		("import_rules", {"yaml_text": "rules: [1"}, "yaml: not valid YAML"),
		("import_rules", {"yaml_text": "- a"}, "yaml: must be a mapping"),
		("import_rules", {"yaml_text": YAML_BOMB}, "yaml: anchors and aliases"),
		("import_rules", {"yaml_text": "rules: " + "[" * 100_000}, "yaml: "),
		("test_rule", {"name": "no such rule"}, "no alert rule is named"),
		("test_rule", {"name": "test slow\x01operation"}, "name: must not contain control characters"),
		("acknowledge_alert", {"name": "a\x00b"}, "name: must not contain control characters"),
		("acknowledge_alert", {"name": "x" * 141}, "name: at most 140 characters"),
	]
	for method, params, rule_text in bad:
		response = admin.call(f"{API}.{method}", **params)
		assert response.status_code in (404, 417) and rule_text in response.text, (
			method,
			params,
			response.text[:300],
		)
	frappe.db.rollback()
	assert frappe.db.count(ALERT_SILENCE) == 0
	ends = timeutil.format_datetime(frappe.utils.now_datetime() + timedelta(hours=2))
	made = admin.call(
		f"{API}.create_silence", matchers="rule=test slow operation", reason="deploy", ends_at=ends
	)
	assert made.status_code == 200 and made.json()["message"]["reason"] == "deploy"


def test_rules_on_regressions_and_on_the_monitors_levels(site, alerting):
	from verenigingen_perf.utils.performance import job_reports
	from verenigingen_perf.utils.performance.schema import REGRESSION

	frappe.get_doc(
		{
			"doctype": REGRESSION,
			"operation": OP,
			"metric": "duration_p95",
			"status": "open",
			"change_value": 0.4,
		}
	).insert(ignore_permissions=True)
	slow_rule(
		[],
		rule_name="test new regression",
		source="regressions",
		metric="",
		operation="",
		comparison=">",
		threshold=0,
	)
	# the monitor's last sample says the drain is critically late: a level rule fires on it
	job_reports.record(
		"monitor",
		{
			"signals": [
				{"name": "drain_job_lag", "value": 4000.0, "level": "critical"},
				{"name": "rollup_job_lag", "value": 0.0, "level": "healthy"},
			]
		},
	)
	slow_rule(
		[],
		rule_name="test job lag",
		source="monitor",
		metric="*_job_lag",
		operation="",
		comparison="level",
		level="warning",
	)
	evaluate.run_evaluation(frappe.utils.now_datetime())
	firing = frappe.get_all(
		ALERT, filters={"state": "firing"}, fields=["rule", "instance", "value", "labels"]
	)
	by_rule = {row["rule"]: row for row in firing}
	assert set(by_rule) == {"test new regression", "test job lag"}
	assert json.loads(by_rule["test new regression"]["labels"])["operation"] == OP
	assert (
		by_rule["test job lag"]["instance"] == "drain_job_lag" and by_rule["test job lag"]["value"] == 4000.0
	)
	frappe.db.delete(REGRESSION)
	frappe.db.commit()


def test_two_evaluations_at_once_open_one_alert(site, alerting, in_threads):
	slow_rule([])
	measure(400.0)
	now = frappe.utils.now_datetime()
	in_threads(lambda: evaluate.run_evaluation(now), count=2)
	frappe.db.rollback()
	assert frappe.db.count(ALERT, {"rule": "test slow operation"}) == 1


def test_an_attempt_whose_worker_was_lost_is_failed_and_retried(
	site, alerting, receiver, run_background_jobs
):
	hook = channel("lost", channel_type="webhook", url=receiver.url)
	now = frappe.utils.now_datetime()
	# an attempt claimed by a dispatcher whose worker died: "sending", and no job for it anywhere
	notification = alert_rules.Notification(
		"test slow operation", (("rule", "test slow operation"),), "firing", []
	)
	frappe.get_doc(
		{
			"doctype": ALERT_DELIVERY,
			"name": "test-lost-attempt",
			"notification": notification.key,
			"notification_status": "firing",
			"channel": hook,
			"status": "sending",
			"attempt": 1,
			"next_attempt_at": now,
			"payload": json.dumps({"text": "lost", "status": "firing"}),
		}
	).db_insert()
	frappe.db.commit()
	delivery.dispatch_due(now + timedelta(minutes=30))
	assert [d["status"] for d in deliveries()] == ["sending"]  # not lost yet
	delivery.dispatch_due(now + delivery.LOST_AFTER + timedelta(minutes=2))
	# the next attempt waits its back-off, then goes
	delivery.dispatch_due(now + delivery.LOST_AFTER + timedelta(minutes=3))
	run_background_jobs()
	assert [(d["attempt"], d["status"]) for d in deliveries()] == [(1, "failed"), (2, "sent")]
	assert "worker of this attempt was lost" in deliveries()[0]["error"]
	assert len(receiver.requests) == 1


def test_a_late_worker_that_delivers_after_all_cancels_the_retry(site, alerting, receiver):
	hook = channel("late", channel_type="webhook", url=receiver.url)
	now = frappe.utils.now_datetime()
	notification = alert_rules.Notification(
		"test slow operation", (("rule", "test slow operation"),), "firing", []
	)
	rule = alert_rules.Rule("test slow operation", "operation", "p95_ms", ">", channels=(hook,))
	delivery.queue(notification, rule, now)
	frappe.db.sql(f"update `tab{ALERT_DELIVERY}` set status='sending'")
	frappe.db.commit()
	[first] = frappe.get_all(ALERT_DELIVERY, pluck="name")
	# given up as lost (its retry queued) while its worker was in fact still sending
	delivery.dispatch_due(now + delivery.LOST_AFTER + timedelta(minutes=2))
	frappe.db.set_value(ALERT_DELIVERY, first, "status", "sending")
	frappe.db.commit()
	assert delivery.deliver(first) == "sent"
	assert [(d["attempt"], d["status"]) for d in deliveries()] == [(1, "sent"), (2, "gave up")]
	assert delivery.deliver(first) == "not claimed"  # a second run of the same job sends nothing
	assert len(receiver.requests) == 1


def test_a_maintenance_window_holds_back_while_it_lasts(site, alerting, receiver, run_background_jobs):
	hook = channel("hook", channel_type="webhook", url=receiver.url)
	slow_rule([hook])
	measure(400.0)
	now = frappe.utils.now_datetime().replace(second=0, microsecond=0)
	# every day at this minute, for 3 minutes
	frappe.get_doc(
		{
			"doctype": MAINTENANCE_WINDOW,
			"window_name": "test nightly deploy",
			"cron": f"{now.minute} {now.hour} * * *",
			"duration_minutes": 3,
			"matchers": "severity=critical",
		}
	).insert(ignore_permissions=True)
	frappe.db.commit()
	evaluate.run_evaluation(now + timedelta(seconds=10))
	evaluate.run_evaluation(now + timedelta(minutes=1, seconds=10))
	assert frappe.db.get_value(ALERT, {"state": "firing"}, "silenced") == 1 and deliveries() == []
	evaluate.run_evaluation(now + timedelta(minutes=3, seconds=10))  # the window is over
	run_background_jobs()
	assert [json.loads(b)["status"] for _h, b in receiver.requests] == ["firing"]


def test_an_operation_rule_over_hours_reads_the_merged_hourly_sketches(site, alerting):
	from verenigingen_perf.utils.performance import rollup
	from verenigingen_perf.utils.performance.sketch import Summary

	now = frappe.utils.now_datetime()
	hour = now.replace(minute=0, second=0, microsecond=0)
	summaries = {}
	for back, duration in ((1, 380.0), (2, 400.0), (3, 420.0), (5, 5000.0)):  # 5 h ago: outside
		summary = Summary()
		summary.add_many([duration] * 50, 0, [3] * 50, [1.0] * 50, [0.0] * 50)
		summaries[("api", OP, hour - timedelta(hours=back))] = summary
	rollup.merge_into_aggregates("hour", summaries)
	frappe.db.commit()
	slow_rule([], window_minutes=180, metric="p99_ms", threshold=415)
	evaluate.run_evaluation(now)
	alert = frappe.get_all(
		ALERT, filters={"rule": "test slow operation"}, fields=["state", "value", "instance"]
	)
	assert len(alert) == 1 and alert[0]["state"] == "firing" and alert[0]["instance"] == OP
	assert alert[0]["value"] == pytest.approx(420.0, rel=0.01)


def measure_at(moment, operation: str, duration_ms: float = 400.0, count: int = 5) -> None:
	"""Detail rows ingested at `moment` (the evaluation reads them by ingestion time)."""
	stamp = timeutil.format_datetime(moment)
	values = {
		"operation": operation,
		"operation_type": "api",
		"started_at": stamp,
		"duration_ms": duration_ms,
		"status": "ok",
		"query_count": 3,
	}
	buffer.insert_rows([buffer.detail_row(capture.new_id(), stamp, values) for _ in range(count)])
	frappe.db.commit()


def test_a_storm_that_arrives_over_time_notifies_each_group_once_per_group_interval(site, alerting):
	"""Two rules (groups) whose operations start breaching one after another over 20 minutes, an
	evaluation a minute: each group is notified at most once per group interval (5 minutes), the
	alerts resolved together go out in the group's next notification, and no alert is left
	unnotified."""
	start = frappe.utils.now_datetime().replace(second=0, microsecond=0)
	for group in ("a", "b"):
		slow_rule(
			[],
			rule_name=f"test storm {group}",
			operation=f"/api/method/test.storm.{group}*",
			window_minutes=30,
		)
	notifications = []
	for minute in range(20):
		now = start + timedelta(minutes=minute)
		for group in ("a", "b"):
			measure_at(now, f"/api/method/test.storm.{group}{minute:02d}")
		report = evaluate.run_evaluation(now + timedelta(seconds=5))
		notifications += [minute] * report.notifications
	firing = frappe.get_all(ALERT, filters={"state": "firing"}, fields=["notified_state", "rule"])
	assert len(firing) == 40
	# notified as firing at 0:35 (group wait), then at most once every 5 minutes per group
	assert len(notifications) <= 2 * (20 // 5 + 1)
	# the last ones wait at most a group interval: every alert has been notified as firing
	for minute in range(20, 26):
		evaluate.run_evaluation(start + timedelta(minutes=minute, seconds=5))
	assert frappe.db.count(ALERT, {"state": "firing", "notified_state": "firing"}) == 40
	# the measurements leave the 30-minute window: all resolve, told in one notification per group
	resolved = [evaluate.run_evaluation(start + timedelta(minutes=m, seconds=5)) for m in range(60, 66)]
	assert sum(r.resolved for r in resolved) == 40 and sum(r.notifications for r in resolved) == 2
	assert frappe.db.count(ALERT, {"state": "resolved", "notified_state": "resolved"}) == 40


def test_a_record_that_cannot_be_evaluated_is_skipped_and_the_others_still_alert(
	site, alerting, receiver, run_background_jobs, planted_failures
):
	"""A maintenance window on 30 February, a silence and a rule stored broken, and a database snapshot
	that cannot be read: each is skipped and reported (counted among the app's own failures), and the
	other rule fires and notifies."""
	from verenigingen_perf.utils.performance import internal_errors
	from verenigingen_perf.utils.performance.schema import DATABASE_SNAPSHOT

	hook = channel("hook", channel_type="webhook", url=receiver.url)
	slow_rule([hook])
	now = frappe.utils.now_datetime()
	with pytest.raises(frappe.ValidationError, match="does not start within a year"):
		frappe.get_doc(
			{
				"doctype": MAINTENANCE_WINDOW,
				"window_name": "test never",
				"cron": "0 0 30 2 *",
				"duration_minutes": 60,
				"matchers": "severity=critical",
			}
		).insert(ignore_permissions=True)
	# stored before the check existed, or edited in the database
	for doctype, fields in (
		(
			MAINTENANCE_WINDOW,
			{
				"window_name": "test never",
				"cron": "0 0 30 2 *",
				"duration_minutes": 60,
				"enabled": 1,
				"matchers": "severity=critical",
			},
		),
		(
			ALERT_SILENCE,
			{
				"starts_at": now - timedelta(hours=1),
				"ends_at": now + timedelta(hours=1),
				"matchers": "no label here",
				"reason": "test",
			},
		),
		(ALERT_RULE, {"rule_name": "test broken", "source": "operation", "metric": "p42", "enabled": 1}),
		(
			ALERT_RULE,
			{
				"rule_name": "test database",
				"source": "database",
				"metric": "total_mb",
				"comparison": ">",
				"window_minutes": 5,
				"enabled": 1,
			},
		),
		(
			DATABASE_SNAPSHOT,
			{"taken_at": now + timedelta(days=1), "db_type": frappe.db.db_type, "snapshot": "{not json"},
		),
	):
		frappe.get_doc({"doctype": doctype, **fields}).db_insert()
	frappe.db.commit()
	internal_errors.reset_rate_limit()
	errors_before = buffer.state().capture_errors
	try:
		measure(400.0)
		first = evaluate.run_evaluation(now)
		second = evaluate.run_evaluation(now + timedelta(minutes=1))
		run_background_jobs()
	finally:
		frappe.db.delete(DATABASE_SNAPSHOT, {"snapshot": "{not json"})
		frappe.db.commit()
	kinds = sorted(item.split(" '")[0] for item in first.skipped)
	assert kinds == ["maintenance window", "rule", "silence", "source"]
	assert any("30 2" in item for item in first.skipped)
	counted = buffer.state().capture_errors - errors_before
	if bench_mode():
		# a bench's scheduler evaluates the site's rules too (every minute), skipping the same records
		assert counted >= 2 * len(first.skipped) and counted % len(first.skipped) == 0, counted
	else:
		assert counted == 2 * len(first.skipped)
	assert (first.fired, second.notifications) == (1, 1) and first.status == second.status == "ok"
	assert [json.loads(b)["status"] for _h, b in receiver.requests] == ["firing"]
	internal_errors.reset_rate_limit()
