"""API benchmark: dashboard (cold and cached), health check, a 10-member batch, and a flood of junk
requests, measured.

	devruntime/run bench api --db sqlite       (or --db mariadb or postgres; --rows 1000000 by default)

Destructive on the site it runs on: it empties Performance Metric and Performance Aggregate first.
Loads 90 days of hourly and two years of daily aggregates for 50 operations (each row carries a real
stored sketch, drawn from a set of heavy-tailed templates) and `--rows` detail rows. In a process of
its own (a running site's worker, not the loader), once the database has done its own housekeeping
after the load (PostgreSQL's autovacuum; `settle_s` says how long that took), it times the
whitelisted calls as Administrator (permission check included): the dashboard with its cache cleared
before every call (cold) and from its cache, and the quick health check; it counts their SQL
statements. The batch of 10 members runs in another process: its memory figure is the peak RSS
(sampled every millisecond) during the batch over the RSS before it.

The flood (`--flood 20000`): that many Guest requests to distinct junk paths (random pages, unknown
methods, unknown doctypes, desk routes with e-mail addresses) through the instrumented web server,
drained and rolled up; it reports how many operations they made and the health check and the cold
dashboard over them, against the same number of measurements over 20 real operations
(`flood_*_ratio`). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from datetime import timedelta

import frappe
import psutil

from benchmarks import connect_site, empty_performance_tables, percentile
from verenigingen_perf.utils.performance import (
	buffer,
	capture,
	dashboard,
	job_reports,
	rollup,
	schema,
	storage,
	timeutil,
)
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.sketch import Summary
from verenigingen_perf.utils.performance.statements import recorded_statements

API = "verenigingen_perf.api.performance"
TEMPLATES = 64
INSERT_CHUNK = 20_000


def wipe() -> None:
	empty_performance_tables()
	dashboard.clear_dashboard_cache()


def templates(rng: random.Random) -> list[dict]:
	"""Aggregate values (with their sketch) of heavy-tailed samples of different sizes and scales."""
	result = []
	for i in range(TEMPLATES):
		summary = Summary()
		scale = 5 + 3 * (i % 16)
		for _ in range(rng.randint(50, 3000)):
			duration = scale * rng.lognormvariate(0, 0.8)
			if rng.random() < 0.02:
				duration *= rng.paretovariate(1.5)
			summary.add(duration, rng.random() < 0.01, rng.randint(1, 20), duration / 4, rng.uniform(0, 4))
		result.append(summary.as_values())
	return result


def load_aggregates(operations: int, hourly_days: int, daily_days: int, rng: random.Random) -> int:
	now = frappe.utils.now_datetime()
	shapes = templates(rng)
	summaries = [Summary.from_values(shape) for shape in shapes]
	stamp = frappe.utils.now()
	fields = ["name", "creation", "modified", "owner", "modified_by", "docstatus", *rollup.AGGREGATE_COLUMNS]
	rows, total = [], 0

	def flush() -> None:
		nonlocal rows, total
		frappe.db.bulk_insert(schema.AGGREGATE, fields, rows)
		frappe.db.commit()
		total += len(rows)
		rows = []

	for granularity, step, count, last in (
		("hour", timedelta(hours=1), hourly_days * 24, timeutil.floor_hour(now)),
		("day", timedelta(days=1), daily_days, timeutil.floor_day(now)),
	):
		for i in range(count):
			period = last - step * i
			chosen = [rng.randrange(len(shapes)) for _ in range(operations)]
			# the site-wide row, as the rollup writes it: every operation of the period merged
			site_wide = Summary()
			for shape in chosen:
				site_wide.merge(summaries[shape])
			period_rows = [(f"bench.api.op{op:02d}", shapes[shape]) for op, shape in enumerate(chosen)]
			for operation, shape in [*period_rows, (schema.ALL_OPERATIONS, site_wide.as_values())]:
				values = {
					**shape,
					"operation": operation,
					"operation_type": schema.API,
					"granularity": granularity,
					"period_start": timeutil.format_datetime(period),
				}
				name = rollup.aggregate_name(granularity, period, schema.API, operation)
				rows.append(
					(
						name,
						stamp,
						stamp,
						"Administrator",
						"Administrator",
						0,
						*(values[c] for c in rollup.AGGREGATE_COLUMNS),
					)
				)
				if len(rows) >= INSERT_CHUNK:
					flush()
	flush()
	return total


def load_details(count: int, operations: int, rng: random.Random) -> None:
	now = frappe.utils.now_datetime()
	rows = []
	for i in range(count):
		started = now - timedelta(seconds=rng.uniform(0, 7 * 86400))
		moment = timeutil.format_datetime(started)
		values = {
			"operation": f"bench.api.op{i % operations:02d}",
			"operation_type": schema.API,
			"started_at": moment,
			"duration_ms": 20 * rng.lognormvariate(0, 0.8),
			"query_count": rng.randint(1, 20),
			"db_time_ms": 1.0,
			"peak_rss_mb": 150.0,
			"rss_growth_kb": 0,
			"peak_alloc_kb": 0.0,
			"status": "ok",
			"http_status": 200,
			"user": "Administrator",
			"trace_id": capture.new_id(),
		}
		rows.append(buffer.detail_row(capture.new_id(), moment, values))
		if len(rows) >= INSERT_CHUNK:
			buffer.insert_rows(rows)
			frappe.db.commit()
			rows = []
	buffer.insert_rows(rows)
	frappe.db.commit()


def timed(fn, runs: int, before=None) -> list[float]:
	samples = []
	for _ in range(runs):
		if before:
			before()
		started = time.perf_counter()
		fn()
		samples.append((time.perf_counter() - started) * 1000)
	return samples


def statements_of(fn, before=None) -> int:
	if before:
		before()
	with recorded_statements() as statements:
		fn()
	return len(statements)


def child_phase(phase: str, db: str, *args: str) -> dict:
	"""A phase in a process of its own: a running site's worker, not the loader with its heap."""
	child = subprocess.run(
		[sys.executable, "-m", "benchmarks.api", "--phase", phase, "--db", db, *args],
		check=True,
		capture_output=True,
		text=True,
		env=os.environ,
	)
	return json.loads(child.stdout.strip().splitlines()[-1])


