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
