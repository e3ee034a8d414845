"""Alerting benchmark: one evaluation pass of 1,000 enabled rules over 500 operations with 10,000
existing alerts (time and statements), how many notifications 500 alerts make in 10 groups when they
fire at once and when they start firing over 50 minutes, and how fast one worker delivers to a local
webhook receiver.

- The site gets detail rows of 500 operations (the last minutes), 10,000 resolved alerts of earlier
  episodes, and 1,000 operation rules (p95 of one operation each, two rules per operation, thresholds
  the measurements breach for a tenth of the rules). `eval_ms_p95` is the p95 of `--passes` passes in
  the steady state; `eval_statements` the statements of one pass, also measured with 100 rules to show
  that the count does not grow with the rules.
- 10 rules each match 50 operations (a glob) with `group_by: rule`: 500 alerts fire at once;
  `notifications_for_500_firing` counts the notifications planned after the group wait.
- The staggered storm: the same 10 rules, but the operations start being slow one after another,
  ten a minute (one per group) over 50 minutes, an evaluation every minute (the site's defaults:
  30 s group wait, 5 minutes group interval); `notifications_for_staggered_storm` counts the
  notifications of those 50 minutes (bound: 10 x (50 / 5 + 1) = 110), and `storm_alerts_notified`
  the alerts notified as firing once the last group interval has passed (must be all 500).
- `deliveries_per_s`: `--deliveries` queued deliveries, each claimed as the dispatcher claims it and
  sent one after another by one worker to a webhook receiver on loopback (signed, generic JSON).

Every timed piece of work is checked to have happened (the alerts fired, every delivery was sent and
received, the storm's alerts were all notified); the script exits with status 1 when one was not.

Destructive on the dev site's alert and detail tables; the shipped rules are switched off meanwhile
and back on after, and webhooks to loopback are allowed meanwhile. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import connect_site, percentile

PREFIX = "/api/method/bench.alerts."
STORM_GROUPS, STORM_MINUTES = 10, 50


def slow_values(operation: int, stamp: str) -> dict:
	return {
		"operation": f"{PREFIX}op_{operation:03d}",
		"operation_type": "api",
		"started_at": stamp,
		"status": "ok",
		"query_count": 5,
	}


def receiver() -> tuple[ThreadingHTTPServer, str, list[int]]:
	received: list[int] = []

	class Handler(BaseHTTPRequestHandler):
		def do_POST(self) -> None:
			self.rfile.read(int(self.headers["Content-Length"]))
			received.append(1)
			self.send_response(200)
			self.end_headers()

		def log_message(self, *args) -> None:
			pass

	server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
	threading.Thread(target=server.serve_forever, daemon=True).start()
	return server, f"http://127.0.0.1:{server.server_address[1]}/hook", received


def wipe(frappe, schema) -> None:
	frappe.db.rollback()
	for doctype in (
		schema.ALERT,
		schema.ALERT_DELIVERY,
		schema.ALERT_SILENCE,
		schema.MAINTENANCE_WINDOW,
		schema.METRIC,
	):
		frappe.db.delete(doctype)
	frappe.db.delete(schema.ALERT_RULE_CHANNEL, {"parent": ("like", "bench %")})
	frappe.db.delete(schema.ALERT_RULE, {"name": ("like", "bench %")})
	frappe.db.delete(schema.ALERT_CHANNEL, {"name": ("like", "bench %")})
	frappe.db.commit()


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--db", default="sqlite", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--rules", type=int, default=1000)
	# the grouping part assumes 500 operations (10 groups of 50)
	parser.add_argument("--operations", type=int, default=500, choices=(500,))
	parser.add_argument("--existing-alerts", type=int, default=10_000)
	parser.add_argument("--passes", type=int, default=20)
	parser.add_argument("--deliveries", type=int, default=200)
	args = parser.parse_args()
	connect_site(args.db)
	import frappe

	from verenigingen_perf.testing import query_budget
	from verenigingen_perf.utils.performance import buffer, capture, config, schema, timeutil
	from verenigingen_perf.utils.performance.alerts import delivery, evaluate
	from verenigingen_perf.utils.performance.alerts import rules as alert_rules

	shipped = frappe.get_all(schema.ALERT_RULE, filters={"enabled": 1}, pluck="name")
	wipe(frappe, schema)
	# the receiver listens on loopback
	stored_before = (
		frappe.db.get_single_value(schema.SETTINGS, "alert_webhook_refuse_private_addresses") or ""
	)
	config.update_config({"alert_webhook_refuse_private_addresses": False})
	frappe.db.sql(f"update `tab{schema.ALERT_RULE}` set enabled=0")
	rng = np.random.default_rng(5)
	now = frappe.utils.now_datetime()
	stamp = timeutil.format_datetime(now)
	rows = []
	for i in range(args.operations):
		for duration in rng.lognormal(np.log(50), 0.6, 20):
			rows.append(
				buffer.detail_row(
					capture.new_id(), stamp, {**slow_values(i, stamp), "duration_ms": float(duration)}
				)
			)
	buffer.insert_rows(rows)
	columns = (
		"name",
		"rule",
		"fingerprint",
		"labels",
		"severity",
		"state",
		"summary",
		"started_at",
		"fired_at",
		"resolved_at",
		"creation",
		"modified",
		"owner",
		"modified_by",
	)
	old = now - timedelta(days=3)
	frappe.db.bulk_insert(
		schema.ALERT,
		columns,
		[
			(
				f"bench-old-{i}",
				"bench old",
				f"old{i:028d}",
				"{}",
				"warning",
				"resolved",
				"earlier",
				old,
				old,
				old,
				old,
				old,
				"Administrator",
				"Administrator",
			)
			for i in range(args.existing_alerts)
		],
		chunk_size=5000,
	)

	def add_rule(name: str, **fields) -> None:
		doc = frappe.new_doc(schema.ALERT_RULE)
		doc.update(
			{
				"rule_name": name,
				"source": "operation",
				"metric": "p95_ms",
				"comparison": ">",
				"window_minutes": 10,
				**fields,
			}
		)
		doc.db_insert()

	for i in range(args.rules):
		op = i % args.operations
		# a tenth of the rules are breached (threshold 1 ms), the rest are not
		add_rule(f"bench rule {i:04d}", operation=f"{PREFIX}op_{op:03d}", threshold=1 if i % 10 == 0 else 1e9)
	frappe.db.commit()

	def timed_passes(count: int, start: int) -> tuple[list[float], int]:
		times = []
		statements = 0
		for k in range(count):
			with query_budget(100_000, maximum=True) as budget:
				started = time.perf_counter()
				evaluate.run_evaluation(now + timedelta(seconds=start + k))
				times.append((time.perf_counter() - started) * 1000)
			statements = budget.count
		return times, statements

	timed_passes(2, 0)  # opens the alerts of the breached rules; warms caches
	times, statements = timed_passes(args.passes, 10)
	# the same with a tenth of the rules: the statements must not change
	frappe.db.sql(
		f"update `tab{schema.ALERT_RULE}` set enabled=0 where name like 'bench rule %%' and name >= %s",
		(f"bench rule {args.rules // 10:04d}",),
	)
	frappe.db.commit()
	timed_passes(2, 100)
	_few_times, few_statements = timed_passes(3, 200)

	# 500 alerts at once in 10 groups
	frappe.db.delete(schema.ALERT_RULE, {"name": ("like", "bench rule %")})
	frappe.db.delete(schema.ALERT)
	server, url, received = receiver()
	hook = frappe.get_doc(
		{
			"doctype": schema.ALERT_CHANNEL,
			"channel_name": "bench hook",
			"channel_type": "webhook",
			"url": url,
			"webhook_format": "generic",
			"secret": "bench",
			"timeout_s": 5,
			"max_attempts": 1,
		}
	)
	hook.insert(ignore_permissions=True)
	for g in range(10):
		doc = frappe.new_doc(schema.ALERT_RULE)
		# 50 operations a group: op_000 to op_049 is op_0[0-4]?, op_050 to op_099 is op_0[5-9]?, ...
		tens = "[0-4]" if g % 2 == 0 else "[5-9]"
		pattern = f"{PREFIX}op_{g // 2}{tens}?"
		doc.update(
			{
				"rule_name": f"bench group {g}",
				"source": "operation",
				"metric": "p95_ms",
				"comparison": ">",
				"threshold": 1,
				"window_minutes": 10,
				"operation": pattern,
				"group_by": "rule",
			}
		)
		doc.set("channels", [{"channel": hook.name}])
		doc.insert(ignore_permissions=True)
	frappe.db.commit()
	first = evaluate.run_evaluation(now + timedelta(minutes=5))
	second = evaluate.run_evaluation(now + timedelta(minutes=6))
	firing = frappe.db.count(schema.ALERT, {"state": "firing"})

	# the same 500 alerts starting over 50 minutes: in minute m, the operations m, m + 50, ... (one of
	# each group) start being slow
	frappe.db.delete(schema.ALERT)
	frappe.db.delete(schema.ALERT_DELIVERY)
	frappe.db.delete(schema.METRIC)
	frappe.db.sql(f"update `tab{schema.ALERT_RULE}` set window_minutes=60 where name like 'bench group %%'")
	frappe.db.commit()
	storm_start = now + timedelta(hours=1)
	storm_notifications = 0
	for minute in range(60):
		moment = storm_start + timedelta(minutes=minute)
		if minute < 50:
			stamp = timeutil.format_datetime(moment)
			buffer.insert_rows(
				[
					buffer.detail_row(
						capture.new_id(), stamp, {**slow_values(op, stamp), "duration_ms": 50.0}
					)
					for op in range(minute, args.operations, STORM_MINUTES)
					for _ in range(3)
				]
			)
			frappe.db.commit()
		report = evaluate.run_evaluation(moment + timedelta(seconds=5))
		if minute < 50:
			storm_notifications += report.notifications
	storm_notified = frappe.db.count(schema.ALERT, {"state": "firing", "notified_state": "firing"})
	storm_firing = frappe.db.count(schema.ALERT, {"state": "firing"})

	# deliveries by one worker, each claimed first (as the dispatcher does)
	frappe.db.delete(schema.ALERT_DELIVERY)
	notification = alert_rules.Notification("bench group 0", (("rule", "bench group 0"),), "firing", [])
	for _ in range(args.deliveries):
		delivery.queue(
			notification,
			alert_rules.Rule("bench group 0", "operation", "p95_ms", ">", channels=(hook.name,)),
			now,
		)
	frappe.db.commit()
	names = frappe.get_all(schema.ALERT_DELIVERY, filters={"status": "queued"}, pluck="name")
	claimed = [name for name in names if delivery.claim(name)]
	received.clear()
	started = time.perf_counter()
	outcomes = [delivery.deliver(name) for name in claimed]
	elapsed = time.perf_counter() - started
	sent = frappe.db.count(schema.ALERT_DELIVERY, {"status": "sent"})
	server.shutdown()

	wipe(frappe, schema)
	for name in shipped:
		frappe.db.set_value(schema.ALERT_RULE, name, "enabled", 1)
	config.update_config({"alert_webhook_refuse_private_addresses": stored_before})
	frappe.db.commit()
	print(
		json.dumps(
			{
				"db": args.db,
				"rules": args.rules,
				"operations": args.operations,
				"existing_alerts": args.existing_alerts,
				"eval_ms_p50": round(percentile(times, 50), 1),
				"eval_ms_p95": round(percentile(times, 95), 1),
				"eval_statements": statements,
				"eval_statements_with_a_tenth_of_the_rules": few_statements,
				"firing_alerts": firing,
				"notifications_for_500_firing": second.notifications + first.notifications,
				"notifications_for_staggered_storm": storm_notifications,
				"staggered_storm_bound": STORM_GROUPS * (STORM_MINUTES // 5 + 1),
				"storm_alerts_firing": storm_firing,
				"storm_alerts_notified": storm_notified,
				"deliveries": len(names),
				"deliveries_claimed": len(claimed),
				"deliveries_sent": sent,
				"receiver_got": len(received),
				"deliveries_per_s": round(len(claimed) / elapsed, 1),
			}
		)
	)
	# the timed work must have happened: a figure of no-ops is worse than none
	failures = []
	if firing != args.operations or storm_firing != args.operations or storm_notified != args.operations:
		failures.append(
			f"alerts: {firing} / {storm_firing} firing, {storm_notified} notified of {args.operations}"
		)
	if not len(claimed) == sent == len(received) == args.deliveries or set(outcomes) != {delivery.SENT}:
		failures.append(
			f"deliveries: {len(claimed)} claimed, {sent} sent, {len(received)} received of {args.deliveries}"
		)
	if failures:
		print("the timed work did not all happen: " + "; ".join(failures), file=sys.stderr)
		sys.exit(1)


if __name__ == "__main__":
	main()
