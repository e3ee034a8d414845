"""Rollups and retention on the site: exact counts, merged percentiles, late rows, locks, zero loss."""

import contextlib
import math
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import frappe
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verenigingen_perf.utils.performance import (
	buffer,
	capture,
	config,
	job_reports,
	operations,
	redis_store,
	retention,
	rollup,
	schema,
	timeutil,
)
from verenigingen_perf.utils.performance.sketch import RELATIVE_ACCURACY

ROLLUP_JOB = "verenigingen_perf.utils.performance.rollup.rollup_job"
RETENTION_JOB = "verenigingen_perf.utils.performance.retention.retention_job"


def make_rows(
	count: int, now: datetime, hours: int, operations: int = 5, seed: int = 1, late_share: float = 0.1
):
	"""Detail rows ingested over the last `hours` (creation), each started a little before it; a share
	of them started hours earlier (late arrivals). Returns the rows and the ingested count per
	(operation, started hour)."""
	rng = random.Random(seed)
	rows, ingested = [], Counter()
	for i in range(count):
		created = now - timedelta(seconds=rng.uniform(600, hours * 3600))
		lag = (
			timedelta(hours=rng.uniform(1, 5))
			if rng.random() < late_share
			else timedelta(seconds=rng.uniform(0, 5))
		)
		started = created - lag
		operation = f"op.{i % operations}"
		duration = rng.paretovariate(1.3) * 3
		status = "error" if rng.random() < 0.05 else "ok"
		values = {
			"operation": operation,
			"operation_type": "api",
			"started_at": timeutil.format_datetime(started),
			"duration_ms": duration,
			"query_count": rng.randint(1, 20),
			"db_time_ms": duration / 4,
			# the worker's RSS is far above what any one operation takes: aggregates must not use it
			"peak_rss_mb": 400.0,
			"rss_growth_kb": rng.choice((0, 0, 0, 64, rng.randint(0, 8192))),
			"peak_alloc_kb": rng.choice((0.0, rng.uniform(0, 8192))),
			"status": status,
			"http_status": 200,
			"user": "Administrator",
			"trace_id": capture.new_id(),
		}
		rows.append(buffer.detail_row(capture.new_id(), timeutil.format_datetime(created), values))
		ingested[(operation, timeutil.floor_hour(started))] += 1
	return rows, ingested


def insert(rows):
	buffer.insert_rows(rows)
	frappe.db.commit()


def aggregate_counts(granularity: str, site_wide: bool = False) -> Counter:
	"""Counts per (operation, period) of the rows of every operation, or of the site-wide rows."""
	counts = Counter()
	for row in frappe.get_all(
		schema.AGGREGATE,
		filters={
			"granularity": granularity,
			"operation": ("=" if site_wide else "!=", schema.ALL_OPERATIONS),
		},
		fields=["operation", "period_start", "count"],
	):
		counts[(row.operation, timeutil.as_datetime(row.period_start))] += row["count"]
	return counts


def hourly_counts() -> Counter:
	return aggregate_counts("hour")


def unaggregated_counts() -> Counter:
	watermark = rollup.get_watermark()
	filters = {"creation": (">=", watermark)} if watermark else {}
	counts = Counter()
	for row in frappe.get_all(schema.METRIC, filters=filters, fields=["operation", "started_at"], limit=0):
		counts[(row.operation, timeutil.floor_hour(timeutil.as_datetime(row.started_at)))] += 1
	return counts


def assert_nothing_lost(ingested: Counter) -> None:
	"""For every operation and hour: aggregated + unaggregated detail rows == ingested; daily rows
	and site-wide rows add up to the hourly rows. (On a bench site the site's own jobs are measured
	meanwhile: the test's operations are compared, the sums over all of them.)"""
	hourly = hourly_counts()
	ours = {operation for operation, _hour in ingested}
	counted = hourly + unaggregated_counts()
	assert Counter({key: n for key, n in counted.items() if key[0] in ours}) == ingested
	per_day, site_wide_hourly = Counter(), Counter()
	for (operation, hour), n in hourly.items():
		per_day[(operation, timeutil.floor_day(hour))] += n
		site_wide_hourly[(schema.ALL_OPERATIONS, hour)] += n
	assert aggregate_counts("day") == per_day
	assert aggregate_counts("hour", site_wide=True) == site_wide_hourly
	site_wide_daily = Counter()
	for (_operation, day), n in per_day.items():
		site_wide_daily[(schema.ALL_OPERATIONS, day)] += n
	assert aggregate_counts("day", site_wide=True) == site_wide_daily


