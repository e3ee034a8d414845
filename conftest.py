"""Pytest set-up for the whole repository: the site fixtures of the runtime layer, and markers.

A test that uses the `site` fixture (directly or through another fixture) is an integration test;
every other test is a unit test and needs no site.
"""

import os
import sys

import pytest

# the fixtures live in the dev runtime layer; on a real bench they are loaded from this checkout too
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "devruntime"))

pytest_plugins = ["vperf_devruntime.pytest_plugin"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
	for item in items:
		if "site" in getattr(item, "fixturenames", ()):
			item.add_marker(pytest.mark.integration)


@pytest.fixture
def default_settings(site):
	"""Performance Settings back to the environment's defaults before and after the test."""
	import frappe

	from verenigingen_perf.utils.performance import capture, config

	def reset():
		config.reset_overrides()
		frappe.db.commit()
		capture.forget_local_config()

	reset()
	yield
	frappe.db.rollback()
	reset()


@pytest.fixture
def clean_slate(default_settings):
	"""No detail rows, no aggregates, no watermark, no drain claims (a test site only); yields the
	function that wipes them again."""

	import frappe

	from verenigingen_perf.utils.performance import buffer, dashboard, rollup

	def wipe():
		# a fresh snapshot: on SQLite (WAL) a transaction that read before the web server's last
		# commit cannot write any more
		frappe.db.rollback()
		frappe.db.delete(rollup.METRIC)
		frappe.db.delete(rollup.AGGREGATE)
		frappe.db.sql(
			"update `tabSingles` set value=NULL where doctype=%s and field='watermark'", (rollup.STATE,)
		)
		rollup.ensure_state_row()
		frappe.db.commit()
		client = buffer.redis_client()
		client.delete(buffer.claims_key(), buffer._key("rollup_lock"), buffer._key("retention_lock"))
		dashboard.clear_dashboard_cache()

	wipe()
	yield wipe
	wipe()


@pytest.fixture(scope="session")
def member_doctypes(site):
	"""The demo's Member, Chapter and membership doctypes (custom doctypes, created once)."""
	from vperf_devruntime import members

	members.ensure_member_doctypes()
	return members
