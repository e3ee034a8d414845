"""The whole cost of measuring a request, stage by stage, over one run of real requests.

	devruntime/run bench pipeline --db sqlite        (or --db mariadb, --db postgres)

Destructive on the site it runs on: it empties Performance Metric and Performance Aggregate first and
again at the end (and resets the rollup's watermark), as the rollup and API benchmarks do.

With the production environment's settings (allocation peaks not traced) and sampling 1,
`--requests` (2,000) logged-in calls of a cheap whitelisted method (`frappe.auth.get_logged_user`, as
Administrator) go through the dev site's instrumented web server, every one measured.
Then each stage of what those measurements cost is timed on them, none by subtracting one arm from
another that shares the wrapped connection:

- `hooks_us`: the app's request hooks, as the app itself times them on every measured request (its
  `capture_us`: before_request, after_request and handing the span to the in-process queue), mean;
- `sql_counter_us` x `statements_per_request`: the SQL counter's own wrapper, timed around a call
  that does nothing, times the statements those requests ran (their measured `query_count`, mean);
- `flush_us`: cleaning, encoding and pushing one of those measurements to Redis (the same rows,
  queued again in this process and flushed; per measurement sent);
- `drain_us`: the drain that moved the run's measurements into the database, per row;
- `rollup_us`: the rollup that folded those rows into the aggregates, per row (its fixed cost per fold
  shared by the run's rows: more requests, a smaller share).

`pipeline_us_per_request` is their sum; the target is at most 100 µs. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import timedelta

import frappe
import requests

from benchmarks import connect_site, empty_performance_tables, serve
from verenigingen_perf.utils.performance import buffer, capture, config, redis_store, rollup, schema, timeutil

OPERATION = "frappe.auth.get_logged_user"
COLUMNS = ("capture_us", "query_count", "name", "operation", "operation_type", "started_at")


def wipe() -> None:
	empty_performance_tables()
	buffer.redis_client().delete(buffer.buffer_key(), buffer.claims_key(), redis_store.lock_key("rollup"))


def run_requests(url: str, count: int) -> None:
	session = requests.Session()
	login = session.post(f"{url}/api/method/login", data={"usr": "Administrator", "pwd": "admin"}, timeout=60)
	login.raise_for_status()
	for _ in range(count):
		session.get(f"{url}/api/method/{OPERATION}", timeout=60).raise_for_status()


def wait_until_buffered(count: int, deadline_s: float = 60) -> int:
	"""Wait for the server's flusher to have pushed `count` measurements (it flushes in the
	background); how many are buffered."""
	client = buffer.redis_client()
	deadline = time.monotonic() + deadline_s
	while (buffered := client.llen(buffer.buffer_key())) < count and time.monotonic() < deadline:
		time.sleep(0.2)
	return buffered


class _IdleConnection:
	"""A connection whose statements do nothing: what is timed around them is the counter's own."""

	def sql(self, *args, **kwargs) -> None:
		return None


def sql_counter_us(calls: int) -> float:
	"""The counter's wrapper around a call that does nothing: what counting adds to each statement."""
	real_db = frappe.local.db
	frappe.local.db = _IdleConnection()
	try:
		capture.sql_counter()
		counted = frappe.local.db.sql
		started = time.perf_counter()
		for _ in range(calls):
			counted("select 1")
		return (time.perf_counter() - started) / calls * 1e6
	finally:
		frappe.local.db = real_db


def flush_us(rows: list[dict]) -> float:
	"""Queue the run's measurements again in this process and flush them: per measurement sent."""
	monitoring = config.get_config().monitoring
	entries = [
		{
			**row,
			"name": capture.new_id(),
			"started_at": timeutil.as_datetime(row["started_at"]).timestamp(),
			"status": "ok",
			"http_status": 200,
		}
		for row in rows
	]
	sent, seconds = 0, 0.0
	for start in range(0, len(entries), 500):
		for entry in entries[start : start + 500]:
			buffer.add(entry, monitoring)
		started = time.perf_counter()
		sent += buffer.flush()
		seconds += time.perf_counter() - started
	return seconds / max(sent, 1) * 1e6


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--db", default="sqlite", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--requests", type=int, default=2000)
	args = parser.parse_args()
	connect_site(args.db)
	wipe()
	# production's settings (no allocation tracing), every request measured
	config.update_config({"sampling_rate": 1, "monitoring_enabled": 1}, environment="production")
	frappe.db.commit()
	try:
		with serve(args.db) as url:
			run_requests(url, args.requests)
			# the requests and the login before them, all pushed to the buffer before it is drained
			wait_until_buffered(args.requests + 1)
		started = time.perf_counter()
		drained = buffer.drain().rows_inserted
		drain_seconds = time.perf_counter() - started
		rows = frappe.get_all(
			schema.METRIC, filters={"operation": OPERATION}, fields=list(COLUMNS), limit=args.requests * 2
		)
		now = frappe.utils.now_datetime()
		delay = timedelta(minutes=config.get_config().retention.aggregation_delay_minutes)
		started = time.perf_counter()
		report = rollup.run_rollup(timeutil.floor_hour(now) + timedelta(hours=1) + delay)
		rollup_seconds = time.perf_counter() - started
		counter_us = sql_counter_us(100_000)
		flushed_us = flush_us(rows)
	finally:
		config.update_config({"sampling_rate": "", "monitoring_enabled": ""}, environment="")
		wipe()
	hooks = sorted(float(row["capture_us"] or 0) for row in rows)
	hooks_us = statistics.mean(hooks)
	statements = statistics.mean(int(row["query_count"] or 0) for row in rows)
	drain_us = drain_seconds / max(drained, 1) * 1e6
	rollup_us = rollup_seconds / max(report.rows_aggregated, 1) * 1e6
	stages = {
		"hooks_us": hooks_us,
		"sql_counting_us": counter_us * statements,
		"flush_us": flushed_us,
		"drain_us": drain_us,
		"rollup_us": rollup_us,
	}
	print(
		json.dumps(
			{
				"db": args.db,
				"requests": args.requests,
				"measured": len(rows),
				"drained_rows": drained,
				"rolled_up_rows": report.rows_aggregated,
				"statements_per_request": round(statements, 2),
				"hooks_us_p50": round(statistics.median(hooks), 2),
				"hooks_us_p95": round(hooks[int(0.95 * (len(hooks) - 1))], 2),
				"sql_counter_us": round(counter_us, 3),
				**{name: round(value, 2) for name, value in stages.items()},
				"pipeline_us_per_request": round(sum(stages.values()), 2),
			}
		)
	)
	frappe.destroy()


if __name__ == "__main__":
	main()
