"""The health score's formula and judging, and figures merged from stored sketches (no site)."""

import itertools
import random

import pytest
from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as st

from verenigingen_perf.utils.performance import health
from verenigingen_perf.utils.performance.config import ENVIRONMENTS, Level, build_config
from verenigingen_perf.utils.performance.sketch import StoredSketchMerger, Summary, dumps

THRESHOLDS = {env: build_config(env, "test").thresholds for env in ENVIRONMENTS}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_component_score_is_anchored_at_the_configured_levels(environment):
	thresholds = THRESHOLDS[environment]
	score_levels = thresholds.health_score
	for level in (thresholds.api_response_ms, thresholds.error_rate, thresholds.queries_per_operation):
		assert health.component_score(0, level, score_levels) == health.FULL_SCORE
		assert health.component_score(level.warning, level, score_levels) == pytest.approx(
			score_levels.warning
		)
		assert health.component_score(level.critical, level, score_levels) == pytest.approx(
			score_levels.critical
		)
		assert health.score_level(
			health.component_score(level.warning, level, score_levels), score_levels
		) == (health.HEALTHY)
		just_over = level.critical * 1.01
		assert health.score_level(health.component_score(just_over, level, score_levels), score_levels) == (
			health.CRITICAL
		)


@given(
	st.floats(min_value=0.1, max_value=1e4),
	st.floats(min_value=1.01, max_value=10),
	st.lists(st.floats(min_value=0, max_value=1e6), min_size=2, max_size=20),
)
@settings(max_examples=200, deadline=None)
def test_component_score_falls_as_the_value_rises_and_stays_in_range(warning, factor, values):
	level, score_levels = Level(warning, warning * factor), Level(80, 60)
	scores = [health.component_score(v, level, score_levels) for v in sorted(values)]
	assert all(0 <= s <= health.FULL_SCORE for s in scores)
	assert all(a >= b - 1e-9 for a, b in itertools.pairwise(scores))


def figures(**values) -> health.WindowFigures:
	base = {
		"window_hours": 1,
		"count": 100,
		"p95_ms": 5.0,
		"error_rate": 0.0,
		"queries_per_operation": 1.0,
		"memory_max_mb": 10.0,
		"job_lag_s": {"drain": 0.0, "rollup": 0.0},
	}
	return health.WindowFigures(**{**base, **values})


def test_no_measurement_is_no_data_not_a_score():
	report = health.judge(
		figures(count=0, p95_ms=None, error_rate=None, queries_per_operation=None, memory_max_mb=None),
		THRESHOLDS["production"],
	)
	assert report.score is None
	assert report.level == health.NO_DATA
	assert "no data" in report.message
	assert {c.name for c in report.components} >= {
		"response_p95",
		"error_rate",
		"queries_per_operation",
		"memory",
	}


def test_the_weakest_component_decides_and_every_component_is_reported():
	thresholds = THRESHOLDS["production"]
	healthy = health.judge(figures(), thresholds)
	assert healthy.level == health.HEALTHY
	slow = health.judge(figures(p95_ms=thresholds.api_response_ms.critical * 2), thresholds)
	assert slow.level == health.CRITICAL
	weakest = min(slow.components, key=lambda c: c.score if c.score is not None else health.FULL_SCORE)
	assert weakest.name == "response_p95"
	assert slow.score == weakest.score
	lagging = health.judge(
		figures(job_lag_s={"drain": thresholds.job_lag_s.warning * 1.5, "rollup": 0.0}), thresholds
	)
	assert lagging.level == health.WARNING
	assert {c.name: c.level for c in lagging.components}["drain_job_lag"] == health.WARNING


def test_a_job_that_never_ran_has_no_lag_figure():
	assert health.job_lag_s(None, 60, 1000.0) is None
	assert health.job_lag_s(990.0, 60, 1000.0) == 0
	assert health.job_lag_s(800.0, 60, 1000.0) == 140


def stored(values):
	summary = Summary()
	for v in values:
		summary.add(v, False, 1, 0.0, 1.0)
	return summary, dumps(summary.sketch)


@given(st.lists(st.lists(st.floats(min_value=0, max_value=1e5), max_size=50), min_size=1, max_size=8))
@settings(max_examples=100, deadline=None)
def test_stored_sketch_merger_equals_ddsketch_merge(groups):
	merger, reference = StoredSketchMerger(), DDSketch(0.01)
	for values in groups:
		summary, text = stored(values)
		merger.add(text)
		reference.merge(summary.sketch)
	merged = merger.sketch()
	assert merged.count == reference.count
	values = [v for group in groups for v in group]
	if values:
		exact = Summary(count=len(values), duration_min_ms=min(values), duration_max_ms=max(values))
		exact.add_durations(values)
		qs = (0.0, 0.5, 0.9, 0.95, 0.99, 1.0)
		assert merger.quantiles(qs, min(values), max(values)) == exact.quantiles(qs)
	for q in (0.0, 0.5, 0.95, 0.99, 1.0):
		assert merged.get_quantile_value(q) == reference.get_quantile_value(q)


def rows_for(operation, values, errors=0):
	summary, text = stored(values)
	return {
		"operation": operation,
		"count": summary.count,
		"error_count": errors,
		"duration_sum_ms": summary.duration_sum_ms,
		"duration_min_ms": summary.duration_min_ms,
		"duration_max_ms": summary.duration_max_ms,
		"query_sum": summary.query_sum,
		"memory_max_mb": summary.memory_max_mb,
		"sketch": text,
	}


def test_window_figures_merge_distributions_and_rank_the_slowest():
	rng = random.Random(3)
	fast = [rng.uniform(1, 10) for _ in range(900)]
	slow = [rng.uniform(100, 200) for _ in range(100)]
	rows = [rows_for("fast", fast[:450]), rows_for("fast", fast[450:], errors=9), rows_for("slow", slow)]
	window, per_operation = health.window_figures(rows, 1)
	exact = sorted(fast + slow)[int(0.95 * 999)]
	assert window.count == 1000
	assert window.p95_ms == pytest.approx(exact, rel=0.011)
	assert window.error_rate == pytest.approx(9 / 1000)
	ranked = health.slowest(per_operation, 1)
	assert [r["operation"] for r in ranked] == ["slow"]
	assert ranked[0]["count"] == 100