def test_rollup_counts_exactly_and_percentiles_within_accuracy(clean_slate):
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(3000, now, hours=30)
	insert(rows)
	report = rollup.run_rollup(now)
	assert report.status == "ok" and report.rows_aggregated > 0
	assert_nothing_lost(ingested)
	durations = defaultdict(list)
	memory_mb = defaultdict(float)
	watermark = rollup.get_watermark()
	# exact values from the stored detail rows (the database's own float rounding included)
	for row in frappe.get_all(
		schema.METRIC,
		filters={"creation": ("<", watermark)},
		fields=["operation", "started_at", "duration_ms", "rss_growth_kb", "peak_alloc_kb"],
		limit=0,
	):
		hour = timeutil.floor_hour(timeutil.as_datetime(row.started_at))
		for key in ((row.operation, hour), (schema.ALL_OPERATIONS, hour)):
			durations[key].append(row.duration_ms)
			memory_mb[key] = max(memory_mb[key], row.rss_growth_kb / 1024, row.peak_alloc_kb / 1024)
	aggregates = frappe.get_all(
		schema.AGGREGATE,
		filters={"granularity": "hour"},
		fields=[
			"operation",
			"period_start",
			"count",
			"p95_ms",
			"p99_ms",
			"duration_sum_ms",
			"duration_max_ms",
			"memory_max_mb",
		],
	)
	assert {agg.operation for agg in aggregates} > {schema.ALL_OPERATIONS}
	for agg in aggregates:
		values = sorted(durations[(agg.operation, timeutil.as_datetime(agg.period_start))])
		assert agg["count"] == len(values)
		assert math.isclose(agg.duration_sum_ms, sum(values), rel_tol=1e-6)
		assert math.isclose(agg.duration_max_ms, max(values), rel_tol=1e-9)
		# memory per operation: the larger of RSS growth and allocation peak, never the worker's RSS
		assert math.isclose(
			agg.memory_max_mb,
			memory_mb[(agg.operation, timeutil.as_datetime(agg.period_start))],
			abs_tol=1e-6,
		)
		for column, q in (("p95_ms", 0.95), ("p99_ms", 0.99)):
			exact = values[math.floor(q * (len(values) - 1))]
			assert abs(agg[column] - exact) <= RELATIVE_ACCURACY * exact * (1 + 1e-6)


def test_a_run_stops_after_its_budget_and_the_next_goes_on(clean_slate, default_settings):
	"""The rollup runs every ten minutes on the default queue: a run with a backlog stops between two
	folds once past `rollup_run_budget_s`, and the next run folds the rest (one hour per fold here)."""
	config.update_config({"rollup_run_budget_s": 1, "rollup_fold_rows": 1})
	frappe.db.commit()
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(300, now, hours=3)
	insert(rows)
	first = rollup.run_rollup(now, on_hour=lambda _hour: time.sleep(1.1))
	assert first.folds == first.hours_folded == 1
	assert first.status.startswith("stopped: rollup_run_budget_s")
	second = rollup.run_rollup(now)
	assert second.status == "ok" and second.hours_folded >= 1
	assert_nothing_lost(ingested)


def ingested_between(start: datetime, end: datetime) -> int:
	return frappe.db.sql(
		f"select count(*) from `tab{schema.METRIC}` where creation >= %s and creation < %s",
		(timeutil.format_datetime(start), timeutil.format_datetime(end)),
	)[0][0]


