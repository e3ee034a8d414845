"""`bench --site S run-tests --app verenigingen_perf` runs the app's pytest suite on that site, one
unittest case per test module, so the runner lists each module and its outcome.

Frappe's test runner collects unittest classes only, and the suite is written for pytest (fixtures,
property tests); each class here runs one test module in a pytest process of its own, pointed at the
site the runner was started for (VPERF_BENCH_SITES / VPERF_BENCH_SITE), and fails with pytest's report
when any of its tests fails. One module alone: `bench --site S run-tests --module
verenigingen_perf.tests.test_whole_suite --case TestAlerts`. pytest itself never collects this file
(see conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import unittest
from pathlib import Path

import frappe

APP = "verenigingen_perf"
# the repository checkout the app is installed from (its tests/ beside the package)
CHECKOUT = Path(__file__).resolve().parents[2]
# the report's tail that a failure shows (pytest's summary of failures is at the end)
_REPORT_TAIL_CHARS = 20_000


def test_modules(checkout: Path = CHECKOUT) -> list[Path]:
	"""Every pytest module of the suite: tests/ and the doctypes' own tests, this file excepted."""
	package = checkout / APP
	own = Path(__file__).resolve()
	found = [*sorted((checkout / "tests").glob("test_*.py")), *sorted(package.rglob("test_*.py"))]
	return [path for path in found if path.resolve() != own]


def case_name(module: Path) -> str:
	"""`tests/test_alerts_unit.py` -> `TestAlertsUnit`."""
	return "Test" + "".join(part.capitalize() for part in module.stem.removeprefix("test_").split("_"))


def run_module(case: unittest.TestCase, module: Path) -> None:
	if not (CHECKOUT / "tests").is_dir():
		case.fail(f"the app's tests are not in {CHECKOUT}: install the app from its repository")
	try:
		import pytest
	except ImportError:
		case.fail(f"pytest is missing: ./env/bin/pip install -e apps/{APP}[test]")
	# the runner's own transaction holds locks (it reads Singles for update) that the module's
	# processes would wait on for ever
	frappe.db.commit()
	sites_path = os.path.abspath(frappe.local.sites_path)
	result = subprocess.run(
		[
			sys.executable,
			"-m",
			"pytest",
			str(module),
			"--rootdir",
			str(CHECKOUT),
			"-p",
			"no:cacheprovider",
			"-q",
			"-rfE",
		],
		cwd=sites_path,
		env={**os.environ, "VPERF_BENCH_SITES": sites_path, "VPERF_BENCH_SITE": frappe.local.site},
		capture_output=True,
		text=True,
	)
	report = (result.stdout + result.stderr)[-_REPORT_TAIL_CHARS:]
	print(report)
	# 5: every test of the module was deselected or skipped by collection (nothing to fail)
	case.assertIn(result.returncode, (0, 5), report)


def _case(module: Path) -> type[unittest.TestCase]:
	def test_module_passes(self: unittest.TestCase) -> None:
		run_module(self, module)

	relative = module.relative_to(CHECKOUT)
	test_module_passes.__doc__ = f"pytest {relative}"
	return type(case_name(module), (unittest.TestCase,), {"test_module_passes": test_module_passes})


for _module in test_modules():
	globals()[case_name(_module)] = _case(_module)
