"""Pytest set-up for the whole repository: the site fixtures of the runtime layer, and markers.

A test that uses the `site` fixture (directly or through another fixture) is an integration test;
every other test is a unit test and needs no site.
"""

import os
import sys
import time

import pytest

# the dev runtime's side of the fixtures (its own site; nothing on a bench) lives in its layer
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "devruntime"))

# the app's test kit (a bench site, or the site a runtime provides), the dev runtime's site and its
# own fixtures, and a real Prometheus for the export's tests
pytest_plugins = [
	"verenigingen_perf.testing.fixtures",
	"vperf_devruntime.pytest_plugin",
	"tests.prometheus_server",
]

# `bench run-tests` runs this whole suite through that one unittest class; pytest must not run it
collect_ignore = ["verenigingen_perf/tests/test_whole_suite.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
	for item in items:
		if "site" in getattr(item, "fixturenames", ()):
			item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def site_state_guard(site):
	"""The site's settings, its role's grants, its secrets and the metrics user at the start of the
	session, compared at its end: a test that changed them and did not put them back fails the
	session (and they are put back)."""
	import frappe

	from verenigingen_perf.testing import site_state

	before = site_state.take()
	yield before
	frappe.db.rollback()
	after = site_state.take()
	tests_own = {parent for _type, parent, _name, _idx in after.grants if parent.startswith(TEST_USER_PREFIX)}
	if problems := site_state.differences(before, after, ignore_users=tests_own):
		site_state.restore(before)
		pytest.fail("the tests changed the site and did not put it back: " + "; ".join(problems))


# the users `make_user` creates (removed after each test)
TEST_USER_PREFIX = "vperf-test-"


@pytest.fixture(autouse=True)
def _leaves_the_site_as_found(request):
	"""Every integration test runs under the session's guard (unit tests need no site)."""
	if "site" in request.fixturenames:
		request.getfixturevalue("site_state_guard")
	yield


@pytest.fixture
def default_settings(site):
	"""The test runs on the environment's defaults; after it, Performance Settings are put back exactly
	as they were stored before it (a bench site's own overrides and metrics token included)."""
	import frappe

	from verenigingen_perf.testing import site_state
	from verenigingen_perf.utils.performance import capture, config

	def retried(write):
		site_state.write_retried(write)
		capture.forget_local_config()

	started = frappe.utils.now_datetime()
	frappe.db.rollback()
	before = site_state.take()
	retried(config.reset_overrides)
	yield
	frappe.db.rollback()
	retried(lambda: site_state.restore(before))
	# the framework's change log of the settings the test changed
	frappe.db.delete("Version", {"ref_doctype": "Performance Settings", "creation": (">=", started)})
	frappe.db.commit()


@pytest.fixture
def clean_slate(default_settings):
	"""No detail rows, no aggregates, no watermark, no drain claims (a test site only); yields the
	function that wipes them again."""

	import frappe

	from verenigingen_perf.utils.performance import buffer, dashboard, redis_store, rollup
	from verenigingen_perf.utils.performance.export import otlp
	from verenigingen_perf.utils.performance.schema import (
		AGGREGATE,
		ANOMALY,
		BASELINE,
		EXPORT_COUNTER,
		METRIC,
		REGRESSION,
		ROLLUP_STATE,
	)

	def wipe():
		# a fresh snapshot: on SQLite (WAL) a transaction that read before the web server's last
		# commit cannot write any more
		frappe.db.rollback()
		for doctype in (METRIC, AGGREGATE, BASELINE, REGRESSION, ANOMALY, EXPORT_COUNTER):
			frappe.db.delete(doctype)
		frappe.db.sql(
			"update `tabSingles` set value=NULL where doctype=%s and field in ('watermark', 'detected_until')",
			(ROLLUP_STATE,),
		)
		rollup.ensure_state_row()
		frappe.db.commit()
		client = buffer.redis_client()
		client.delete(
			buffer.claims_key(),
			redis_store.lock_key("rollup"),
			redis_store.lock_key("retention"),
			redis_store.lock_key("detection"),
			redis_store.lock_key("otlp"),
			otlp.backlog_key(),
			otlp.dropped_key(),
			otlp.exported_key(),
		)
		dashboard.clear_dashboard_cache()

	wipe()
	yield wipe
	wipe()


@pytest.fixture(scope="session")
def member_doctypes(site):
	"""The tests' own member, chapter and membership doctypes (clearly named custom doctypes, never
	those of a real `verenigingen` site), created once and removed after the session."""
	from verenigingen_perf.testing import members

	names = members.ensure_member_doctypes(members.TEST)
	yield names
	members.remove_member_doctypes(names)


@pytest.fixture
def member_settings(default_settings, member_doctypes):
	"""The configuration pointed at the tests' member doctype."""
	import frappe

	from verenigingen_perf.utils.performance import config

	config.update_config({"member_doctype": member_doctypes.member})
	frappe.db.commit()
	return member_doctypes


# what the framework logs of the failures the tests plant on purpose (Error Log titles)
PLANTED_FAILURE_TITLES = (
	"planted server failure",
	"verenigingen_perf.api.testing.probe_job",
	"verenigingen_perf: internal error in test.broken",
	"verenigingen_perf: internal error in buffer.encode",
	# the records the alert evaluation skips, and the unreadable snapshot a scrape leaves out
	"verenigingen_perf: internal error in alerts.rule",
	"verenigingen_perf: internal error in alerts.source",
	"verenigingen_perf: internal error in alerts.silence",
	"verenigingen_perf: internal error in alerts.maintenance window",
	"verenigingen_perf: internal error in metrics: latest database snapshot",
)


@pytest.fixture
def planted_failures(site):
	"""A test that plants failures leaves nothing of them behind: the Error Logs the framework wrote
	(deferred ones included) and the failed background jobs."""
	yield
	import frappe
	from frappe.deferred_insert import save_to_db
	from frappe.utils.background_jobs import get_queues
	from rq.job import Job
	from rq.registry import FailedJobRegistry

	frappe.db.rollback()
	save_to_db()
	frappe.db.delete("Error Log", {"method": ("in", PLANTED_FAILURE_TITLES)})
	frappe.db.commit()
	for queue in get_queues():
		registry = FailedJobRegistry(queue=queue)
		for job_id in registry.get_job_ids():
			job = Job.fetch(job_id, connection=queue.connection)
			if (job.kwargs or {}).get("method") == "verenigingen_perf.api.testing.probe_job":
				registry.remove(job, delete_job=True)
