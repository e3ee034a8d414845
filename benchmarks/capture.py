"""Capture benchmark: what instrumentation adds to a request, against a direct row insert and a Redis
push measured in the same run, and how fast the drain moves buffered rows into the database.

	devruntime/run bench capture --db sqlite      (or --db mariadb, --db postgres)

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from types import SimpleNamespace

import frappe

from benchmarks import connect_site, percentile
from verenigingen_perf.utils.performance import buffer, capture, config


def operation() -> None:
	frappe.db.sql("select 1")


def time_pairs(ops: int) -> tuple[list[float], list[float]]:
	"""Alternate the bare operation and the same operation between the real request hooks (sampled,
	as in production), so machine noise falls on both alike."""
	response = SimpleNamespace(status_code=200, headers={})
	frappe.local.request = SimpleNamespace(path="/api/method/bench.operation", method="POST")
	plain, instrumented = [], []
	for _ in range(ops):
		started = time.perf_counter()
		operation()
		plain.append(time.perf_counter() - started)
		started = time.perf_counter()
		capture.before_request()
		operation()
		capture.after_request(response, frappe.local.request)
		instrumented.append(time.perf_counter() - started)
	frappe.local.request = None
	return plain, instrumented


def time_redis_push(ops: int) -> list[float]:
	"""One list push per request, as Frappe's own monitor does."""
	key = f"verenigingen_perf:bench:{capture.new_id()}"
	payload = json.dumps({"operation": "bench.operation", "duration_ms": 1.0, "queries": 1})
	samples = []
	for _ in range(ops):
		started = time.perf_counter()
		frappe.cache.rpush(key, payload)
		samples.append(time.perf_counter() - started)
	frappe.cache.delete_value(key)
	return samples


def time_direct_insert(ops: int) -> list[float]:
	samples = []
	for i in range(ops):
		doc = frappe.get_doc(
			{
				"doctype": "Performance Metric",
				"operation": "bench.direct_insert",
				"operation_type": "custom",
				"started_at": frappe.utils.now(),
				"duration_ms": 1.0,
				"query_count": i,
			}
		)
		started = time.perf_counter()
		doc.db_insert()
		frappe.db.commit()
		samples.append(time.perf_counter() - started)
	return samples


def drain_throughput(rows: int) -> float:
	monitoring = config.get_config().monitoring
	client = buffer.redis_client()
	now = time.time()
	payloads = [
		json.dumps(
			buffer.clean_entry(
				{
					"name": capture.new_id(),
					"operation": f"bench.drain.{i % 50}",
					"operation_type": "api",
					"started_at": now,
					"duration_ms": 1.5,
					"query_count": 3,
					"db_time_ms": 0.4,
					"peak_rss_mb": 100.0,
					"rss_growth_kb": 0,
					"peak_alloc_kb": 0.0,
					"status": "ok",
					"http_status": 200,
					"user": "Administrator",
					"trace_id": capture.new_id(),
				},
				monitoring,
			)
		)
		for i in range(rows)
	]
	for start in range(0, rows, 10_000):
		client.rpush(buffer.buffer_key(), *payloads[start : start + 10_000])
	started = time.perf_counter()
	report = buffer.drain()
	elapsed = time.perf_counter() - started
	assert report.rows_inserted == rows, report
	return rows / elapsed


def clean_up() -> None:
	frappe.db.delete("Performance Metric", {"operation": ("like", "bench.%")})
	frappe.db.commit()


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__)
	parser.add_argument("--db", default="sqlite", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--ops", type=int, default=10_000)
	parser.add_argument("--inserts", type=int, default=1_000)
	parser.add_argument("--drain-rows", type=int, default=100_000)
	args = parser.parse_args()
	connect_site(args.db)
	buffer.drain()
	config.update_config({"sampling_rate": 1, "monitoring_enabled": 1, "buffer_max_entries": args.ops * 4})
	frappe.db.commit()
	capture.forget_local_config()
	try:
		time_pairs(500)  # warm-up
		plain, instrumented = time_pairs(args.ops)
		buffer.flush()
		redis_push = time_redis_push(args.ops)
		direct = time_direct_insert(args.inserts)
		buffer.drain()
		rows_per_s = drain_throughput(args.drain_rows)
	finally:
		doc = frappe.get_single("Performance Settings")
		for key in ("sampling_rate", "monitoring_enabled", "buffer_max_entries"):
			doc.set(key, "")
		doc.save()
		clean_up()
	us = 1e6
	figures = {
		"db": args.db,
		"ops": len(plain),
		"plain_us_p50": round(statistics.median(plain) * us, 2),
		"instrumented_us_p50": round(statistics.median(instrumented) * us, 2),
		"overhead_us_p50": round((statistics.median(instrumented) - statistics.median(plain)) * us, 2),
		"overhead_us_p99": round((percentile(instrumented, 99) - percentile(plain, 99)) * us, 2),
		"redis_push_us_p50": round(statistics.median(redis_push) * us, 2),
		"direct_insert_us_p50": round(statistics.median(direct) * us, 2),
		"drain_rows": args.drain_rows,
		"drain_rows_per_s": round(rows_per_s),
	}
	print(json.dumps(figures))
	frappe.destroy()


if __name__ == "__main__":
	main()
