"""The demo: a member site with a week of measured traffic, judged by the app's own API.

1. A "Member" doctype with chapters (custom doctypes, created for the demo only) and faker members.
2. A week (and a day) of history: detail rows across many operations with heavy-tailed durations,
   some errors and one N+1 endpoint, stamped as if the drain had ingested them at the time.
3. Real HTTP traffic through the instrumented web server (desk form loads, lists, the N+1 endpoint
   and its batched twin, missing records), drained from the Redis buffer into detail rows.
   Six hours ago a "release" made the desk's form loader 40% slower, with 3 more statements a call.
4. The app's scheduled jobs: drain, rollup (hourly and daily aggregates), retention, detection
   (baselines, regressions, anomalies).
5. The health check, a member analysis that finds the N+1, a batch analysis and the dashboard,
   fetched over HTTP from the whitelisted API and printed.

The performance tables of the dev site are emptied first, so every run shows its own figures.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import requests
from vperf_devruntime import services, site

from verenigingen_perf.testing import members

MEMBERS = 300
CHAPTERS = 40
HISTORY_DAYS = 8
HISTORY_REQUESTS_PER_HOUR = 240
LIVE_REQUESTS = 400
N_PLUS_ONE = "vperf_devruntime.demo_endpoints.member_chapters"
# the operation the demo's "release" made slower, how much, and how long ago
RELEASED = "frappe.desk.form.load.getdoc"
RELEASE_SLOWER, RELEASE_STATEMENTS, RELEASE_HOURS_AGO = 1.4, 3, 6
API = "verenigingen_perf.api.performance"

# name, type, median ms, spread (lognormal sigma), mean statements, error share, weight
OPERATIONS = [
	("frappe.desk.form.load.getdoc", "api", 35, 0.6, 14, 0.002, 20),
	("frappe.client.get_list", "api", 18, 0.5, 4, 0.001, 15),
	("GET /api/resource/Member", "api", 22, 0.5, 5, 0.001, 10),
	("GET /api/resource/Member/{name}", "api", 15, 0.4, 4, 0.02, 8),
	("PUT /api/resource/Member/{name}", "api", 60, 0.7, 22, 0.01, 3),
	("POST /api/resource/Member", "api", 80, 0.7, 28, 0.03, 2),
	(N_PLUS_ONE, "api", 45, 0.8, 30, 0.0, 6),
	("vperf_devruntime.demo_endpoints.member_chapters_batched", "api", 12, 0.4, 3, 0.0, 3),
	("frappe.desk.reportview.get", "api", 40, 0.7, 6, 0.002, 8),
	("frappe.desk.search.search_link", "api", 10, 0.4, 2, 0.0, 9),
	("frappe.auth.get_logged_user", "api", 3, 0.3, 0, 0.0, 6),
	("frappe.desk.notifications.get_notification_info", "api", 20, 0.5, 9, 0.0, 4),
	("GET /app", "page", 180, 0.6, 60, 0.0, 3),
	("GET /", "page", 120, 0.5, 25, 0.0, 3),
	("frappe.email.queue.flush", "job", 150, 0.9, 6, 0.01, 2),
	("frappe.utils.scheduler.enqueue_events", "job", 40, 0.5, 8, 0.0, 2),
	("verenigingen.membership.renew_expiring", "job", 900, 1.0, 120, 0.05, 1),
	("verenigingen.chapters.recalculate_counts", "job", 400, 0.8, 60, 0.0, 1),
	("verenigingen_perf.utils.performance.buffer.drain_job", "job", 70, 0.5, 3, 0.0, 2),
	("member.export_csv", "custom", 300, 0.9, 40, 0.01, 1),
]


def run(backend: str) -> None:
	"""The demo on the connected dev site of `backend`."""
	import frappe

	from verenigingen_perf.utils.performance import config

	print("\n== Demo ==")
	effective = config.get_config()
	_empty_performance_tables()
	member_names = _members()
	history = _history(effective)
	print(f"History: {history:,} measurements over {HISTORY_DAYS} days across {len(OPERATIONS)} operations")
	frappe.db.commit()

	port = services.free_port()
	server = _start_server(backend, port)
	try:
		url = f"http://127.0.0.1:{port}"
		session = _login(url)
		sent = _drive_traffic(session, url, member_names)
		print(
			f"Live traffic: {sent['requests']} HTTP requests through the instrumented server "
			f"({sent['errors']} answered with an error status)"
		)
		_run_jobs(frappe)
		_print_answers(session, url, member_names)
	finally:
		server.terminate()
		server.wait(timeout=15)


# --- data -------------------------------------------------------------------------------------------


def _empty_performance_tables() -> None:
	import frappe

	from verenigingen_perf.utils.performance import buffer, dashboard, rollup
	from verenigingen_perf.utils.performance.schema import AGGREGATE, METRIC, ROLLUP_STATE

	frappe.db.delete(METRIC)
	frappe.db.delete(AGGREGATE)
	frappe.db.sql(
		"update `tabSingles` set value=NULL where doctype=%s and field='watermark'", (ROLLUP_STATE,)
	)
	rollup.ensure_state_row()
	frappe.db.commit()
	client = buffer.redis_client()
	client.delete(buffer.buffer_key(), buffer.claims_key(), buffer.dropped_key())
	dashboard.clear_dashboard_cache()


def _members() -> list[str]:
	import frappe
	from faker import Faker

	names = members.ensure_member_doctypes(members.DEMO)
	existing = frappe.get_all(names.member, pluck="name", order_by="creation")
	if len(existing) < MEMBERS:
		fake = Faker("nl_NL")
		Faker.seed(len(existing))
		rng = random.Random(len(existing))
		chapters = frappe.get_all(names.chapter, pluck="name") or members.make_chapters(names, CHAPTERS, fake)
		for _ in range(MEMBERS - len(existing)):
			# most members are in one or two chapters, a few in many
			memberships = min(len(chapters), int(rng.paretovariate(1.2)) - 1 + rng.randint(0, 1))
			existing.append(members.make_member(names, fake, chapters, memberships, rng))
		frappe.db.commit()
	print(f"Members: {len(existing)} (faker data) in {frappe.db.count(names.chapter)} chapters")
	return existing


def _history(effective: Any) -> int:
	"""Detail rows for the last HISTORY_DAYS days, ingested (creation) a few seconds after they ran."""
	import frappe

	from verenigingen_perf.utils.performance import buffer, capture, timeutil

	rng = random.Random(7)
	now = frappe.utils.now_datetime()
	start = timeutil.floor_hour(now) - timedelta(days=HISTORY_DAYS)
	names = [op[0] for op in OPERATIONS]
	weights = [op[6] for op in OPERATIONS]
	by_name = {op[0]: op for op in OPERATIONS}
	rows, total = [], 0
	hour = start
	released = timeutil.floor_hour(now) - timedelta(hours=RELEASE_HOURS_AGO)
	while hour < timeutil.floor_hour(now):
		# busier in office hours
		load = 1.6 if 8 <= hour.hour < 18 else 0.5
		for operation in rng.choices(names, weights, k=int(HISTORY_REQUESTS_PER_HOUR * load)):
			_name, kind, median, spread, statements, error_share, _w = by_name[operation]
			started = hour + timedelta(seconds=rng.uniform(0, 3599))
			duration = rng.lognormvariate(0, spread) * median
			if operation == RELEASED and hour >= released:
				duration *= RELEASE_SLOWER
				statements += RELEASE_STATEMENTS
			if rng.random() < 0.01:
				duration *= rng.paretovariate(1.5)
			failed = rng.random() < error_share
			values = {
				"operation": operation,
				"operation_type": kind,
				"started_at": timeutil.format_datetime(started),
				"duration_ms": round(duration, 3),
				"query_count": max(0, int(rng.gauss(statements, statements / 4 + 0.5))),
				"db_time_ms": round(duration * rng.uniform(0.2, 0.6), 3),
				"peak_rss_mb": round(rng.uniform(150, 190), 1),
				"rss_growth_kb": rng.choice((0, 0, 0, 4, 128)),
				"peak_alloc_kb": 0.0,
				"status": "error" if failed else "ok",
				"http_status": (500 if failed else 200) if kind in ("api", "page") else None,
				"user": "Administrator",
				"trace_id": capture.new_id(),
			}
			created = started + timedelta(seconds=rng.uniform(1, 60))
			rows.append(buffer.detail_row(capture.new_id(), timeutil.format_datetime(created), values))
		if len(rows) >= 10_000:
			buffer.insert_rows(rows)
			total += len(rows)
			rows = []
		hour += timedelta(hours=1)
	buffer.insert_rows(rows)
	frappe.db.commit()
	return total + len(rows)


# --- traffic ----------------------------------------------------------------------------------------


def _start_server(backend: str, port: int) -> subprocess.Popen:
	log_path = os.path.join(site.site_path(backend), "logs", "web.log")
	with open(log_path, "ab") as log:
		proc = subprocess.Popen(
			[sys.executable, "-m", "vperf_devruntime", "serve", "--port", str(port), "--db", backend],
			env={**os.environ, **site.site_env(backend)},
			stdout=log,
			stderr=subprocess.STDOUT,
		)
	deadline = time.monotonic() + 60
	while time.monotonic() < deadline:
		if proc.poll() is not None:
			raise RuntimeError(f"the web server exited with code {proc.returncode}; see {log_path}")
		try:
			requests.get(f"http://127.0.0.1:{port}/api/method/ping", timeout=2)
			return proc
		except requests.ConnectionError:
			time.sleep(0.2)
	proc.kill()
	raise RuntimeError(f"the web server did not answer within 60 s; see {log_path}")


def _login(url: str) -> requests.Session:
	session = requests.Session()
	response = session.post(
		f"{url}/api/method/login", data={"usr": "Administrator", "pwd": site.ADMIN_PASSWORD}, timeout=30
	)
	response.raise_for_status()
	return session


def _drive_traffic(session: requests.Session, url: str, member_names: list[str]) -> dict[str, int]:
	rng = random.Random(11)
	calls = [
		(
			14,
			lambda m: session.get(
				f"{url}/api/method/frappe.desk.form.load.getdoc", params={"doctype": "Member", "name": m}
			),
		),
		(6, lambda m: session.get(f"{url}/api/method/{N_PLUS_ONE}", params={"member": m})),
		(
			3,
			lambda m: session.get(
				f"{url}/api/method/vperf_devruntime.demo_endpoints.member_chapters_batched",
				params={"member": m},
			),
		),
		(6, lambda m: session.get(f"{url}/api/resource/Member", params={"limit_page_length": 20})),
		(4, lambda m: session.get(f"{url}/api/resource/Member/{m}")),
		(1, lambda m: session.get(f"{url}/api/resource/Member/no-such-member-{rng.randint(1, 99)}")),
		(3, lambda m: session.get(f"{url}/api/method/frappe.auth.get_logged_user")),
		(2, lambda m: session.get(f"{url}/api/method/ping")),  # excluded from measurement
	]
	weights = [w for w, _ in calls]
	errors = 0
	for _ in range(LIVE_REQUESTS):
		_w, call = rng.choices(calls, weights)[0]
		if call(rng.choice(member_names)).status_code >= 400:
			errors += 1
	return {"requests": LIVE_REQUESTS, "errors": errors}


def _run_jobs(frappe: Any) -> None:
	from verenigingen_perf.utils.performance import buffer, retention, rollup
	from verenigingen_perf.utils.performance.detection import job as detection

	# the server's flusher pushes its measurements to Redis every flush interval
	deadline = time.monotonic() + 10
	while buffer.state().buffered == 0 and time.monotonic() < deadline:
		time.sleep(0.2)
	time.sleep(1)
	drained = buffer.drain_job()
	print(f"Drain job: {drained['rows_inserted']} measurements from the Redis buffer into Performance Metric")
	report = rollup.rollup_job()
	print(
		f"Rollup job: {report['rows_aggregated']:,} rows folded in {report['hours_folded']} hours into "
		f"{report['buckets_written']:,} hourly and daily aggregates, watermark {report['watermark']} "
		f"({report['duration_s']} s); rows ingested since wait for their hour to complete"
	)
	kept = retention.retention_job()
	print(
		f"Retention job: {kept['detail_rows_deleted']:,} aggregated detail rows older than the retention "
		f"deleted in {kept['batches']} batches (slowest {kept['max_batch_s']} s)"
	)
	found = detection.detection_job()
	print(
		f"Detection job: {found['hours_evaluated']} hour(s) evaluated (a first run takes the last complete "
		f"one), rolling baselines refreshed {found['baselines_refreshed']}x, "
		f"{found['regressions_opened']} regression(s) opened, {found['anomalies_recorded']} anomalies "
		f"({found['duration_s']} s)"
	)
	frappe.db.commit()


# --- answers ----------------------------------------------------------------------------------------


def _call(session: requests.Session, url: str, method: str, **params: Any) -> dict[str, Any]:
	response = session.post(f"{url}/api/method/{API}.{method}", data=params, timeout=120)
	response.raise_for_status()
	return response.json()["message"]


def _print_answers(session: requests.Session, url: str, member_names: list[str]) -> None:
	import frappe

	health = _call(session, url, "quick_health_check")["system"]
	_print_health(health)

	most_linked = frappe.db.sql(
		"""select parent from `tabMember Chapter Membership` group by parent order by count(*) desc, parent
		limit 1"""
	)[0][0]
	analysis = _call(session, url, "comprehensive_member_analysis", member_name=most_linked)
	_print_member(analysis["measurement"])

	batch = _call(
		session,
		url,
		"batch_member_analysis",
		member_names=",".join([*random.Random(3).sample(member_names, 9), "no-such-member"]),
	)
	_print_batch(batch)

	dashboard = _call(session, url, "performance_dashboard_data")
	_print_dashboard(dashboard)


def _fmt(value: Any, digits: int = 1) -> str:
	if value is None:
		return "-"
	if isinstance(value, float):
		return f"{value:,.{digits}f}"
	return f"{value:,}" if isinstance(value, int) else str(value)


def _print_health(health: dict[str, Any]) -> None:
	print("\n== Health check (quick_health_check) ==")
	print(f"Score {_fmt(health['score'])} -> {health['level']}: {health['message']}")
	print(f"  {'component':24} {'value':>12} {'warning':>10} {'critical':>10} {'score':>7}  level")
	for c in health["components"]:
		print(
			f"  {c['name']:24} {_fmt(c['value'], 3):>12} {_fmt(c['warning'], 3):>10} "
			f"{_fmt(c['critical'], 3):>10} {_fmt(c['score']):>7}  {c['level']}"
		)
	print("Slowest operations in the window (p95 from merged sketches):")
	for op in health["slowest_operations"]:
		print(
			f"  {op['operation']:58} p95 {_fmt(op['p95_ms']):>9} ms  n={op['count']:<5} errors {op['error_rate']:.1%}"
		)
	found = health["detection"]
	print(
		f"Detection: {found['open_regressions']} open regression(s), {found['anomalies']} anomalies since "
		f"{found['anomalies_since']}"
	)
	for r in found["worst_regressions"]:
		print(f"  {r['operation']:42} {r['metric']:14} {r['change_value']:+.1%} since {r['first_detected']}")
	fresh = health["freshness"]
	print(
		f"Freshness: aggregated until {fresh['aggregated_until']}, last drain {fresh['last_drain_at']}, "
		f"buffered {fresh['buffered_measurements']['buffered']}, dropped {fresh['buffered_measurements']['dropped']}"
	)


def _print_member(m: dict[str, Any]) -> None:
	print(f"\n== Member analysis (comprehensive_member_analysis): {m['doctype']} {m['member']} ==")
	print(
		f"{m['child_rows']} child rows, {m['link_values']} link values; {m['statements']} SQL statements, "
		f"{_fmt(m['sql_ms'], 2)} ms SQL, {_fmt(m['wall_ms'], 2)} ms wall, "
		f"{_fmt(m['memory_peak_kb'])} KB peak allocations -> {m['level']}"
	)
	for shape in m["repeated_shapes"]:
		print(f"  N+1: {shape['count']} x  {shape['shape'][:110]}")
	for r in m["recommendations"]:
		print(f"  [{r['level']}] {r['kind']}: {r['advice']}")


def _print_batch(batch: dict[str, Any]) -> None:
	s = batch["summary"]
	print("\n== Batch analysis (batch_member_analysis) ==")
	print(
		f"{s['succeeded']}/{s['requested']} measured (success rate {s['success_rate']:.0%}); statements "
		f"mean {_fmt(s['statements_mean'])} p95 {_fmt(s['statements_p95'])}; wall ms mean "
		f"{_fmt(s['wall_ms_mean'], 2)} p95 {_fmt(s['wall_ms_p95'], 2)}; levels {s['levels']}"
	)
	for r in batch["results"]:
		n_plus_one = sum(x["count"] for x in r["repeated_shapes"])
		print(
			f"  {r['member']:12} {r['statements']:>4} statements {_fmt(r['wall_ms'], 2):>8} ms  "
			f"{r['level']:8} {'N+1 x' + str(n_plus_one) if n_plus_one else ''}"
		)
	for f in batch["failures"]:
		print(f"  {f['member']:12} failed: {f['reason']}")


def _print_dashboard(d: dict[str, Any]) -> None:
	print("\n== Dashboard (performance_dashboard_data) ==")
	print(
		f"Health {_fmt(d['health']['score'])} ({d['health']['level']}); generated {d['generated_at']}, "
		f"cached {d['cached']} for {d['cache_ttl_s']} s"
	)
	print(
		f"  {'window':10} {'count':>8} {'p50 ms':>9} {'p95 ms':>9} {'per min':>8} {'errors':>7} {'stmts/op':>9}"
	)
	for name, w in d["windows"].items():
		rate = "-" if w["error_rate"] is None else f"{w['error_rate']:.2%}"
		print(
			f"  {name:10} {w['count']:>8,} {_fmt(w['p50_ms']):>9} {_fmt(w['p95_ms']):>9} "
			f"{_fmt(w['throughput_per_min']):>8} {rate:>7} {_fmt(w['queries_per_operation']):>9}"
		)
	print("Slowest operations, last 24 h:")
	for op in d["slowest_operations_24h"]:
		print(f"  {op['operation']:58} p95 {_fmt(op['p95_ms']):>9} ms  n={op['count']}")
	peak = max((p["count"] for p in d["hourly_series"]), default=0) or 1
	print("Requests per hour, last 24 h (oldest first):")
	for p in d["hourly_series"]:
		bar = "#" * round(30 * p["count"] / peak)
		print(f"  {p['period_start'][5:16]} {p['count']:>6} {bar}")
	days = [p for p in d["daily_series"] if p["count"]]
	print(
		f"Daily series: {len(d['daily_series'])} days, {len(days)} with data; "
		+ ", ".join(f"{p['period_start'][5:10]} p95 {_fmt(p['p95_ms'])}" for p in days)
	)
	for table in d["storage"]["tables"]:
		print(
			f"Storage: {table['doctype']}: {table['rows']:,} rows, {table['bytes'] / 1e6:.1f} MB "
			f"(measured {d['storage']['measured_at']})"
		)
