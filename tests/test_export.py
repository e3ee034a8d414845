"""The export on the real site: a real Prometheus (Debian's package) scrapes the metrics endpoint with
the token, promtool checks the exposition, permissions and tokens, bounded cardinality, and the OTLP
export to a local OTLP/HTTP receiver (up and down)."""

import gzip
import http.server
import math
import shutil
import socket
import subprocess
import threading
import time
from datetime import timedelta

import frappe
import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus_server import METRICS_PATH, PROMETHEUS, query, wait_for
from tests.test_capture import (
	TESTING,
	drain_until,
	rows_for,
	wait_for_server_config,
)
from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.testing import site_state
from verenigingen_perf.testing.fixtures import BENCH_SITE
from verenigingen_perf.utils.performance import buffer, capture, config, retention, rollup, timeutil
from verenigingen_perf.utils.performance.export import otlp
from verenigingen_perf.utils.performance.schema import (
	AGGREGATE,
	DATABASE_SNAPSHOT,
	METRIC,
	METRICS_USER,
	OVERFLOW_OPERATION,
)
from verenigingen_perf.utils.performance.sketch import Summary

API = "verenigingen_perf.api.export"
BOUNDS_MS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500, 1000)
REQUESTS = 37
# the span export's tests need the otlp extra (not part of the test extra: see pyproject.toml)
NEEDS_OTLP = pytest.mark.skipif(
	not config.otlp_installed(), reason="the OTLP export is not installed (pip install -e '.[otlp]')"
)


