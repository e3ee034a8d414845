"""Export benchmark: the Prometheus exposition of a site with `--operations` (500) operations and
`--days` (90) days of aggregates.

- History: `--days` days of hourly aggregates of every operation (log-normal durations, volumes
  log-uniform from 5 to 5,000 an hour, sampled to at most 500 values a day; each day's sketch stored in each of its hours), bulk-inserted as
  the rollup leaves them, and the export counters folded day by day through the rollup's own step
  (`counter_store.fold`, the same code and statements as in `rollup._fold`).
- A scrape is what the endpoint does after authentication: read the snapshot and render the text with
  prometheus_client, in this process (the web server's own time and the token check are not in it).
  `scrape_ms_p50/p95` over `--scrapes` scrapes; `scrape_statements` counted on the connection, also
  after the first day of history only (`scrape_statements_1_day`), to show that it does not grow with
  history; `exposition_bytes` and `series` of one scrape.

Destructive on the dev site's aggregate and export counter tables. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import timedelta

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import connect_site, percentile

SAMPLE_PER_DAY = 500


def wipe(frappe, schema) -> None:
	frappe.db.rollback()
	for doctype in (schema.AGGREGATE, schema.EXPORT_COUNTER):
		frappe.db.delete(doctype)
	frappe.db.commit()


def day_summaries(operations, rng, Summary) -> dict:
	"""One day of every operation: (type, operation) -> Summary (a sample of its durations)."""
	result = {}
	for name, median_ms, per_hour in operations:
		# a sample of the day (at most SAMPLE_PER_DAY values): the scrape's cost does not depend on
		# how many values a sketch holds, and generating every request of 90 days would take hours
		count = min(int(per_hour * 24), SAMPLE_PER_DAY)
		durations = median_ms * np.exp(rng.normal(0, 0.6, count))
		summary = Summary()
		errors = int(rng.binomial(count, 0.01))
		summary.add_many(durations.tolist(), errors, [12] * count, [1.0] * count, [0.5] * count)
		result[("api", name)] = summary
	return result


def store_hours(frappe, schema, rollup, summaries: dict, day, columns) -> int:
	"""Each hour of `day` gets every operation's row (the day's figures spread evenly)."""
	values = []
	for (operation_type, operation), summary in summaries.items():
		row = summary.as_values()
		for hour in range(24):
			start = day + timedelta(hours=hour)
			name = rollup.aggregate_name("hour", start, operation_type, operation)
			values.append((name, operation, operation_type, "hour", start, *(row[c] for c in columns[4:])))
	frappe.db.bulk_insert(schema.AGGREGATE, ["name", *columns], values, chunk_size=5000)
	return len(values)


def measure(frappe, prometheus, config, capture, scrapes: int) -> dict:
	counter = capture.sql_counter()
	timings, statements, body = [], [], b""
	for _ in range(scrapes):
		frappe.db.rollback()
		before = counter.count
		started = time.perf_counter()
		body, _type = prometheus.render(prometheus.snapshot(config.get_config()), None)
		timings.append((time.perf_counter() - started) * 1000)
		statements.append(counter.count - before)
	return {
		"ms_p50": round(percentile(timings, 50), 2),
		"ms_p95": round(percentile(timings, 95), 2),
		"statements": max(statements),
		"bytes": len(body),
		"series": sum(1 for line in body.decode().splitlines() if line and not line.startswith("#")),
	}


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--db", default="sqlite", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--operations", type=int, default=500)
	parser.add_argument("--days", type=int, default=90)
	parser.add_argument("--scrapes", type=int, default=50)
	parser.add_argument("--seed", type=int, default=16)
	args = parser.parse_args()
	connect_site(args.db)
	import frappe

	from verenigingen_perf.utils.performance import capture, config, rollup, schema
	from verenigingen_perf.utils.performance.export import counter_store, prometheus
	from verenigingen_perf.utils.performance.sketch import Summary

	rng = np.random.default_rng(args.seed)
	operations = [
		(
			f"bench.export.op{i:03d}",
			float(rng.lognormal(np.log(40), 0.8)),
			float(np.exp(rng.uniform(np.log(5), np.log(5000)))),
		)
		for i in range(args.operations)
	]
	wipe(frappe, schema)
	top = config.get_config().export.prometheus_top_operations
	columns = list(rollup.AGGREGATE_COLUMNS)
	today = frappe.utils.now_datetime().replace(hour=0, minute=0, second=0, microsecond=0)
	first_day = today - timedelta(days=args.days)
	rows = 0
	started = time.monotonic()
	one_day = None
	for day_number in range(args.days):
		day = first_day + timedelta(days=day_number)
		summaries = day_summaries(operations, rng, Summary)
		rows += store_hours(frappe, schema, rollup, summaries, day, columns)
		counter_store.fold({(t, op, day): s for (t, op), s in summaries.items()}, top)
		frappe.db.commit()
		if day_number == 0:
			one_day = measure(frappe, prometheus, config, capture, max(5, args.scrapes // 5))
	print(
		f"stored {rows:,} hourly rows and folded {args.days} days in {time.monotonic() - started:.0f} s",
		file=sys.stderr,
	)
	full = measure(frappe, prometheus, config, capture, args.scrapes)
	result = {
		"db": args.db,
		"operations": args.operations,
		"days": args.days,
		"hourly_rows": rows,
		"top_operations": top,
		"scrape_ms_p50": full["ms_p50"],
		"scrape_ms_p95": full["ms_p95"],
		"scrape_statements": full["statements"],
		"scrape_statements_1_day": one_day["statements"],
		"scrape_ms_p95_1_day": one_day["ms_p95"],
		"exposition_bytes": full["bytes"],
		"series": full["series"],
	}
	wipe(frappe, schema)
	print(json.dumps(result))


if __name__ == "__main__":
	main()