@pytest.mark.parametrize("fold_rows", [50_000, 120, 1])
def test_a_backlog_is_folded_many_hours_at_a_time_within_rollup_fold_rows(
	clean_slate, default_settings, fold_rows
):
	"""A fold takes the complete hours that hold at most `rollup_fold_rows` rows, and at least one
	hour whatever it holds; folds end on whole hours, and nothing is lost or counted twice."""
	config.update_config({"rollup_fold_rows": fold_rows})
	frappe.db.commit()
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(600, now, hours=12)
	insert(rows)
	first = frappe.db.sql(f"select min(creation) from `tab{schema.METRIC}`")[0][0]
	first_hour = timeutil.floor_hour(timeutil.as_datetime(first))
	ends = []
	report = rollup.run_rollup(now, on_hour=lambda last: ends.append(last + rollup.HOUR))
	assert report.status == "ok" and report.folds == len(ends)
	assert rollup.get_watermark() == ends[-1]
	starts = [first_hour, *ends[:-1]]
	assert report.hours_folded == round((ends[-1] - first_hour) / rollup.HOUR)
	assert report.rows_aggregated == ingested_between(first_hour, ends[-1])
	for start, end in zip(starts, ends, strict=True):
		assert end == timeutil.floor_hour(end) and end > start
		assert ingested_between(start, end) <= fold_rows or end - start == rollup.HOUR
	if fold_rows == 50_000:
		assert report.folds == 1 and report.hours_folded >= 10
	else:
		assert report.folds > 1
	assert_nothing_lost(ingested)


def test_folding_many_hours_at_once_stores_what_folding_hour_by_hour_does(clean_slate, default_settings):
	now = frappe.utils.now_datetime()
	rows, _ingested = make_rows(800, now, hours=20)
	fields = ["name", "count", "error_count", "query_sum", "query_max", "duration_max_ms", "sketch"]
	stored = []
	for fold_rows in (1, 50_000):
		clean_slate()
		config.update_config({"rollup_fold_rows": fold_rows})
		insert(rows)
		report = rollup.run_rollup(now)
		assert report.rows_aggregated > 0 and (report.folds > 1) == (fold_rows == 1)
		stored.append(frappe.get_all(schema.AGGREGATE, fields=[*fields, "duration_sum_ms"], order_by="name"))
	hour_by_hour, at_once = stored
	assert [{f: row[f] for f in fields} for row in hour_by_hour] == [
		{f: row[f] for f in fields} for row in at_once
	]
	for one, other in zip(hour_by_hour, at_once, strict=True):
		assert math.isclose(one.duration_sum_ms, other.duration_sum_ms, rel_tol=1e-9)


def test_reading_in_small_pages_stores_what_one_page_does(clean_slate, default_settings):
	"""Pages end where the creation time changes; a drain batch stamps hundreds of rows with one
	creation, more than a page holds: every row is read once, whatever the page size."""
	now = frappe.utils.now_datetime()
	rows, _ingested = make_rows(900, now, hours=6)
	batch_creation = timeutil.format_datetime(now - timedelta(hours=3, minutes=10))
	# the first 450 rows as one drain batch: one creation time
	rows = [(row[0], batch_creation, *row[2:]) for row in rows[:450]] + rows[450:]
	fields = ["name", "count", "error_count", "query_sum", "duration_max_ms", "sketch"]
	stored = []
	for page_size in (100, 1_000_000):
		clean_slate()
		config.update_config({"aggregation_page_size": page_size})
		insert(rows)
		report = rollup.run_rollup(now)
		assert report.rows_aggregated == ingested_between(now - timedelta(days=1), rollup.get_watermark())
		stored.append(frappe.get_all(schema.AGGREGATE, fields=fields, order_by="name"))
	assert stored[0] == stored[1]
	assert sum(row["count"] for row in stored[0] if row.name.startswith("hour")) == 2 * sum(
		1 for row in rows if row[1] < timeutil.format_datetime(rollup.get_watermark())
	)


def test_site_wide_rows_are_backfilled_as_the_rollup_writes_them(clean_slate):
	now = frappe.utils.now_datetime()
	insert(make_rows(600, now, hours=30)[0])
	rollup.run_rollup(now)
	fields = ["name", "count", "error_count", "query_sum", "p50_ms", "p95_ms", "p99_ms", "sketch"]
	site_wide = {"operation": schema.ALL_OPERATIONS}
	written = frappe.get_all(schema.AGGREGATE, filters=site_wide, fields=fields, order_by="name")
	assert {row.name.split("-")[0] for row in written} == {"hour", "day"}
	frappe.db.delete(schema.AGGREGATE, site_wide)
	frappe.db.commit()
	assert rollup.backfill_site_wide(periods_per_transaction=7) == len(written)
	assert frappe.get_all(schema.AGGREGATE, filters=site_wide, fields=fields, order_by="name") == written
	assert rollup.backfill_site_wide() == 0


