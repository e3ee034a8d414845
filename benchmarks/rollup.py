"""Rollup and retention benchmark: throughput, memory, percentile accuracy and storage, measured.

	devruntime/run bench rollup --db sqlite --rows 1000000      (or --db mariadb, --db postgres)

Destructive on the site it runs on: it empties Performance Metric and Performance Aggregate first.
Generates `--rows` detail rows with a heavy-tailed duration distribution over 50 operations and 7 days
(2% of them ingested hours late), aggregates them in a separate process (its peak memory is measured
there), compares every hourly and daily p95/p99 with the exact value computed from the raw data,
measures the table sizes the database reports, then runs retention over all of them.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import time
from array import array
from collections import defaultdict
from datetime import datetime, timedelta

import frappe
import numpy as np

from benchmarks import connect_site, empty_performance_tables, peak_rss_kb, reset_peak_rss_kb
from verenigingen_perf.utils.performance import (
	buffer,
	capture,
	redis_store,
	retention,
	rollup,
	schema,
	storage,
	timeutil,
)

CHUNK = 50_000


def wipe() -> None:
	empty_performance_tables()
	buffer.redis_client().delete(
		buffer.claims_key(), redis_store.lock_key("rollup"), redis_store.lock_key("retention")
	)


def duration_ms(rng: random.Random) -> float:
	"""Heavy tail: mostly a log-normal body around 20 ms, 3% Pareto tail out to seconds."""
	if rng.random() < 0.03:
		return 200 * rng.paretovariate(1.5)
	return rng.lognormvariate(3.0, 0.8)


def arrivals(rows: int, days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
	"""Start and ingestion offsets (seconds) of every row, in ingestion order, as the drain writes
	them on a live site. 2% of the rows arrive 1 to 3 hours late; the rest within 5 seconds."""
	rng = np.random.default_rng(seed)
	started = rng.uniform(0, days * 86400, rows)
	late = rng.random(rows) < 0.02
	created = started + np.where(late, rng.uniform(3600, 3 * 3600, rows), rng.uniform(0, 5, rows))
	order = np.argsort(created, kind="stable")
	return started[order], created[order]


def generate(rows: int, operations: int, days: int, end: datetime, seed: int):
	"""Insert the rows; return raw durations per (operation, hour) and per (operation, day)."""
	rng = random.Random(seed)
	start = end - timedelta(days=days)
	hourly: dict[tuple[str, datetime], array] = defaultdict(lambda: array("d"))
	batch = []
	started_offsets, created_offsets = arrivals(rows, days, seed)
	for i, (started_s, created_s) in enumerate(
		zip(started_offsets.tolist(), created_offsets.tolist(), strict=True)
	):
		started = start + timedelta(seconds=started_s)
		created = start + timedelta(seconds=created_s)
		operation = f"bench.rollup.op{i % operations:02d}"
		duration = duration_ms(rng)
		# ids are taken when a span starts, so a late row sits with the others of its start time
		span_id = capture.new_id(at_ns=round(started.timestamp() * 1e9))
		values = {
			"operation": operation,
			"operation_type": "api",
			"started_at": timeutil.format_datetime(started),
			"duration_ms": duration,
			"query_count": rng.randint(1, 30),
			"db_time_ms": duration / 5,
			"peak_rss_mb": 150.0,
			"rss_growth_kb": 0,
			"peak_alloc_kb": 0.0,
			"status": "error" if rng.random() < 0.01 else "ok",
			"http_status": 200,
			"user": "Administrator",
			"trace_id": span_id,
		}
		batch.append(buffer.detail_row(span_id, timeutil.format_datetime(created), values))
		hourly[(operation, timeutil.floor_hour(started))].append(duration)
		if len(batch) == CHUNK:
			buffer.insert_rows(batch)
			frappe.db.commit()
			batch = []
	buffer.insert_rows(batch)
	frappe.db.commit()
	return hourly


def exact(values: list[float], q: float) -> float:
	return values[math.floor(q * (len(values) - 1))]


def relative_errors(hourly) -> dict[str, float]:
	"""Worst relative error over every hourly and daily aggregate (site-wide rows included), against
	the raw values."""
	stored = frappe.db.sql(
		f"select operation, granularity, period_start, p95_ms, p99_ms from `tab{schema.AGGREGATE}`",
		as_dict=True,
	)
	hourly = dict(hourly)
	daily: dict[tuple[str, datetime], array] = defaultdict(lambda: array("d"))
	for (operation, hour), values in list(hourly.items()):
		daily[(operation, timeutil.floor_day(hour))].extend(values)
		hourly.setdefault((schema.ALL_OPERATIONS, hour), array("d")).extend(values)
	for (operation, day), values in list(daily.items()):
		if operation != schema.ALL_OPERATIONS:
			daily[(schema.ALL_OPERATIONS, day)].extend(values)
	sorted_hourly = {key: sorted(values) for key, values in hourly.items()}
	sorted_daily = {key: sorted(values) for key, values in daily.items()}
	worst = {"p95_rel_err": 0.0, "p99_rel_err": 0.0, "daily_p99_rel_err": 0.0}
	for row in stored:
		key = (row.operation, timeutil.as_datetime(row.period_start))
		if row.granularity == "hour":
			values = sorted_hourly[key]
			worst["p95_rel_err"] = max(
				worst["p95_rel_err"], abs(float(row.p95_ms) - exact(values, 0.95)) / exact(values, 0.95)
			)
			worst["p99_rel_err"] = max(
				worst["p99_rel_err"], abs(float(row.p99_ms) - exact(values, 0.99)) / exact(values, 0.99)
			)
		else:
			values = sorted_daily[key]
			err = abs(float(row.p99_ms) - exact(values, 0.99)) / exact(values, 0.99)
			worst["daily_p99_rel_err"] = max(worst["daily_p99_rel_err"], err)
	return {k: round(v, 6) for k, v in worst.items()}


def aggregate_phase(db: str, now: str) -> None:
	"""Child process: run the rollup and report its own throughput and peak memory growth."""
	connect_site(db, migrate=False)
	rss_start_kb = reset_peak_rss_kb()
	started = time.perf_counter()
	report = rollup.run_rollup(frappe.utils.get_datetime(now))
	elapsed = time.perf_counter() - started
	peak_kb = peak_rss_kb()
	print(
		json.dumps(
			{
				"rows_aggregated": report.rows_aggregated,
				"seconds": elapsed,
				"peak_mb": (peak_kb - rss_start_kb) / 1024,
				"status": report.status,
			}
		)
	)
	frappe.destroy()


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__)
	parser.add_argument("--db", default="sqlite", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--rows", type=int, default=1_000_000)
	parser.add_argument("--operations", type=int, default=50)
	parser.add_argument("--days", type=int, default=7)
	parser.add_argument("--seed", type=int, default=42)
	parser.add_argument("--phase", default="all", choices=("all", "aggregate"))
	parser.add_argument("--now", help=argparse.SUPPRESS)
	args = parser.parse_args()
	if args.phase == "aggregate":
		aggregate_phase(args.db, args.now)
		return

	connect_site(args.db)
	wipe()
	end = timeutil.floor_hour(frappe.utils.now_datetime()) - timedelta(days=1)
	started = time.perf_counter()
	hourly = generate(args.rows, args.operations, args.days, end, args.seed)
	insert_s = time.perf_counter() - started

	fold_at = end + timedelta(days=1)
	child = subprocess.run(
		[
			sys.executable,
			"-m",
			"benchmarks.rollup",
			"--phase",
			"aggregate",
			"--db",
			args.db,
			"--now",
			timeutil.format_datetime(fold_at),
		],
		capture_output=True,
		text=True,
		check=True,
	)
	aggregate = json.loads(child.stdout.strip().splitlines()[-1])
	assert aggregate["rows_aggregated"] == args.rows, aggregate
	frappe.db.rollback()
	errors = relative_errors(hourly)
	detail, aggregates = storage.table_size(schema.METRIC), storage.table_size(schema.AGGREGATE)

	report = retention.run_retention(fold_at + timedelta(days=8))
	assert report.detail_rows_deleted == args.rows, report
	figures = {
		"db": args.db,
		"rows": args.rows,
		"insert_rows_per_s": round(args.rows / insert_s),
		"aggregate_rows_per_s": round(aggregate["rows_aggregated"] / aggregate["seconds"]),
		"aggregate_peak_mb": round(aggregate["peak_mb"], 1),
		**errors,
		"retention_rows_per_s": round(report.detail_rows_deleted / report.duration_s),
		"retention_max_batch_s": report.max_batch_s,
		"detail_bytes": detail.bytes,
		"aggregate_rows": aggregates.rows,
		"aggregate_bytes": aggregates.bytes,
		"storage_ratio": round(detail.bytes / aggregates.bytes, 1),
	}
	wipe()
	print(json.dumps(figures))
	frappe.destroy()


if __name__ == "__main__":
	main()