@pytest.fixture
def export_settings(default_settings):
	"""Sampling 1 and the test's histogram bounds, applied until the web server has them."""

	def _apply(client, **values):
		config.update_config(
			{"sampling_rate": 1, "config_refresh_s": 1, "prometheus_buckets_ms": list(BOUNDS_MS), **values}
		)
		frappe.db.commit()
		capture.forget_local_config()
		wait_for_server_config(client, lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")

	return _apply


def rotate_token(client) -> str:
	response = client.call(f"{API}.rotate_metrics_token")
	assert response.status_code == 200, response.text
	return response.json()["message"]["token"]


def scrape(server_url: str, **headers) -> requests.Response:
	if BENCH_SITE:
		# a bench picks the site by the Host header
		headers.setdefault("Host", BENCH_SITE)
	return requests.get(f"{server_url}{METRICS_PATH}", headers=headers, timeout=60)


def roll_up_now() -> None:
	"""Fold every hour ingested so far (the current one too), as the hourly rollup will."""
	frappe.db.rollback()
	report = rollup.run_rollup(frappe.utils.now_datetime() + timedelta(hours=2))
	assert not report.errors, report


def bucket_of(value_ms: float) -> int:
	"""The index of the histogram bucket (upper bounds BOUNDS_MS, then +Inf) holding value_ms."""
	return next((i for i, bound in enumerate(BOUNDS_MS) if value_ms <= bound), len(BOUNDS_MS))


def app_p95_ms(operation: str) -> float:
	merged = Summary()
	for row in frappe.get_all(
		AGGREGATE, filters={"granularity": "hour", "operation": operation}, fields=["*"], limit=0
	):
		merged.merge(Summary.from_values(row))
	assert merged.count == REQUESTS
	return merged.quantile(0.95)


@pytest.mark.skipif(not shutil.which("promtool") and not shutil.which(PROMETHEUS), reason="no prometheus")
def test_a_real_prometheus_scrapes_counters_and_histograms_that_never_fall(
	site, clean_slate, http, server_url, export_settings, prometheus_server
):
	admin = http("Administrator")
	export_settings(admin)
	token = rotate_token(admin)
	# a method nothing else here calls (the configuration probe calls run_statements)
	operation = "frappe.auth.get_logged_user"
	for _ in range(REQUESTS):
		assert admin.call(operation, "GET").status_code == 200
	drain_until(lambda: len(rows_for(operation=operation)) >= REQUESTS, f"{REQUESTS} rows")
	assert len(rows_for(operation=operation)) == REQUESTS
	roll_up_now()
	p95_ms = app_p95_ms(operation)

	# promtool (shipped with Prometheus) accepts what a scraper gets
	exposition = scrape(server_url, Authorization=f"Bearer {token}")
	assert exposition.status_code == 200, exposition.text
	assert token not in exposition.text
	check = subprocess.run(
		["promtool", "check", "metrics"], input=exposition.content, capture_output=True, timeout=60
	)
	assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

	prometheus_url = prometheus_server(server_url, token)
	wait_for(prometheus_url, 'up{job="vperf"}', lambda r: r and r[0]["value"][1] == "1", "up == 1")
	selector = f'{{operation="{operation}",site="{frappe.local.site}"}}'
	result = wait_for(prometheus_url, f"vperf_operations_total{selector}", bool, "the operation's counter")
	assert float(result[0]["value"][1]) == REQUESTS
	quantile = wait_for(
		prometheus_url,
		f"histogram_quantile(0.95, sum by (le) (vperf_operation_duration_seconds_bucket{selector}))",
		lambda r: r and not math.isnan(float(r[0]["value"][1])),
		"histogram_quantile",
	)
	estimate_ms = float(quantile[0]["value"][1]) * 1000
	# histogram_quantile interpolates inside the bucket holding the observation of rank 0.95 n; the
	# app's p95 is the sketch's value at rank 0.95 (n - 1), the same or an earlier observation (with
	# few requests a tail can put the two buckets apart). So the estimate lies from the app's p95's
	# bucket to that observation's bucket, each give or take one (a value within the sketch's
	# accuracy of a bound is counted on either side of it)
	durations = sorted(r["duration_ms"] for r in rows_for(operation=operation))
	target = durations[math.ceil(0.95 * len(durations)) - 1]
	low, high = bucket_of(p95_ms) - 1, bucket_of(target) + 1
	assert low <= bucket_of(estimate_ms) <= high, (p95_ms, target, estimate_ms, durations[-5:])

	# retention deletes the detail rows and every aggregate: no counter falls
	later = frappe.utils.now_datetime() + timedelta(days=800)
	# a fresh snapshot: on SQLite a transaction that read before the server's last commit cannot write
	frappe.db.rollback()
	report = retention.run_retention(later)
	assert report.detail_rows_deleted >= REQUESTS and report.hourly_rows_deleted > 0
	assert not frappe.db.count(METRIC, {"operation": operation})
	seen_before = time.time()
	wait_for(
		prometheus_url,
		f"timestamp(vperf_operations_total{selector})",
		lambda r: r and float(r[0]["value"][1]) > seen_before + 1,
		"a scrape after retention",
	)
	assert float(query(prometheus_url, f"vperf_operations_total{selector}")[0]["value"][1]) == REQUESTS
	resets = query(prometheus_url, f"resets(vperf_operations_total{selector}[5m])")
	assert float(resets[0]["value"][1]) == 0


def test_an_unreadable_database_snapshot_leaves_its_ratio_out_not_the_scrape(
	site, clean_slate, http, server_url, planted_failures
):
	token = rotate_token(http("Administrator"))
	errors_before = buffer.state().capture_errors
	# the newest snapshot, stored broken (edited in the database)
	taken_at = frappe.utils.now_datetime() + timedelta(days=1)
	frappe.get_doc(
		{"doctype": DATABASE_SNAPSHOT, "taken_at": taken_at, "db_type": frappe.db.db_type, "snapshot": "{no"}
	).db_insert()
	frappe.db.commit()
	try:
		response = scrape(server_url, Authorization=f"Bearer {token}")
	finally:
		frappe.db.delete(DATABASE_SNAPSHOT, {"snapshot": "{no"})
		frappe.db.commit()
	assert response.status_code == 200, response.text[:300]
	samples = {s.name for f in text_string_to_metric_families(response.text) for s in f.samples}
	assert "vperf_database_snapshot_timestamp_seconds" in samples
	assert "vperf_database_cache_hit_ratio" not in samples
	# counted among the app's own failures (and logged with its traceback)
	assert buffer.state().capture_errors > errors_before


def with_api_key(user: str) -> str:
	"""Give `user` an API key and secret; returns `key:secret`. Retried on SQLite's lock (the web
	server may be committing meanwhile)."""
	for attempt in range(5):
		try:
			frappe.db.rollback()
			doc = frappe.get_doc("User", user)
			doc.api_key = frappe.generate_hash(length=15)
			secret = doc.api_secret = frappe.generate_hash(length=15)
			doc.save(ignore_permissions=True)
			frappe.db.commit()
			return f"{doc.api_key}:{secret}"
		except frappe.QueryDeadlockError:
			frappe.db.rollback()
			if attempt == 4:
				raise
			time.sleep(0.5)
	raise AssertionError("unreachable")


def test_only_readers_and_the_token_get_the_exposition(site, clean_slate, http, make_user, server_url):
	reader_name, stranger_name = make_user("Performance Manager"), make_user()
	reader_key, stranger_key = with_api_key(reader_name), with_api_key(stranger_name)
	admin = http("Administrator")
	token = rotate_token(admin)
	reader = http(reader_name)
	stranger = http(stranger_name)
	guest = http(None)
	assert reader.call(f"{API}.metrics", "GET").status_code == 200
	for client in (guest, stranger):
		response = client.call(f"{API}.metrics", "GET")
		assert response.status_code == 403, (client.user, response.status_code)
		assert "vperf_operations" not in response.text and "Traceback" not in response.text
	for header in (f"Bearer {token[:-1]}x", "Bearer ", "Bearer " + "a" * 300, f"Basic {token}", token):
		response = scrape(server_url, Authorization=header)
		# refused by the framework (401; 400 for a Basic header that is not base64) or by the endpoint
		assert response.status_code in (400, 401, 403), (header[:12], response.status_code)
		assert "vperf_operations" not in response.text and token not in response.text
	assert scrape(server_url).status_code == 403
	good = scrape(server_url, Authorization=f"Bearer {token}")
	assert good.status_code == 200 and "vperf_operations_total" in good.text
	# the token opens the metrics endpoint only
	other = requests.get(
		f"{server_url}/api/method/{TESTING}.run_statements",
		headers={"Authorization": f"Bearer {token}", **({"Host": BENCH_SITE} if BENCH_SITE else {})},
		timeout=60,
	)
	assert other.status_code in (401, 403)
	# rotating: the old token stops working; only a System Manager may rotate
	assert reader.call(f"{API}.rotate_metrics_token").status_code == 403
	new = rotate_token(admin)
	assert new != token
	assert scrape(server_url, Authorization=f"Bearer {token}").status_code in (401, 403)
	assert scrape(server_url, Authorization=f"Bearer {new}").status_code == 200
	# Frappe's API key and secret: a reader's opens it, a plain user's does not
	assert scrape(server_url, Authorization=f"token {reader_key}").status_code == 200
	assert scrape(server_url, Authorization=f"token {stranger_key}").status_code == 403
	# the token is in no log the site keeps
	assert not frappe.get_all("Error Log", filters={"error": ("like", f"%{new}%")})


def test_the_token_acts_as_the_metrics_user_with_the_reader_role_only(
	site, clean_slate, http, export_settings, server_url
):
	"""A scrape with the token runs as the app's metrics user (never Administrator): the request's own
	measurement names it. A site that gives that user another role, or disables it, disables the token
	instead of letting it act with more."""
	admin = http("Administrator")
	# the scrapes are measured here (by default the metrics path is not)
	export_settings(admin, excluded_paths=["/assets/"])
	token = rotate_token(admin)
	# only this test's scrapes (an earlier test's refused ones may still wait in the buffer)
	since = timeutil.format_datetime(frappe.utils.now_datetime())

	def scraped_and_measured() -> list[dict]:
		# the web server takes up the new exclusions within `config_refresh_s`: scrape until it has
		good = scrape(server_url, Authorization=f"Bearer {token}")
		assert good.status_code == 200 and "vperf_operations_total" in good.text
		rows = rows_for(operation=("like", "%export.metrics"), started_at=(">=", since))
		# a fresh snapshot for the next drain's write (SQLite: the server committed meanwhile)
		frappe.db.rollback()
		return rows

	scrapes = drain_until(scraped_and_measured, "a scrape's measurement")
	assert {row["user"] for row in scrapes} == {METRICS_USER}
	explicit = frappe.get_all(
		"Has Role", filters={"parent": METRICS_USER, "parenttype": "User"}, pluck="role"
	)
	assert explicit == [PERFORMANCE_MANAGER]
	assert frappe.db.get_value("User", METRICS_USER, "enabled") == 1

	def change_user(change) -> None:
		"""A change of the metrics user in a transaction of its own, tried again while SQLite's one
		writer is the web server (it commits between the test's statements)."""
		for attempt in range(5):
			frappe.db.rollback()
			try:
				user = frappe.get_doc("User", METRICS_USER)
				change(user)
				frappe.db.commit()
				return
			except frappe.QueryDeadlockError:
				if attempt == 4:
					raise
				time.sleep(1)

	def enable_alone(user) -> None:
		user.remove_roles("System Manager")
		user.reload()
		user.enabled = 1
		user.save(ignore_permissions=True)

	def disable(user) -> None:
		user.enabled = 0
		user.save(ignore_permissions=True)

	# the site's metrics user as it was stored, not only as it reads (its date, its change log)
	with site_state.rows_put_back(("User", {"name": METRICS_USER}), ("Has Role", {"parent": METRICS_USER})):
		try:
			change_user(lambda user: user.add_roles("System Manager"))
			assert scrape(server_url, Authorization=f"Bearer {token}").status_code in (401, 403)
			change_user(lambda user: user.remove_roles("System Manager"))
			change_user(disable)
			assert scrape(server_url, Authorization=f"Bearer {token}").status_code in (401, 403)
		finally:
			change_user(enable_alone)
		assert scrape(server_url, Authorization=f"Bearer {token}").status_code == 200


def plant(operations: list[str], created, per_operation: int = 1) -> None:
	frappe.db.rollback()
	rows = []
	moment = timeutil.format_datetime(created)
	for i, operation in enumerate(operations):
		for _ in range(per_operation):
			values = {
				"operation": operation,
				"operation_type": "api",
				"started_at": moment,
				"duration_ms": 1.0 + i % 50,
				"status": "ok",
			}
			rows.append(buffer.detail_row(capture.new_id(), moment, values))
	buffer.insert_rows(rows)
	frappe.db.commit()


def exposed_operations(server_url: str, token: str) -> dict[str, float]:
	response = scrape(server_url, Authorization=f"Bearer {token}", Accept="application/openmetrics-text")
	assert response.status_code == 200
	families = {f.name: f for f in parse_openmetrics(response.text)}
	for family in families.values():
		assert all(s.labels.get("site") == frappe.local.site for s in family.samples), family.name
	return {s.labels["operation"]: s.value for s in families["vperf_operations"].samples}


def test_ten_thousand_operations_expose_at_most_n_plus_one_and_none_falls(
	site, clean_slate, http, server_url, default_settings
):
	admin = http("Administrator")
	token = rotate_token(admin)
	config.update_config({"prometheus_top_operations": 20, "max_operations_per_hour": 100_000})
	frappe.db.commit()
	hour = timeutil.floor_hour(frappe.utils.now_datetime()) - timedelta(hours=6)
	plant([f"junk/{i}" for i in range(10_000)], hour)
	plant([f"busy/{i}" for i in range(5)], hour, per_operation=3)
	rollup.run_rollup(hour + timedelta(hours=2))
	first = exposed_operations(server_url, token)
	assert len(first) <= 21 and OVERFLOW_OPERATION in first
	assert {f"busy/{i}" for i in range(5)} <= set(first)
	assert sum(first.values()) == 10_015
	# an hour later other operations are busier: they take series, none of the earlier ones falls
	plant([f"late/{i}" for i in range(30)], hour + timedelta(hours=1), per_operation=5)
	rollup.run_rollup(hour + timedelta(hours=3))
	second = exposed_operations(server_url, token)
	assert len(second) <= 21
	assert {f"late/{i}" for i in range(15)} & set(second)
	for operation, value in first.items():
		assert operation not in second or second[operation] >= value, operation
	assert second[OVERFLOW_OPERATION] >= first[OVERFLOW_OPERATION]
	# the counters stopped where the rows end: nothing counted twice
	counted = frappe.db.sql("select sum(`count`) from `tabPerformance Export Counter`")[0][0]
	assert counted == 10_015 + 150


class Receiver(http.server.ThreadingHTTPServer):
	"""A local OTLP/HTTP traces receiver: decodes every request with opentelemetry-proto."""

	def __init__(self):
		self.spans: list = []
		self.requests = 0
		super().__init__(("127.0.0.1", 0), ReceiverHandler)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
	def do_POST(self):
		from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
			ExportTraceServiceRequest,
			ExportTraceServiceResponse,
		)

		body = self.rfile.read(int(self.headers["Content-Length"]))
		if self.headers.get("Content-Encoding") == "gzip":
			body = gzip.decompress(body)
		request = ExportTraceServiceRequest()
		request.ParseFromString(body)
		self.server.requests += 1
		for resource_spans in request.resource_spans:
			service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
			for scope_spans in resource_spans.scope_spans:
				for span in scope_spans.spans:
					self.server.spans.append((service, span, self.headers.get("x-team")))
		answer = ExportTraceServiceResponse().SerializeToString()
		self.send_response(200)
		self.send_header("Content-Type", "application/x-protobuf")
		self.send_header("Content-Length", str(len(answer)))
		self.end_headers()
		self.wfile.write(answer)

	def log_message(self, *args):
		pass