def test_rerunning_changes_nothing(clean_slate):
	now = frappe.utils.now_datetime()
	insert(make_rows(500, now, hours=10)[0])
	rollup.run_rollup(now)
	before = frappe.get_all(schema.AGGREGATE, fields=["name", "count", "p99_ms", "sketch"], order_by="name")
	report = rollup.run_rollup(now)
	assert report.rows_aggregated == 0
	assert (
		frappe.get_all(schema.AGGREGATE, fields=["name", "count", "p99_ms", "sketch"], order_by="name")
		== before
	)


def test_late_rows_are_merged_into_their_hour(clean_slate):
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(400, now - timedelta(hours=3), hours=6, late_share=0)
	insert(rows)
	rollup.run_rollup(now)
	some_hour_key = next(iter(ingested))
	operation, hour = some_hour_key
	name = rollup.aggregate_name("hour", hour, "api", operation)
	before = frappe.db.get_value(schema.AGGREGATE, name, "count")
	# rows that started in that hour, ingested now (hours later)
	late, _ = make_rows(7, now, hours=1, operations=1, seed=9, late_share=0)
	# ingested after the watermark, as a drain writes them
	ingested_at = rollup.get_watermark() + timedelta(minutes=10)
	late = [
		buffer.detail_row(
			values["name"],
			timeutil.format_datetime(ingested_at),
			{
				**values,
				"operation": operation,
				"started_at": timeutil.format_datetime(hour + timedelta(minutes=5)),
			},
		)
		for values in map(buffer.row_values, late)
	]
	insert(late)
	ingested[some_hour_key] += 7
	report = rollup.run_rollup(ingested_at + timedelta(hours=2))
	assert report.late_rows >= 7
	assert frappe.db.get_value(schema.AGGREGATE, name, "count") == before + 7
	assert_nothing_lost(ingested)


def test_an_hour_a_drain_still_holds_is_not_folded(clean_slate):
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(200, now, hours=4)
	insert(rows)
	claim_id = capture.new_id()
	# a drain claimed a batch three hours ago and has not committed it yet
	buffer.redis_client().hset(buffer.claims_key(), claim_id, time.time() - 3 * 3600)
	report = rollup.run_rollup(now)
	assert report.waiting_for_drain
	watermark = rollup.get_watermark()
	assert watermark is None or watermark <= now - timedelta(hours=3)
	buffer.redis_client().hdel(buffer.claims_key(), claim_id)
	rollup.run_rollup(now)
	assert_nothing_lost(ingested)


def test_two_rollups_at_once_do_not_double_count(clean_slate, in_threads):
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(2000, now, hours=24)
	insert(rows)
	in_threads(lambda: rollup.run_rollup(now), count=2)
	rollup.run_rollup(now)
	assert_nothing_lost(ingested)


def test_without_the_lock_the_watermark_still_folds_each_hour_once(clean_slate, in_threads, monkeypatch):
	"""The Redis lock is taken away (as when Redis is unreachable): two rollups fold the same hours
	at the same moment, and the watermark's locked compare-and-set lets each hour be folded once."""
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(1500, now, hours=12)
	insert(rows)

	@contextlib.contextmanager
	def no_lock(name, timeout_s):
		yield True

	monkeypatch.setattr(redis_store, "exclusive", no_lock)
	barrier = threading.Barrier(2, timeout=60)
	claim = rollup.claim_watermark

	def claim_together(expected):
		barrier.wait()  # both runs planned from the same watermark before either claims it
		return claim(expected)

	monkeypatch.setattr(rollup, "claim_watermark", claim_together)
	outcomes = []

	def fold_once():
		try:
			outcomes.append(rollup.run_rollup(now).status)
		except Exception as error:
			# SQLite refuses the second writer's stale snapshot outright: nothing is folded twice either
			outcomes.append(f"refused: {type(error).__name__}")
			frappe.db.rollback()

	monkeypatch.setattr(rollup, "claim_watermark", claim_together)
	in_threads(fold_once, count=2)
	monkeypatch.setattr(rollup, "claim_watermark", claim)
	assert len(outcomes) == 2
	assert any(
		o == "stopped: the watermark moved under this run" or o.startswith("refused") for o in outcomes
	), outcomes
	rollup.run_rollup(now)
	assert_nothing_lost(ingested)


