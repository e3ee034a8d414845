"""Rollups and retention on the site: exact counts, merged percentiles, late rows, locks, zero loss."""

import math
import random
import signal
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import frappe
import pytest

from verenigingen_perf.utils.performance import buffer, capture, config, retention, rollup
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
			"operation_type": "request",
			"started_at": rollup.format_datetime(started),
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
		rows.append(buffer.detail_row(capture.new_id(), rollup.format_datetime(created), values))
		ingested[(operation, rollup.floor_hour(started))] += 1
	return rows, ingested


def insert(rows):
	buffer.insert_rows(rows)
	frappe.db.commit()


def aggregate_counts(granularity: str, site_wide: bool = False) -> Counter:
	"""Counts per (operation, period) of the rows of every operation, or of the site-wide rows."""
	counts = Counter()
	for row in frappe.get_all(
		rollup.AGGREGATE,
		filters={
			"granularity": granularity,
			"operation": ("=" if site_wide else "!=", rollup.ALL_OPERATIONS),
		},
		fields=["operation", "period_start", "count"],
	):
		counts[(row.operation, rollup._as_datetime(row.period_start))] += row["count"]
	return counts


def hourly_counts() -> Counter:
	return aggregate_counts("hour")


def unaggregated_counts() -> Counter:
	watermark = rollup.get_watermark()
	filters = {"creation": (">=", watermark)} if watermark else {}
	counts = Counter()
	for row in frappe.get_all(rollup.METRIC, filters=filters, fields=["operation", "started_at"], limit=0):
		counts[(row.operation, rollup.floor_hour(rollup._as_datetime(row.started_at)))] += 1
	return counts