@pytest.fixture
def receiver():
	server = Receiver()
	thread = threading.Thread(target=server.serve_forever, daemon=True)
	thread.start()
	yield server
	server.shutdown()
	server.server_close()


def set_otlp(endpoint: str, **values) -> None:
	config.update_config({"otlp_enabled": 1, "otlp_endpoint": endpoint, "otlp_timeout_s": 2, **values})
	doc = frappe.get_single("Performance Settings")
	doc.otlp_headers = "x-team=vperf-tests"
	doc.save()
	frappe.db.commit()


@NEEDS_OTLP
def test_otlp_receives_every_span_of_a_request_and_its_job_with_the_parent_link(
	site, clean_slate, http, export_settings, receiver, run_background_jobs
):
	admin = http("Administrator")
	export_settings(admin)
	set_otlp(f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces")
	trace = admin.call(f"{TESTING}.enqueue_probe", statements=2).headers[capture.TRACE_HEADER]
	run_background_jobs()
	rows = drain_until(lambda: len(r := rows_for(trace_id=trace)) >= 2 and r, "the request and its job")
	report = otlp.run_export()
	assert report.status == "ok" and report.spans_exported >= 2, report
	spans = {s.span_id: (service, s, team) for service, s, team in receiver.spans}
	request_row = next(r for r in rows if r["operation_type"] == "api")
	job_row = next(r for r in rows if r["operation_type"] == "job")
	request_span = spans[otlp.span_id(request_row["name"]).to_bytes(8, "big")]
	job_span = spans[otlp.span_id(job_row["name"]).to_bytes(8, "big")]
	assert job_span[1].parent_span_id == request_span[1].span_id
	assert job_span[1].trace_id == request_span[1].trace_id == otlp.trace_id(trace).to_bytes(16, "big")
	assert job_span[1].name == f"{TESTING}.probe_job" and request_span[1].name == f"{TESTING}.enqueue_probe"
	attributes = {a.key: a.value for a in job_span[1].attributes}
	assert attributes["vperf.statements"].int_value == job_row["query_count"] >= 2
	assert request_span[0]["service.name"] == frappe.local.site and request_span[2] == "vperf-tests"
	assert otlp.backlog_state()[0] == 0


@NEEDS_OTLP
def test_a_receiver_that_is_down_loses_nothing_from_the_database_and_the_backlog_stays_bounded(
	site, clean_slate, receiver
):
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		closed_port = s.getsockname()[1]
	set_otlp(f"http://127.0.0.1:{closed_port}/v1/traces", otlp_backlog_max=50, otlp_batch_size=20)
	for _ in range(3):
		for i in range(40):
			buffer.add(
				{
					"name": capture.new_id(),
					"operation": f"otlp.down.{i}",
					"operation_type": "custom",
					"started_at": time.time(),
					"duration_ms": 1.0,
					"status": "ok",
					"trace_id": capture.new_id(),
				},
				config.get_config().monitoring,
			)
		buffer.flush()
		drained = buffer.drain()
		assert drained.rows_inserted == 40
		report = otlp.run_export()
		assert report.failed_batches == 1 and report.spans_exported == 0, report
	waiting, dropped, exported = otlp.backlog_state()
	assert waiting == 50 and dropped == 70 and exported == 0
	assert frappe.db.count(METRIC, {"operation": ("like", "otlp.down.%")}) == 120
	# the receiver is back: the backlog goes out, the newest 50 spans
	set_otlp(
		f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces", otlp_backlog_max=50, otlp_batch_size=20
	)
	report = otlp.run_export()
	assert report.spans_exported == 50 and otlp.backlog_state()[0] == 0
	assert len(receiver.spans) == 50


def test_the_export_is_off_by_default_and_the_drain_then_keeps_no_backlog(site, clean_slate):
	assert not config.get_config().export.otlp_enabled
	planted = capture.new_id()
	buffer.add(
		{
			"name": planted,
			"operation": "otlp.off",
			"operation_type": "custom",
			"started_at": time.time(),
			"duration_ms": 1.0,
			"status": "ok",
		},
		config.get_config().monitoring,
	)
	buffer.flush()
	# a live site's own measurements may be drained with it
	assert buffer.drain().rows_inserted >= 1 and frappe.db.exists(METRIC, planted)
	assert otlp.backlog_state()[0] == 0
	assert otlp.run_export().status == "disabled"