def test_the_watermark_compare_and_set_refuses_a_stale_move(clean_slate):
	now = frappe.utils.now_datetime()
	insert(make_rows(100, now, hours=3)[0])
	rollup.run_rollup(now)
	current = rollup.get_watermark()
	assert rollup.move_watermark(current - timedelta(hours=1), current + timedelta(hours=1)) is False
	frappe.db.rollback()
	assert rollup.get_watermark() == current


def test_retention_deletes_only_what_is_aggregated_in_batches(clean_slate):
	config.update_config({"delete_batch_size": 50})
	frappe.db.commit()
	now = frappe.utils.now_datetime()
	old_rows, ingested = make_rows(600, now - timedelta(days=9), hours=24, late_share=0)
	insert(old_rows)
	rollup.run_rollup(now - timedelta(days=9, hours=12))
	watermark = rollup.get_watermark()
	# old rows ingested after the watermark are not aggregated yet: they must survive
	unaggregated = [r for r in old_rows if timeutil.as_datetime(r[1]) >= watermark]
	report = retention.run_retention(now)
	assert 0 < len(unaggregated) < len(old_rows)
	assert report.detail_rows_deleted == len(old_rows) - len(unaggregated)
	assert report.batches >= report.detail_rows_deleted // 50
	assert frappe.db.count(schema.METRIC) == len(unaggregated)
	assert_nothing_lost(ingested)


def test_retention_of_aggregates(clean_slate):
	now = frappe.utils.now_datetime()
	r = config.get_config().retention
	rows, _ = make_rows(300, now - timedelta(days=r.hourly_days + 2), hours=12, late_share=0)
	insert(rows)
	rollup.run_rollup(now - timedelta(days=r.hourly_days))
	hourly = frappe.get_all(
		schema.AGGREGATE,
		filters={"granularity": "hour"},
		fields=["name", "operation", "operation_type", "period_start"],
	)
	assert hourly
	# one day loses its daily row: its hourly rows must survive
	orphan = hourly[0]
	orphan_day = rollup.aggregate_name(
		"day",
		timeutil.floor_day(timeutil.as_datetime(orphan.period_start)),
		orphan.operation_type,
		orphan.operation,
	)
	frappe.db.delete(schema.AGGREGATE, {"name": orphan_day})
	frappe.db.commit()
	report = retention.run_retention(now)
	survivors = frappe.get_all(schema.AGGREGATE, filters={"granularity": "hour"}, pluck="name")
	assert orphan.name in survivors
	assert report.hourly_rows_deleted == len(hourly) - len(survivors)
	assert report.daily_rows_deleted == 0
	report = retention.run_retention(now + timedelta(days=r.daily_days))
	assert frappe.db.count(schema.AGGREGATE, {"granularity": "day"}) == 0


def test_clear_old_logs_keeps_unaggregated_rows(clean_slate):
	now = frappe.utils.now_datetime()
	insert(make_rows(100, now - timedelta(days=30), hours=5)[0])
	controller = frappe.get_doc({"doctype": schema.METRIC}).__class__
	assert controller.clear_old_logs(days=1) == 0  # nothing aggregated yet
	assert frappe.db.count(schema.METRIC) == 100
	rollup.run_rollup(now)
	assert controller.clear_old_logs(days=1) == 100


def progress(job: str) -> object:
	"""What a run of `job` changes: the watermark (rollup) or the detail rows left (retention)."""
	frappe.db.rollback()  # a fresh snapshot: the job commits in its own process
	return rollup.get_watermark() if job == ROLLUP_JOB else frappe.db.count(schema.METRIC)