def assert_nothing_lost(ingested: Counter) -> None:
	"""For every operation and hour: aggregated + unaggregated detail rows == ingested; daily rows
	and site-wide rows add up to the hourly rows."""
	hourly = hourly_counts()
	assert hourly + unaggregated_counts() == ingested
	per_day, site_wide_hourly = Counter(), Counter()
	for (operation, hour), n in hourly.items():
		per_day[(operation, rollup.floor_day(hour))] += n
		site_wide_hourly[(rollup.ALL_OPERATIONS, hour)] += n
	assert aggregate_counts("day") == per_day
	assert aggregate_counts("hour", site_wide=True) == site_wide_hourly
	site_wide_daily = Counter()
	for (_operation, day), n in per_day.items():
		site_wide_daily[(rollup.ALL_OPERATIONS, day)] += n
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
		rollup.METRIC,
		filters={"creation": ("<", watermark)},
		fields=["operation", "started_at", "duration_ms", "rss_growth_kb", "peak_alloc_kb"],
		limit=0,
	):
		hour = rollup.floor_hour(rollup._as_datetime(row.started_at))
		for key in ((row.operation, hour), (rollup.ALL_OPERATIONS, hour)):
			durations[key].append(row.duration_ms)
			memory_mb[key] = max(memory_mb[key], row.rss_growth_kb / 1024, row.peak_alloc_kb / 1024)
	aggregates = frappe.get_all(
		rollup.AGGREGATE,
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
	assert {agg.operation for agg in aggregates} > {rollup.ALL_OPERATIONS}
	for agg in aggregates:
		values = sorted(durations[(agg.operation, rollup._as_datetime(agg.period_start))])
		assert agg["count"] == len(values)
		assert math.isclose(agg.duration_sum_ms, sum(values), rel_tol=1e-6)
		assert math.isclose(agg.duration_max_ms, max(values), rel_tol=1e-9)
		# memory per operation: the larger of RSS growth and allocation peak, never the worker's RSS
		assert math.isclose(
			agg.memory_max_mb, memory_mb[(agg.operation, rollup._as_datetime(agg.period_start))], abs_tol=1e-6
		)
		for column, q in (("p95_ms", 0.95), ("p99_ms", 0.99)):
			exact = values[math.floor(q * (len(values) - 1))]
			assert abs(agg[column] - exact) <= RELATIVE_ACCURACY * exact * (1 + 1e-6)


def test_site_wide_rows_are_backfilled_as_the_rollup_writes_them(clean_slate):
	now = frappe.utils.now_datetime()
	insert(make_rows(600, now, hours=30)[0])
	rollup.run_rollup(now)
	fields = ["name", "count", "error_count", "query_sum", "p50_ms", "p95_ms", "p99_ms", "sketch"]
	site_wide = {"operation": rollup.ALL_OPERATIONS}
	written = frappe.get_all(rollup.AGGREGATE, filters=site_wide, fields=fields, order_by="name")
	assert {row.name.split("-")[0] for row in written} == {"hour", "day"}
	frappe.db.delete(rollup.AGGREGATE, site_wide)
	frappe.db.commit()
	assert rollup.backfill_site_wide(periods_per_transaction=7) == len(written)
	assert frappe.get_all(rollup.AGGREGATE, filters=site_wide, fields=fields, order_by="name") == written
	assert rollup.backfill_site_wide() == 0


def test_rerunning_changes_nothing(clean_slate):
	now = frappe.utils.now_datetime()
	insert(make_rows(500, now, hours=10)[0])
	rollup.run_rollup(now)
	before = frappe.get_all(rollup.AGGREGATE, fields=["name", "count", "p99_ms", "sketch"], order_by="name")
	report = rollup.run_rollup(now)
	assert report.rows_aggregated == 0
	assert (
		frappe.get_all(rollup.AGGREGATE, fields=["name", "count", "p99_ms", "sketch"], order_by="name")
		== before
	)


def test_late_rows_are_merged_into_their_hour(clean_slate):
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(400, now - timedelta(hours=3), hours=6, late_share=0)
	insert(rows)
	rollup.run_rollup(now)
	some_hour_key = next(iter(ingested))
	operation, hour = some_hour_key
	name = rollup.aggregate_name("hour", hour, operation)
	before = frappe.db.get_value(rollup.AGGREGATE, name, "count")
	# rows that started in that hour, ingested now (hours later)
	late, _ = make_rows(7, now, hours=1, operations=1, seed=9, late_share=0)
	late = [
		(*r[:6], operation, *r[7:8], rollup.format_datetime(hour + timedelta(minutes=5)), *r[9:])
		for r in late
	]
	late = [(r[0], rollup.format_datetime(now - timedelta(minutes=30)), *r[2:]) for r in late]
	insert(late)
	ingested[some_hour_key] += 7
	report = rollup.run_rollup(now + timedelta(hours=1))
	assert report.late_rows >= 7
	assert frappe.db.get_value(rollup.AGGREGATE, name, "count") == before + 7
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


def test_the_watermark_compare_and_set_refuses_a_stale_move(clean_slate):
	now = frappe.utils.now_datetime()
	insert(make_rows(100, now, hours=3)[0])
	rollup.run_rollup(now)
	current = rollup.get_watermark()
	assert rollup._move_watermark(current - timedelta(hours=1), current + timedelta(hours=1)) is False
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
	unaggregated = [r for r in old_rows if rollup._as_datetime(r[1]) >= watermark]
	report = retention.run_retention(now)
	assert 0 < len(unaggregated) < len(old_rows)
	assert report.detail_rows_deleted == len(old_rows) - len(unaggregated)
	assert report.batches >= report.detail_rows_deleted // 50
	assert frappe.db.count(rollup.METRIC) == len(unaggregated)
	assert_nothing_lost(ingested)


def test_retention_of_aggregates(clean_slate):
	now = frappe.utils.now_datetime()
	r = config.get_config().retention
	rows, _ = make_rows(300, now - timedelta(days=r.hourly_days + 2), hours=12, late_share=0)
	insert(rows)
	rollup.run_rollup(now - timedelta(days=r.hourly_days))
	hourly = frappe.get_all(
		rollup.AGGREGATE, filters={"granularity": "hour"}, fields=["name", "operation", "period_start"]
	)
	assert hourly
	# one day loses its daily row: its hourly rows must survive
	orphan = hourly[0]
	orphan_day = rollup.aggregate_name(
		"day", rollup.floor_day(rollup._as_datetime(orphan.period_start)), orphan.operation
	)
	frappe.db.delete(rollup.AGGREGATE, {"name": orphan_day})
	frappe.db.commit()
	report = retention.run_retention(now)
	survivors = frappe.get_all(rollup.AGGREGATE, filters={"granularity": "hour"}, pluck="name")
	assert orphan.name in survivors
	assert report.hourly_rows_deleted == len(hourly) - len(survivors)
	assert report.daily_rows_deleted == 0
	report = retention.run_retention(now + timedelta(days=r.daily_days))
	assert frappe.db.count(rollup.AGGREGATE, {"granularity": "day"}) == 0


def test_clear_old_logs_keeps_unaggregated_rows(clean_slate):
	now = frappe.utils.now_datetime()
	insert(make_rows(100, now - timedelta(days=30), hours=5)[0])
	controller = frappe.get_doc({"doctype": rollup.METRIC}).__class__
	assert controller.clear_old_logs(days=1) == 0  # nothing aggregated yet
	assert frappe.db.count(rollup.METRIC) == 100
	rollup.run_rollup(now)
	assert controller.clear_old_logs(days=1) == 100


@pytest.mark.parametrize("job", [ROLLUP_JOB, RETENTION_JOB])
def test_killed_jobs_lose_nothing(clean_slate, spawn_job, job):
	"""Kill the job process (SIGKILL) at many points, re-run it each time: the invariant holds."""
	config.update_config({"delete_batch_size": 200, "aggregation_page_size": 500})
	frappe.db.commit()
	now = frappe.utils.now_datetime()
	rows, ingested = make_rows(6000, now - timedelta(days=8), hours=96)
	insert(rows)
	if job == RETENTION_JOB:
		rollup.run_rollup(now)
	rng = random.Random(3)
	for _attempt in range(8):
		process = spawn_job(job)
		time.sleep(rng.uniform(0.5, 4.0))
		if process.poll() is None:
			process.send_signal(signal.SIGKILL)
		process.wait(timeout=60)
		# a killed run leaves its Redis lock behind until it expires; the next run must not wait for that
		buffer.redis_client().delete(buffer._key("rollup_lock"), buffer._key("retention_lock"))
		frappe.db.rollback()
		assert_nothing_lost(ingested)
	rollup.run_rollup(now)
	retention.run_retention(now)
	assert_nothing_lost(ingested)
