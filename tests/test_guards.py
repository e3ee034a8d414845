"""The regression guards on a site, and the app guarding itself with them: statements per drain batch
and per rolled-up hour, the capture's cost per request, the dashboard's memory."""

import time
from datetime import timedelta
from types import SimpleNamespace

import frappe
import pytest

from verenigingen_perf.testing import GuardFailure, memory_budget, query_budget, timing_guard
from verenigingen_perf.utils.performance import (
	buffer,
	capture,
	config,
	dashboard,
	rollup,
	schema,
	timeutil,
)


def test_a_planted_n_plus_one_fails_the_query_budget_with_its_shape(site):
	names = frappe.get_all("DocType", pluck="name", limit=4)
	with pytest.raises(GuardFailure) as failure:
		with query_budget(2):
			frappe.db.sql("select count(*) from `tabDocType`")
			for name in names:
				frappe.db.sql("select module from `tabDocType` where name=%s", (name,))
	report = str(failure.value)
	assert "5 statements, expected exactly 2" in report
	assert "4 x" in report and "select module from `tabDocType` where name=?" in report
	assert "N+1" in report
	with query_budget(5, maximum=True) as budget:
		frappe.db.sql("select 1")
	assert budget.count == 1


def test_the_guards_are_pytest_fixtures(site, query_budget, memory_budget, timing_guard):
	"""Registered by the app's pytest11 entry point, for any app's tests."""
	with query_budget(1):
		frappe.db.sql("select 1")
	with memory_budget(5):
		frappe.get_all("DocType", limit=5)
	assert timing_guard(lambda: sum(range(100)), lambda: sum(range(1000))).slower is False


def queued(count: int, operation: str) -> None:
	monitoring = config.get_config().monitoring
	for _ in range(count):
		entry = {
			"name": capture.new_id(),
			"operation": operation,
			"operation_type": "api",
			"started_at": time.time(),
			"duration_ms": 3.0,
			"status": "ok",
		}
		buffer.add(entry, monitoring)
	buffer.flush()


def test_a_drain_batch_costs_one_statement_whatever_its_size(site, clean_slate):
	"""One INSERT carries every row of the batch (transaction control aside)."""
	for size in (1, 500):
		buffer.drain()
		queued(size, f"test.guard.drain.{size}")
		with query_budget(1):
			report = buffer.drain(max_batches=1)
		assert report.rows_inserted == size


def test_rolling_up_an_hour_costs_a_fixed_number_of_statements(site, clean_slate):
	"""Whatever the rows and operations of the hour: where the fold ends, the watermark's claim, the totals, one page of
	durations, the hour's operations, each granularity's existing rows and upsert, the export
	counters' read and upsert, the watermark's move, and the run's own reads around it (once the framework's caches are warm, as on a running
	site)."""
	now = frappe.utils.now_datetime()
	# three hours back: the fold may reach past the hour (so where it ends is always looked up)
	hour = timeutil.floor_hour(now) - timedelta(hours=3)
	rollup.run_rollup(now)
	for operations, rows in ((1, 10), (40, 2000)):
		clean_slate()
		planted = []
		for i in range(rows):
			moment = timeutil.format_datetime(hour + timedelta(seconds=i % 3000))
			values = {
				"operation": f"guard.op{i % operations}",
				"operation_type": "api",
				"started_at": moment,
				"duration_ms": 1.0 + i % 7,
				"status": "ok",
			}
			planted.append(buffer.detail_row(capture.new_id(), moment, values))
		buffer.insert_rows(planted)
		frappe.db.commit()
		with query_budget(18):
			report = rollup.run_rollup(now)
		assert report.folds == 1 and report.rows_aggregated == rows


def test_capturing_a_request_costs_less_than_a_tenth_of_a_cheap_request(site, default_settings):
	"""The request hooks against the same work without them, interleaved (the timing guard): a cheap
	request here is a few indexed statements."""
	config.update_config({"sampling_rate": 1})
	frappe.db.commit()
	capture.forget_local_config()
	names = frappe.get_all("DocType", pluck="name", limit=5)
	response = SimpleNamespace(status_code=200, headers={})
	request = SimpleNamespace(path="/api/method/guard.request", method="POST")

	def work():
		for name in names:
			frappe.db.get_value("DocType", name, "module")

	def captured():
		capture.before_request()
		work()
		capture.after_request(response, request)

	frappe.local.request = request
	try:
		timing_guard(captured, work, allowed_slowdown=0.10)
	finally:
		frappe.local.request = None
		buffer.flush()


def test_building_the_dashboard_stays_within_its_memory(site, clean_slate):
	"""A day of traffic over 50 operations: the cold dashboard's peak of Python allocations."""
	now = frappe.utils.now_datetime()
	rows = []
	for i in range(5000):
		moment = timeutil.format_datetime(now - timedelta(minutes=5 + i % 1400))
		values = {
			"operation": f"guard.op{i % 50}",
			"operation_type": "api",
			"started_at": moment,
			"duration_ms": 1.0 + i % 97,
			"status": "ok",
		}
		rows.append(buffer.detail_row(capture.new_id(), moment, values))
	buffer.insert_rows(rows)
	frappe.db.commit()
	rollup.run_rollup(now + timedelta(hours=2))
	dashboard.clear_dashboard_cache()
	with memory_budget(20):
		board = dashboard.build_dashboard(config.get_config())
	# the planted day is all there, with what a live site (a bench with its scheduler running)
	# measured of its own requests meanwhile, which the dashboard counts too
	window = {
		"since": timeutil.format_datetime(timeutil.floor_hour(now) - timedelta(hours=24)),
		"all": schema.ALL_OPERATIONS,
		**{f"type{i}": operation_type for i, operation_type in enumerate(schema.REQUEST_TYPES)},
	}
	types = ", ".join(f"%(type{i})s" for i in range(len(schema.REQUEST_TYPES)))
	counted = (
		f"select coalesce(sum(count), 0) from `tab{schema.AGGREGATE}` where granularity = 'hour' "
		f"and period_start >= %(since)s and operation_type in ({types})"
	)
	planted = frappe.db.sql(f"{counted} and operation like 'guard.op%%'", window)[0][0]
	others = frappe.db.sql(f"{counted} and operation not like 'guard.op%%' and operation != %(all)s", window)[
		0
	][0]
	assert planted == 5000
	assert board["windows"]["last_24h"]["count"] == planted + others