# PostgreSQL vacuums and analyses a table in the background after a large load: timed while it
# does, the calls would measure its work too (on two cores). Done when no worker runs and no table
# is past the thresholds at which autovacuum takes it up.
_HOUSEKEEPING_DONE_SQL = {
	"postgres": f"""select count(*) = 2 and not exists (select 1 from pg_stat_activity
		where backend_type = 'autovacuum worker' and datname = current_database())
		from pg_stat_user_tables t join pg_class c on c.oid = t.relid
		where t.relname in ('tab{schema.METRIC}', 'tab{schema.AGGREGATE}')
		and t.n_ins_since_vacuum <= current_setting('autovacuum_vacuum_insert_threshold')::float
			+ current_setting('autovacuum_vacuum_insert_scale_factor')::float * greatest(c.reltuples, 0)
		and t.n_dead_tup <= current_setting('autovacuum_vacuum_threshold')::float
			+ current_setting('autovacuum_vacuum_scale_factor')::float * greatest(c.reltuples, 0)
		and t.n_mod_since_analyze <= current_setting('autovacuum_analyze_threshold')::float
			+ current_setting('autovacuum_analyze_scale_factor')::float * greatest(c.reltuples, 0)""",
	"mariadb": "select 1",
	"sqlite": "select 1",
}


def settle(timeout_s: float = 300) -> float:
	"""Wait until the database has done its own housekeeping after the load, as on a site whose
	last import is a few minutes old; the seconds waited."""
	started = time.monotonic()
	while time.monotonic() - started < timeout_s:
		frappe.db.rollback()
		if frappe.db.multisql(_HOUSEKEEPING_DONE_SQL)[0][0]:
			break
		time.sleep(2)
	return round(time.monotonic() - started, 1)