def wait_for_progress(job: str, before: object, process, seconds: float = 60) -> bool:
	deadline = time.monotonic() + seconds
	while time.monotonic() < deadline and process.poll() is None:
		if progress(job) != before:
			return True
		time.sleep(0.02)
	return progress(job) != before


@pytest.mark.parametrize("job", [ROLLUP_JOB, RETENTION_JOB])
def test_killed_jobs_lose_nothing(clean_slate, spawn_job, job, tmp_path):
	"""Kill the job process (SIGKILL) at many points, each after it has made some progress, re-run it
	each time: the invariant holds. The runs are checked to have progressed and to have been killed
	while still running, so a job that crashed at start could not pass."""
	# small folds (a few hours each) and pages: a run has many points to be killed at
	config.update_config({"delete_batch_size": 5, "aggregation_page_size": 200, "rollup_fold_rows": 120})
	frappe.db.commit()
	now = frappe.utils.now_datetime()
	# retention: every row past the detail retention, so that there is much to delete
	rows, ingested = make_rows(12000, now - timedelta(days=17 if job == RETENTION_JOB else 9), hours=192)
	insert(rows)
	if job == RETENTION_JOB:
		rollup.run_rollup(now)
	rng = random.Random(3)
	killed_while_running = progressed = 0
	for attempt in range(8):
		log = tmp_path / f"run-{attempt}.log"
		before = progress(job)
		process = spawn_job(job, str(log))
		progressed += wait_for_progress(job, before, process)
		time.sleep(rng.uniform(0, 0.3))
		if process.poll() is None:
			process.send_signal(signal.SIGKILL)
			killed_while_running += 1
		process.wait(timeout=60)
		output = log.read_text()
		assert "Traceback" not in output, output[-2000:]
		if process.returncode != -signal.SIGKILL:
			assert process.returncode == 0, output[-2000:]
		# a killed run leaves its Redis lock behind until it expires; the next run must not wait for that
		buffer.redis_client().delete(redis_store.lock_key("rollup"), redis_store.lock_key("retention"))
		frappe.db.rollback()
		assert_nothing_lost(ingested)
	assert killed_while_running >= 4, f"only {killed_while_running} of 8 runs were killed while running"
	assert progressed >= 4, f"only {progressed} of 8 runs made progress: they did not really run"
	rollup.run_rollup(now)
	retention.run_retention(now)
	assert_nothing_lost(ingested)


names_of_any_shape = st.lists(
	st.one_of(
		st.text(min_size=1, max_size=30),
		st.sampled_from(
			["cafe", "café", "CAFE", "Café", "cafe ", " cafe", "caf\u0065\u0301", "ß", "ss", "Straße"]
		),
		st.text(alphabet="aáAÁ ", min_size=1, max_size=4),
		st.text(min_size=150, max_size=300),
	),
	min_size=1,
	max_size=25,
)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(names=names_of_any_shape)
def test_no_operation_name_can_stop_the_rollup(clean_slate, names):
	"""Names a database collation would equate (case, accents, trailing spaces), unicode and very
	long names go through capture, the buffer, the drain and the rollup: the rollup finishes and
	every measurement is counted exactly once, under its cleaned name."""
	clean_slate()
	monitoring = config.get_config().monitoring
	started = time.time() - 2 * 3600
	ingested: Counter = Counter()
	for i, raw in enumerate(names):
		entry = {
			"name": capture.new_id(),
			"operation": raw,
			"operation_type": "api",
			"started_at": started + i,
			"duration_ms": 1.0 + i,
			"status": "ok",
			"http_status": 200,
		}
		buffer.add(entry, monitoring)
		ingested[(operations.clean_name(raw), timeutil.floor_hour(timeutil.from_epoch(started + i)))] += 1
	buffer.flush()
	buffer.drain()
	# (on a bench its own drain job may have taken some of them first)
	assert sum(unaggregated_counts().values()) >= len(names)
	# ingested now: fold the current hour as well
	report = rollup.run_rollup(frappe.utils.now_datetime() + timedelta(hours=2))
	assert report.status == "ok" and report.errors == [], report
	assert rollup.get_watermark() is not None
	assert_nothing_lost(ingested)


