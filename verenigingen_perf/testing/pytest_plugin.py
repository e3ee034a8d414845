"""pytest plugin of the regression guards (registered by the `pytest11` entry point of the app).

Options: `--vperf-baselines PATH` (default: `tests/performance_baselines.json` under pytest's root
directory) and `--vperf-update-baselines` (guards record what they measure instead of comparing).
Fixtures: `query_budget`, `memory_budget`, `timing_guard`, `vperf_baselines`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from verenigingen_perf.testing import guards
from verenigingen_perf.testing.baselines import Baselines, set_default_baselines


def pytest_addoption(parser: pytest.Parser) -> None:
	group = parser.getgroup("verenigingen_perf", "regression guards (verenigingen_perf.testing)")
	group.addoption("--vperf-baselines", default=None, help="the guards' baselines file (JSON)")
	group.addoption(
		"--vperf-update-baselines",
		action="store_true",
		default=False,
		help="record what the guards measure in the baselines file instead of comparing",
	)


def pytest_configure(config: pytest.Config) -> None:
	path = (
		config.getoption("--vperf-baselines")
		or Path(config.rootpath) / "tests" / "performance_baselines.json"
	)
	set_default_baselines(Baselines(path, update=config.getoption("--vperf-update-baselines")))


def pytest_unconfigure(config: pytest.Config) -> None:
	set_default_baselines(None)


@pytest.fixture
def vperf_baselines() -> Baselines:
	from verenigingen_perf.testing.baselines import default_baselines

	baselines = default_baselines()
	assert baselines is not None
	return baselines


@pytest.fixture
def query_budget() -> Any:
	return guards.query_budget


@pytest.fixture
def memory_budget() -> Any:
	return guards.memory_budget


@pytest.fixture
def timing_guard() -> Any:
	return guards.timing_guard