def time_phase(db: str, runs: int) -> dict:
	"""In its own process: the dashboard (cold and cached) and the health check, timed and counted."""
	connect_site(db, migrate=False)
	from verenigingen_perf.api import performance

	waited = settle()
	frappe.set_user("Administrator")
	dashboard_call = performance.performance_dashboard_data
	health_call = performance.quick_health_check
	dashboard_call()
	health_call()  # the framework's caches (roles, hooks) are warm on a running site too
	cold = timed(dashboard_call, runs, before=dashboard.clear_dashboard_cache)
	cached = timed(dashboard_call, runs * 4)
	health = timed(health_call, runs * 2)
	return {
		"dashboard_p50_ms_cold": round(percentile(cold, 50), 2),
		"dashboard_p95_ms_cold": round(percentile(cold, 95), 2),
		"dashboard_p95_ms_cached": round(percentile(cached, 95), 3),
		"health_p50_ms": round(percentile(health, 50), 2),
		"health_p95_ms": round(percentile(health, 95), 2),
		"dashboard_queries_cold": statements_of(dashboard_call, before=dashboard.clear_dashboard_cache),
		"dashboard_queries_cached": statements_of(dashboard_call),
		"health_queries": statements_of(health_call),
		"settle_s": waited,
	}


def batch_phase(db: str) -> None:
	"""In its own process: peak RSS growth of one 10-member batch analysis."""
	connect_site(db)
	from faker import Faker

	from verenigingen_perf.api import performance
	from verenigingen_perf.testing import members

	doctypes = members.ensure_member_doctypes(members.DEMO)
	names = frappe.get_all(doctypes.member, pluck="name", limit=10, order_by="creation")
	if len(names) < 10:
		fake = Faker()
		chapters = frappe.get_all(doctypes.chapter, pluck="name") or members.make_chapters(doctypes, 20, fake)
		rng = random.Random(1)
		names += [
			members.make_member(doctypes, fake, chapters, rng.randint(0, 8), rng)
			for _ in range(10 - len(names))
		]
		frappe.db.commit()
	frappe.set_user("Administrator")
	performance.batch_member_analysis(names[:1])  # imports and caches, as on a running worker
	process = psutil.Process()
	before = process.memory_info().rss
	peak = before
	done = threading.Event()

	def sample() -> None:
		nonlocal peak
		while not done.is_set():
			peak = max(peak, process.memory_info().rss)
			time.sleep(0.001)

	sampler = threading.Thread(target=sample)
	sampler.start()
	try:
		result = performance.batch_member_analysis(names)
	finally:
		done.set()
		sampler.join()
	peak = max(peak, process.memory_info().rss)
	print(
		json.dumps(
			{
				# the RSS the batch added at its peak (sampled every millisecond) over the worker before it
				"batch10_peak_mb": round((peak - before) / 2**20, 2),
				"batch10_process_rss_mb": round(peak / 2**20, 1),
				"batch10_members": result["summary"]["succeeded"],
			}
		)
	)


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__)
	parser.add_argument("--db", default="sqlite", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--rows", type=int, default=1_000_000)
	parser.add_argument("--operations", type=int, default=50)
	parser.add_argument("--hourly-days", type=int, default=90)
	parser.add_argument("--daily-days", type=int, default=730)
	parser.add_argument("--runs", type=int, default=50)
	parser.add_argument("--seed", type=int, default=42)
	parser.add_argument("--flood", type=int, default=20_000, help="junk requests of the flood (0: none)")
	parser.add_argument("--phase", default="all", choices=("all", "time", "batch", "flood"))
	args = parser.parse_args()
	if args.phase == "batch":
		batch_phase(args.db)
		return
	if args.phase == "time":
		print(json.dumps(time_phase(args.db, args.runs)))
		return
	if args.phase == "flood":
		connect_site(args.db)
		print(json.dumps(flood_phase(args.db, args.flood, args.runs)))
		return

	connect_site(args.db)
	rng = random.Random(args.seed)
	wipe()
	started = time.perf_counter()
	aggregates = load_aggregates(args.operations, args.hourly_days, args.daily_days, rng)
	print(f"aggregates: {aggregates:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
	started = time.perf_counter()
	load_details(args.rows, args.operations, rng)
	print(f"detail rows: {args.rows:,} in {time.perf_counter() - started:.1f} s", flush=True)
	job_reports.record("drain", {"status": "ok"})
	job_reports.record("rollup", {"status": "ok"})
	sizes = [size.__dict__ for size in storage.storage_figures()]
	job_reports.record("retention", {"status": "ok", "storage": sizes})
	frappe.db.commit()
	figures = {
		"db": args.db,
		"detail_rows": args.rows,
		"aggregate_rows": aggregates,
		"operations": args.operations,
	}
	figures.update(child_phase("time", args.db, "--runs", str(args.runs)))
	figures.update(child_phase("batch", args.db))
	if args.flood:
		figures.update(flood_phase(args.db, args.flood, args.runs))
	print(json.dumps(figures))


def junk_path(rng: random.Random) -> str:
	token = f"{rng.getrandbits(64):016x}"
	return rng.choice(
		(
			f"/xyz-{token}",
			f"/api/method/{token}.run",
			f"/api/method/caf{rng.choice(('e', 'é', 'E', 'e '))}{token}",
			f"/api/resource/Junk {token}",
			f"/api/resource/User/{token}@example.com",
			f"/app/user/{token}@example.com",
			f"/api/v2/document/Junk{token}/x/method/y",
			f"/{token}/{token}",
		)
	)


def flood_phase(db: str, count: int, runs: int) -> dict:
	"""`count` Guest requests to distinct junk paths through the web server, then the same number of
	measurements over 20 operations: distinct operations made, and health and cold dashboard times
	over each."""
	import requests

	from benchmarks import serve
	from verenigingen_perf.api import performance

	buffer.drain()  # what earlier phases left in the buffer is not the flood's
	wipe()
	rng = random.Random(7)
	paths = [junk_path(rng) for _ in range(count)]
	with serve(db) as url:
		chunks = [paths[i::8] for i in range(8)]

		def send(chunk: list[str]) -> None:
			session = requests.Session()
			for path in chunk:
				session.get(url + path, timeout=60)

		threads = [threading.Thread(target=send, args=(chunk,)) for chunk in chunks]
		started = time.perf_counter()
		for thread in threads:
			thread.start()
		for thread in threads:
			thread.join()
		sent_s = time.perf_counter() - started
	drained = 0
	while drained < count:
		inserted = buffer.drain().rows_inserted
		if not inserted:
			break
		drained += inserted
	# past the end of the current hour and the rollup's delay: every row is folded
	later = frappe.utils.now_datetime() + timedelta(hours=2)
	rollup.run_rollup(later)
	names = sorted(
		{
			row[0]
			for row in frappe.db.sql(
				f"select operation from `tab{schema.AGGREGATE}` where granularity='hour' and operation != %s",
				(schema.ALL_OPERATIONS,),
			)
		}
	)
	flood = _health_and_dashboard(performance, runs)

	wipe()
	baseline_rows = []
	now = frappe.utils.now_datetime()
	for i in range(count):
		started = timeutil.format_datetime(now - timedelta(seconds=rng.uniform(0, 1800)))
		values = {
			"operation": f"bench.real.op{i % 20:02d}",
			"operation_type": schema.API,
			"started_at": started,
			"duration_ms": 20 * rng.lognormvariate(0, 0.8),
			"query_count": 5,
			"status": "ok",
			"http_status": 200,
		}
		baseline_rows.append(buffer.detail_row(capture.new_id(), started, values))
	buffer.insert_rows(baseline_rows)
	frappe.db.commit()
	rollup.run_rollup(later)
	baseline = _health_and_dashboard(performance, runs)
	return {
		"flood_requests": count,
		"flood_requests_per_s": round(count / sent_s, 1),
		"flood_measured": drained,
		"flood_operations": len(names),
		"flood_operation_names": names[:20],
		"flood_operation_cap": get_config().monitoring.max_operations_per_hour,
		"flood_health_ms": flood["health"],
		"flood_dashboard_ms_cold": flood["dashboard"],
		"baseline_health_ms": baseline["health"],
		"baseline_dashboard_ms_cold": baseline["dashboard"],
		"flood_health_ratio": round(flood["health"] / baseline["health"], 2),
		"flood_dashboard_ratio": round(flood["dashboard"] / baseline["dashboard"], 2),
	}


def _health_and_dashboard(performance, runs: int) -> dict:
	"""Median times (ms) of the health check and of the cold dashboard."""
	frappe.set_user("Administrator")
	performance.quick_health_check()
	health = timed(performance.quick_health_check, runs)
	cold = timed(performance.performance_dashboard_data, runs, before=dashboard.clear_dashboard_cache)
	return {"health": round(percentile(health, 50), 2), "dashboard": round(percentile(cold, 50), 2)}


if __name__ == "__main__":
	main()