def test_operations_past_the_hourly_cap_are_folded_into_one_counted_operation(clean_slate):
	config.update_config({"max_operations_per_hour": 10})
	frappe.db.commit()
	now = frappe.utils.now_datetime()
	hour = timeutil.floor_hour(now) - timedelta(hours=3)
	rows, counts = [], Counter()
	for op in range(30):
		for i in range(30 - op):  # op.0 is the busiest
			values = {
				"operation": f"op.{op}",
				"operation_type": "api",
				"started_at": timeutil.format_datetime(hour + timedelta(seconds=op * 60 + i)),
				"duration_ms": 1.0,
				"status": "ok",
			}
			rows.append(
				buffer.detail_row(
					capture.new_id(), timeutil.format_datetime(hour + timedelta(minutes=40)), values
				)
			)
			counts[f"op.{op}"] += 1
	insert(rows)
	report = rollup.run_rollup(now)
	assert report.rows_aggregated == len(rows), report
	hourly = {
		r.operation: r["count"]
		for r in frappe.get_all(
			schema.AGGREGATE,
			filters={"granularity": "hour", "operation": ("!=", schema.ALL_OPERATIONS)},
			fields=["operation", "count"],
		)
	}
	assert set(hourly) == {f"op.{i}" for i in range(10)} | {schema.OVERFLOW_OPERATION}
	assert hourly[schema.OVERFLOW_OPERATION] == sum(counts[f"op.{i}"] for i in range(10, 30))
	assert sum(hourly.values()) == sum(counts.values())
	assert report.operations_over_cap == 20
	# a late row of a new operation for the same hour: the hour is full, it joins the overflow
	late_values = {
		"operation": "op.new",
		"operation_type": "api",
		"started_at": timeutil.format_datetime(hour),
		"duration_ms": 1.0,
		"status": "ok",
	}
	ingested_at = rollup.get_watermark() + timedelta(minutes=10)
	insert([buffer.detail_row(capture.new_id(), timeutil.format_datetime(ingested_at), late_values)])
	rollup.run_rollup(ingested_at + timedelta(hours=2))
	overflow = frappe.get_all(
		schema.AGGREGATE,
		filters={"granularity": "hour", "operation": schema.OVERFLOW_OPERATION},
		fields=["count"],
	)
	assert [r["count"] for r in overflow] == [hourly[schema.OVERFLOW_OPERATION] + 1]


def test_rollup_and_retention_keep_working_without_redis_and_say_so(clean_slate, redis_outage):
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(300, now - timedelta(days=9), hours=24, late_share=0)
	recent, recent_ingested = make_rows(100, now, hours=1, seed=4, late_share=0)
	insert(rows + recent)
	with redis_outage():
		report = rollup.run_rollup(now)
		assert report.status.startswith("degraded: Redis unreachable")
		assert report.hours_folded > 0
		kept = retention.run_retention(now)
		assert kept.status.startswith("degraded: Redis unreachable")
	# the hours within the claim timeout wait for Redis (a drain may still hold their rows)
	assert rollup.get_watermark() <= now - timedelta(
		seconds=config.get_config().monitoring.drain_claim_timeout_s
	)
	rollup.run_rollup(now)
	assert_nothing_lost(ingested + recent_ingested)


def test_a_failed_rollup_is_reported_with_its_reason_and_raised(clean_slate, monkeypatch):
	insert(make_rows(50, frappe.utils.now_datetime(), hours=3)[0])

	def broken(*args):
		raise RuntimeError("planted rollup failure")

	previous = job_reports.read_stored().get("rollup")
	monkeypatch.setattr(rollup, "_pages", broken)
	with pytest.raises(RuntimeError):
		rollup.rollup_job()
	report = job_reports.read_stored()["rollup"]
	assert report["status"] == "failed"
	assert report["errors"] == ["RuntimeError: planted rollup failure"]
	# the site keeps the report of its last real run, not the planted failure
	if previous:
		job_reports.record(
			"rollup", {k: v for k, v in previous.items() if k != "finished_at"}, previous.get("finished_at")
		)
