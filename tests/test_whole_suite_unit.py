"""`bench run-tests --app verenigingen_perf` lists one case per test module of the suite. No site."""

import unittest
from pathlib import Path

from verenigingen_perf.tests import test_whole_suite

CHECKOUT = Path(__file__).resolve().parents[1]


def test_every_test_module_has_its_own_case():
	modules = test_whole_suite.test_modules()
	expected = {*CHECKOUT.glob("tests/test_*.py"), *CHECKOUT.glob("verenigingen_perf/**/test_*.py")}
	expected.discard(CHECKOUT / "verenigingen_perf" / "tests" / "test_whole_suite.py")
	assert {m.resolve() for m in modules} == {m.resolve() for m in expected}
	assert Path(__file__).resolve() in {m.resolve() for m in modules}

	cases = unittest.TestLoader().loadTestsFromModule(test_whole_suite)
	names = [test.id().rsplit(".", 2)[-2] for suite in cases for test in suite]
	assert sorted(names) == sorted(test_whole_suite.case_name(m) for m in modules)
	assert len(set(names)) == len(modules), "two modules share a case name"


def test_a_case_is_named_after_its_module():
	assert test_whole_suite.case_name(Path("tests/test_alerts_unit.py")) == "TestAlertsUnit"
	assert test_whole_suite.case_name(Path("x/test_performance_settings.py")) == "TestPerformanceSettings"
