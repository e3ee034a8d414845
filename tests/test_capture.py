"""Capture over HTTP against the site's real web server, the buffer and the drain."""

import time

import frappe
import orjson
import pytest

from verenigingen_perf.testing.fixtures import bench_mode
from verenigingen_perf.utils.performance import buffer, capture, config, timeutil

TESTING = "verenigingen_perf.api.testing"
DRAIN_WAIT_S = 60


@pytest.fixture
def overrides(default_settings):
	"""Apply configuration overrides for a test, restored afterwards; waits until the web server
	has the new configuration (it re-reads at most every `config_refresh_s`)."""
	applied: list[dict] = []

	def _apply(**values):
		refresh_before = config.get_config().monitoring.config_refresh_s
		config.update_config({"config_refresh_s": 1, **values})
		frappe.db.commit()
		applied.append(values)
		capture.forget_local_config()
		if bench_mode():
			# a bench serves with several workers: each keeps its copy for the interval it last read
			time.sleep(refresh_before + 0.5)

	return _apply


def rows_for(**filters) -> list[dict]:
	return frappe.get_all(
		"Performance Metric",
		filters=filters,
		fields=[
			"name",
			"operation",
			"operation_type",
			"query_count",
			"db_time_ms",
			"duration_ms",
			"status",
			"http_status",
			"user",
			"trace_id",
			"parent_span",
			"error",
			"peak_rss_mb",
		],
	)


def drain_until(predicate, what: str) -> list[dict]:
	"""Drain repeatedly until `predicate()` holds (the server flushes in the background)."""
	deadline = time.monotonic() + DRAIN_WAIT_S
	while True:
		buffer.drain()
		result = predicate()
		if result:
			return result
		if time.monotonic() > deadline:
			pytest.fail(f"{what}: not seen within {DRAIN_WAIT_S}s")
		time.sleep(0.2)


def rows_of_trace(trace_id: str, expected: int = 1) -> list[dict]:
	return drain_until(
		lambda: (r := rows_for(trace_id=trace_id)) and len(r) >= expected and r,
		f"{expected} row(s) of {trace_id}",
	)


def wait_for_server_config(client, predicate, what: str) -> None:
	"""Poll with requests until the web server shows the configuration change."""
	deadline = time.monotonic() + DRAIN_WAIT_S
	while not predicate(client.call(f"{TESTING}.run_statements", count=0)):
		if time.monotonic() > deadline:
			pytest.fail(f"the web server did not pick up {what}")
		time.sleep(0.2)


