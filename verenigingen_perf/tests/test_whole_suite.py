"""`bench --site S run-tests --app verenigingen_perf` runs the app's whole pytest suite on that site.

Frappe's test runner collects unittest classes only, and the suite is written for pytest (fixtures,
property tests); this one class runs it in a process of its own, pointed at the site the runner was
started for (VPERF_BENCH_SITES / VPERF_BENCH_SITE), and fails with pytest's report when any test
fails. pytest itself never collects this file (see conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import unittest
from pathlib import Path

import frappe

APP = "verenigingen_perf"
# the report's tail that a failure shows (pytest's summary of failures is at the end)
_REPORT_TAIL_CHARS = 20_000


class TestVerenigingenPerfSuite(unittest.TestCase):
	def test_the_pytest_suite_passes_on_this_site(self) -> None:
		checkout = Path(frappe.get_app_path(APP)).parent
		if not (checkout / "tests").is_dir():
			self.fail(f"the app's tests are not in {checkout}: install the app from its repository")
		try:
			import pytest
		except ImportError:
			self.fail(f"pytest is missing: ./env/bin/pip install -e apps/{APP}[test]")
		# the runner's own transaction holds locks (it reads Singles for update) that the suite's
		# processes would wait on for ever
		frappe.db.commit()
		sites_path = os.path.abspath(frappe.local.sites_path)
		result = subprocess.run(
			[sys.executable, "-m", "pytest", str(checkout), "-p", "no:cacheprovider", "-q", "-rfE"],
			cwd=sites_path,
			env={**os.environ, "VPERF_BENCH_SITES": sites_path, "VPERF_BENCH_SITE": frappe.local.site},
			capture_output=True,
			text=True,
		)
		report = (result.stdout + result.stderr)[-_REPORT_TAIL_CHARS:]
		print(report)
		self.assertEqual(result.returncode, 0, report)