def test_query_count_operation_user_and_status(site, http, make_user, overrides):
	overrides(sampling_rate=1)
	client = http(make_user("System Manager"))
	wait_for_server_config(client, lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")
	baseline_response = client.call(f"{TESTING}.run_statements", count=0)
	n = 7
	response = client.call(f"{TESTING}.run_statements", count=n)
	assert response.status_code == 200
	[baseline] = rows_of_trace(baseline_response.headers[capture.TRACE_HEADER])
	[row] = rows_of_trace(response.headers[capture.TRACE_HEADER])
	# the framework's own per-request statements are measured by the count=0 call, not guessed
	assert row["query_count"] - baseline["query_count"] == n
	assert row["operation"] == f"{TESTING}.run_statements"
	assert row["operation_type"] == "api"
	assert row["user"] == client.user
	assert (row["status"], row["http_status"]) == ("ok", 200)
	assert row["duration_ms"] > 0 and row["db_time_ms"] > 0 and row["peak_rss_mb"] > 0


@pytest.mark.parametrize(
	("kind", "http_status", "status", "error"),
	[
		("validation", 417, "client_error", "ValidationError"),
		("server", 500, "error", "RuntimeError"),
	],
)
def test_a_failing_request_is_recorded_with_whose_error_it_was(
	site, http, overrides, kind, http_status, status, error, planted_failures
):
	overrides(sampling_rate=1)
	client = http("Administrator")
	wait_for_server_config(client, lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")
	response = client.call(f"{TESTING}.fail", kind=kind)
	assert response.status_code == http_status
	[row] = rows_of_trace(response.headers[capture.TRACE_HEADER])
	assert (row["status"], row["http_status"]) == (status, http_status)
	# a real method that failed keeps its own name
	assert row["operation"] == f"{TESTING}.fail"
	assert error in row["error"]


def test_unknown_methods_and_missing_pages_never_become_operations_of_their_own(site, http, overrides):
	"""Guest requests for methods and pages that do not exist (also names that a database collation
	would equate) are filed under two fixed names."""
	overrides(sampling_rate=1)
	guest = http(None)
	wait_for_server_config(http("Administrator"), lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")
	paths = ["/api/method/cafe", "/api/method/caf%C3%A9", "/api/method/CAFE ", "/api/method/frappe.nope"]
	paths += [f"/xyz-{capture.new_id()}" for _ in range(3)] + ["/api/resource/No Such Doctype"]
	traces = []
	for path in paths:
		response = guest.session.get(f"{guest.base_url}{path}", timeout=30)
		assert response.status_code >= 400
		traces.append(response.headers[capture.TRACE_HEADER])
	rows = drain_until(
		lambda: len(r := rows_for(trace_id=("in", traces))) == len(traces) and r, "the junk requests' rows"
	)
	assert {row["operation"] for row in rows} <= {"(unknown method)", "(not found)", "(failed page)"}


def test_requests_refused_before_the_hooks_are_counted(site, http, overrides):
	"""A desk session's POST without its CSRF token is refused by the framework before any hook runs:
	it cannot be measured, but it is counted."""
	# a session of its own (one per client); a new System Manager's first desk page does not answer on
	# the dev runtime since its multi-site fixes (open defect of the runtime, not seen on a v15 bench)
	client = http("Administrator")
	# opening the desk gives the session its CSRF token; from then on every POST must carry it
	assert client.session.get(f"{client.base_url}/app", timeout=60).status_code == 200
	before = buffer.state().unmeasured_requests
	response = client.session.post(
		f"{client.base_url}/api/method/{TESTING}.run_statements", data={"count": 1}
	)
	assert response.status_code in (400, 403), response.text[:200]
	assert capture.TRACE_HEADER not in response.headers
	assert buffer.state().unmeasured_requests == before + 1


def test_an_error_answer_of_the_app_carries_no_traceback(site, http, make_user, default_settings):
	"""Also where the framework refuses the call before the endpoint runs, with tracebacks allowed in
	System Settings (Frappe v15's default)."""
	before = frappe.db.get_single_value("System Settings", "allow_error_traceback")
	frappe.db.set_single_value("System Settings", "allow_error_traceback", 1)
	frappe.db.commit()
	try:
		for client in (http(None), http(make_user("Desk User"))):
			for method in (
				"verenigingen_perf.api.performance.quick_health_check",
				"verenigingen_perf.api.config.get_config",
			):
				response = client.call(method)
				assert response.status_code == 403, (client.user, method, response.text[:200])
				assert "Traceback" not in response.text and "exc" not in response.json()
	finally:
		frappe.db.set_single_value("System Settings", "allow_error_traceback", before or 0)
		frappe.db.commit()


def test_a_job_is_tied_to_the_request_that_enqueued_it(site, http, overrides, run_background_jobs):
	overrides(sampling_rate=1)
	client = http("Administrator")
	wait_for_server_config(client, lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")
	response = client.call(f"{TESTING}.enqueue_probe", statements=3)
	assert response.status_code == 200
	trace_id = response.headers[capture.TRACE_HEADER]
	run_background_jobs()
	rows = rows_of_trace(trace_id, expected=2)
	request_row = next(r for r in rows if r["operation_type"] == "api")
	job_row = next(r for r in rows if r["operation_type"] == "job")
	assert job_row["operation"] == f"{TESTING}.probe_job"
	assert job_row["parent_span"] == request_row["name"]
	assert job_row["query_count"] >= 3
	assert job_row["status"] == "ok"


def test_sampling_is_decided_once_per_trace_request_and_jobs_alike(
	site, http, overrides, run_background_jobs
):
	"""At a sampling rate between 0 and 1, a request and the job it enqueues are measured together
	or not at all: every measured trace has both rows, none has only one."""
	refresh_before = config.get_config().monitoring.config_refresh_s
	overrides(sampling_rate=0.5)
	time.sleep(refresh_before + 0.5)  # every server process has re-read the configuration
	client = http("Administrator")
	since = timeutil.format_datetime(frappe.utils.now_datetime())
	sampled = set()
	for _ in range(24):
		response = client.call(f"{TESTING}.enqueue_probe")
		assert response.status_code == 200
		if capture.TRACE_HEADER in response.headers:
			sampled.add(response.headers[capture.TRACE_HEADER])
	run_background_jobs()
	assert 0 < len(sampled) < 24
	rows = drain_until(
		lambda: (
			(r := rows_for(operation=("like", f"{TESTING}.%probe%"), started_at=(">=", since)))
			and len(r) >= 2 * len(sampled)
			and r
		),
		"the sampled requests' and jobs' rows",
	)
	by_trace: dict[str, list[str]] = {}
	for row in rows:
		by_trace.setdefault(row["trace_id"], []).append(row["operation_type"])
	assert set(by_trace) == sampled
	assert all(sorted(types) == ["api", "job"] for types in by_trace.values())


def test_a_job_enqueued_by_a_job_joins_the_trace(site, http, overrides, run_background_jobs):
	"""The job's worker process never served a request; the job it enqueues still carries the trace."""
	overrides(sampling_rate=1)
	client = http("Administrator")
	wait_for_server_config(client, lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")
	trace_id = client.call(f"{TESTING}.enqueue_probe", chain=1).headers[capture.TRACE_HEADER]
	run_background_jobs()
	rows = rows_of_trace(trace_id, expected=3)
	request_row = next(r for r in rows if r["operation_type"] == "api")
	jobs = {r["parent_span"]: r for r in rows if r["operation_type"] == "job"}
	first = jobs[request_row["name"]]
	assert jobs[first["name"]]["operation"] == f"{TESTING}.probe_job"


def test_a_failing_job_is_recorded_as_error(site, http, overrides, run_background_jobs, planted_failures):
	overrides(sampling_rate=1)
	client = http("Administrator")
	wait_for_server_config(client, lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")
	trace_id = client.call(f"{TESTING}.enqueue_probe", fail=1).headers[capture.TRACE_HEADER]
	run_background_jobs()
	rows = rows_of_trace(trace_id, expected=2)
	job_row = next(r for r in rows if r["operation_type"] == "job")
	assert job_row["status"] == "error"
	assert "planted job failure" in job_row["error"]


def test_sampling_zero_records_nothing_and_one_records_everything(site, http, make_user, overrides):
	probe = http("Administrator")
	overrides(sampling_rate=0)
	wait_for_server_config(probe, lambda r: capture.TRACE_HEADER not in r.headers, "sampling 0")
	unsampled = http(make_user("System Manager"))
	for _ in range(10):
		response = unsampled.call(f"{TESTING}.run_statements", count=1)
		assert response.status_code == 200
		assert capture.TRACE_HEADER not in response.headers
	time.sleep(1)  # longer than the flush interval: anything queued would have reached Redis
	buffer.drain()
	assert rows_for(user=unsampled.user) == []

	overrides(sampling_rate=1)
	wait_for_server_config(probe, lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")
	sampled = http(make_user("System Manager"))
	traces = {
		sampled.call(f"{TESTING}.run_statements", count=1).headers[capture.TRACE_HEADER] for _ in range(10)
	}
	run_statements = f"{TESTING}.run_statements"
	rows = drain_until(
		lambda: len(r := rows_for(user=sampled.user, operation=run_statements)) >= 10 and r, "10 sampled rows"
	)
	assert {r["trace_id"] for r in rows} == traces


def test_an_excluded_path_records_nothing(site, http, make_user, overrides):
	probe = http("Administrator")
	overrides(sampling_rate=1, excluded_paths=f"/api/method/{TESTING}.run_statements")
	wait_for_server_config(probe, lambda r: capture.TRACE_HEADER not in r.headers, "the exclusion")
	client = http(make_user("System Manager"))
	for _ in range(5):
		assert client.call(f"{TESTING}.run_statements", count=1).status_code == 200
	other = client.call(f"{TESTING}.fail", kind="validation")
	assert capture.TRACE_HEADER in other.headers  # the rest of the site is still measured
	# once the later request's row is in, anything the excluded ones could have queued is in too
	rows_of_trace(other.headers[capture.TRACE_HEADER])
	assert rows_for(user=client.user, operation=f"{TESTING}.run_statements") == []


def test_redis_down_requests_succeed_and_drops_are_counted(site, http, make_user, overrides, redis_outage):
	overrides(sampling_rate=1)
	guest = http(make_user("System Manager"))
	wait_for_server_config(guest, lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")
	requests_while_down = 5
	with redis_outage():
		for _ in range(requests_while_down):
			response = guest.call(f"{TESTING}.run_statements", count=2)
			assert response.status_code == 200, response.text[:300]
			assert response.json()["message"] == 2
		time.sleep(1)  # the server's flusher tries, and fails, to push them
	# Redis came back empty; the server reports the drops it counted while Redis was away
	deadline = time.monotonic() + DRAIN_WAIT_S
	while buffer.state().dropped < requests_while_down:
		assert time.monotonic() < deadline, f"dropped counter stayed at {buffer.state().dropped}"
		time.sleep(0.2)
	assert guest.call(f"{TESTING}.run_statements", count=0).status_code == 200


def synthetic_entries(count: int, operation: str) -> list[dict]:
	now = time.time()
	return [
		{
			"name": capture.new_id(),
			"operation": operation,
			"operation_type": "custom",
			"started_at": now,
			"duration_ms": 1.0,
			"query_count": 0,
			"db_time_ms": 0.0,
			"peak_rss_mb": 0.0,
			"rss_growth_kb": 0,
			"peak_alloc_kb": 0.0,
			"status": "ok",
			"http_status": 0,
			"user": "Administrator",
			"trace_id": capture.new_id(),
			"parent_span": None,
			"error": None,
			"context": {"i": i},
		}
		for i in range(count)
	]


def push(entries: list[dict]) -> None:
	monitoring = config.get_config().monitoring
	for entry in entries:
		buffer.add(entry, monitoring)
	buffer.flush()


def freshly_buffered(kind: str, count: int) -> tuple[str, list[dict]]:
	"""`count` measurements of a new operation in an otherwise drained buffer: the operation and them."""
	buffer.drain()
	operation = f"test.{kind}.{capture.new_id()}"
	entries = synthetic_entries(count, operation)
	push(entries)
	return operation, entries


def test_two_concurrent_drains_land_every_measurement_exactly_once(site, overrides, in_threads):
	overrides(drain_batch_size=25)
	operation, entries = freshly_buffered("concurrent-drain", 1000)
	in_threads(buffer.drain, count=2)
	buffer.drain()
	names = frappe.get_all("Performance Metric", filters={"operation": operation}, pluck="name")
	assert len(names) == len(entries)
	assert set(names) == {e["name"] for e in entries}


def test_a_drain_that_died_is_taken_over_without_loss_or_duplicates(site, overrides):
	overrides(drain_batch_size=10, drain_claim_timeout_s=10)
	operation, entries = freshly_buffered("dead-drain", 30)
	client = buffer.redis_client()
	claim = client.register_script(buffer._CLAIM)
	dead_before_insert, dead_before_release = capture.new_id(), capture.new_id()
	# a drain claims a batch and dies before inserting ...
	claim(
		keys=[buffer.buffer_key(), buffer.claim_list_key(dead_before_insert), buffer.claims_key()],
		args=[10, dead_before_insert, time.time() - 60],
	)
	# ... another claims, inserts and commits, and dies before releasing its claim
	items = claim(
		keys=[buffer.buffer_key(), buffer.claim_list_key(dead_before_release), buffer.claims_key()],
		args=[10, dead_before_release, time.time() - 60],
	)
	buffer.insert_rows(buffer._rows(items, frappe.utils.now(), timeutil.system_zone())[0])
	frappe.db.commit()
	report = buffer.drain()
	assert report.claims_taken_over >= 2
	claims = client.hgetall(buffer.claims_key())
	assert dead_before_insert.encode() not in claims and dead_before_release.encode() not in claims
	names = frappe.get_all("Performance Metric", filters={"operation": operation}, pluck="name")
	assert sorted(names) == sorted(e["name"] for e in entries)


def test_a_failed_insert_gives_the_batch_claimed_ahead_back_in_order(site, overrides, monkeypatch):
	"""The drain claims the next batch while it inserts one: when the insert fails, that batch goes
	back to the head of the buffer at once; the failed one stays claimed until it is taken over."""
	overrides(drain_batch_size=10, drain_claim_timeout_s=3600)
	operation, entries = freshly_buffered("failed-drain", 30)
	client = buffer.redis_client()

	def ours(raw_items: list[bytes]) -> list[str]:
		names = (orjson.loads(raw) for raw in raw_items)
		return [entry["name"] for entry in names if entry["operation"] == operation]

	buffered = ours(client.lrange(buffer.buffer_key(), 0, -1))
	assert sorted(buffered) == sorted(e["name"] for e in entries)
	claims_before = set(client.hkeys(buffer.claims_key()))

	def database_gone(rows: list[tuple]) -> None:
		raise RuntimeError("the database went away")

	monkeypatch.setattr(buffer, "insert_rows", database_gone)
	with pytest.raises(RuntimeError, match="went away"):
		buffer.drain()
	monkeypatch.undo()

	(failed_claim,) = set(client.hkeys(buffer.claims_key())) - claims_before
	failed = ours(client.lrange(buffer.claim_list_key(failed_claim.decode()), 0, -1))
	assert failed and failed == buffered[: len(failed)]
	assert ours(client.lrange(buffer.buffer_key(), 0, -1)) == buffered[len(failed) :]

	buffer.drain()
	stored = frappe.get_all("Performance Metric", filters={"operation": operation}, pluck="name")
	assert sorted(stored) == sorted(buffered[len(failed) :])
	# once the failed claim is old enough, the next drain takes it over
	client.hset(buffer.claims_key(), failed_claim, time.time() - 7200)
	assert buffer.drain().claims_taken_over >= 1
	stored = frappe.get_all("Performance Metric", filters={"operation": operation}, pluck="name")
	assert sorted(stored) == sorted(buffered)


def test_a_full_buffer_drops_and_counts(site, overrides):
	buffer.drain()
	overrides(buffer_max_entries=5)
	before = buffer.state().dropped
	operation = f"test.full.{capture.new_id()}"
	push(synthetic_entries(8, operation))
	state = buffer.state()
	items = buffer.redis_client().lrange(buffer.buffer_key(), 0, -1)
	ours = sum(operation.encode() in item for item in items)
	assert state.buffered == len(items) == 5
	# on a live bench site the web server and workers push (and lose) their own measurements too:
	# ours that did not fit are counted, and nothing else was lost without a live process
	assert ours <= 5 and state.dropped - before >= 8 - ours >= 3
	if ours == len(items):
		assert state.dropped - before == 8 - ours == 3
	buffer.drain()


def test_measure_nests_inside_a_trace_and_counts_statements(site, overrides):
	overrides(sampling_rate=1)
	capture.forget_local_config()
	with capture.measure("test.outer", context={"unserialisable": object()}) as outer:
		frappe.db.sql("select 1")
		with capture.measure("test.inner") as inner:
			frappe.db.sql("select 1")
			frappe.db.sql("select 1")
	outer_row = rows_of_trace(outer.trace.trace_id, expected=2)
	rows = {r["operation"]: r for r in outer_row}
	assert rows["test.inner"]["query_count"] == 2
	assert rows["test.outer"]["query_count"] == 3
	assert rows["test.inner"]["parent_span"] == outer.span_id == rows["test.outer"]["name"]
	assert inner.trace.trace_id == outer.trace.trace_id
	context = frappe.db.get_value("Performance Metric", outer.span_id, "context")
	assert "object object at" in context


def test_a_bad_span_costs_only_itself_and_is_logged(site, overrides, planted_failures):
	"""An entry that cannot be encoded is dropped and counted; the good entries of the same batch
	land, the flusher thread lives on, and the failure is in the Error Log with its traceback."""
	from frappe.deferred_insert import save_to_db

	from verenigingen_perf.utils.performance import internal_errors

	class Unprintable:
		def __str__(self):
			raise ValueError("cannot be shown")

	overrides(sampling_rate=1)
	buffer.drain()
	internal_errors.reset_rate_limit()
	before = buffer.state()
	operation = f"test.bad-span.{capture.new_id()}"
	good = synthetic_entries(2, operation)
	push([good[0], {**good[1], "name": capture.new_id(), "operation": Unprintable()}, good[1]])
	after = buffer.state()
	assert after.dropped - before.dropped == 1
	assert after.capture_errors - before.capture_errors == 1
	assert buffer._flusher.thread.is_alive()
	buffer.drain()
	assert set(frappe.get_all("Performance Metric", filters={"operation": operation}, pluck="name")) == {
		e["name"] for e in good
	}
	save_to_db()
	logged = frappe.get_all(
		"Error Log", filters={"method": "verenigingen_perf: internal error in buffer.encode"}, pluck="name"
	)
	assert logged
	assert "cannot be shown" in frappe.db.get_value("Error Log", logged[0], "error")
	frappe.db.delete("Error Log", {"name": ("in", logged)})
	frappe.db.commit()


def test_the_in_process_queue_is_bounded(site, overrides):
	"""While the flusher cannot send (here: held up), a process keeps at most MAX_QUEUED measurements
	and counts the rest as dropped."""
	buffer.drain()
	monitoring = config.get_config().monitoring
	entries = synthetic_entries(buffer.MAX_QUEUED + 25, f"test.queue.{capture.new_id()}")
	drops_before = buffer.unreported_drops()
	with buffer._flusher.lock:
		for entry in entries:
			buffer.add(entry, monitoring)
		assert buffer.queued() == buffer.MAX_QUEUED
		assert buffer.unreported_drops() - drops_before >= 25
	buffer.flush()
	buffer.redis_client().delete(buffer.buffer_key())


def test_internal_errors_raise_under_tests_and_are_counted_otherwise(site, planted_failures, monkeypatch):
	from verenigingen_perf.utils.performance import internal_errors

	monkeypatch.setitem(frappe.conf, internal_errors.RAISE_CONFIG_KEY, 0)
	broken = capture._guarded("test.broken")(lambda: 1 / 0)
	with pytest.raises(ZeroDivisionError):
		broken()
	before = buffer.state().capture_errors
	frappe.flags.in_test = False
	try:
		assert broken() is None
	finally:
		frappe.flags.in_test = True
	assert buffer.state().capture_errors == before + 1
	internal_errors.reset_rate_limit()


def test_measure_as_a_decorator_records_errors(site, overrides):
	overrides(sampling_rate=1)
	capture.forget_local_config()
	marker = f"test.decorated.{capture.new_id()}"

	@capture.measure(marker)
	def broken():
		raise ValueError("bad input")

	with pytest.raises(ValueError):
		broken()
	[row] = drain_until(lambda: rows_for(operation=marker), marker)
	assert row["status"] == "error"
	assert "ValueError: bad input" in row["error"]


def test_the_test_endpoints_are_bounded_and_for_system_managers_only(site, http, make_user):
	manager, guest, website_user = http(make_user("System Manager")), http(None), http(make_user())
	for params, status in (
		({"count": "lots"}, 417),
		({"count": 1001}, 417),
		({"count": -1}, 417),
		({"count": 3}, 200),
	):
		assert manager.call(f"{TESTING}.run_statements", **params).status_code == status, params
	for client in (guest, website_user):
		for method in ("run_statements", "enqueue_probe", "fail"):
			response = client.call(f"{TESTING}.{method}")
			assert response.status_code == 403, (client.user, method, response.status_code)
			assert "Traceback" not in response.text
	assert manager.call(f"{TESTING}.fail", kind="<script>").status_code == 417
	assert manager.call(f"{TESTING}.enqueue_probe", statements=10**6).status_code == 417
