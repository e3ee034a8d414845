"""The health score's formula and judging, and figures merged from stored sketches (no site)."""

import itertools
import random

import pytest
from ddsketch import DDSketch
from hypothesis import given, settings
from hypothesis import strategies as st

from verenigingen_perf.utils.performance import health, schedule
from verenigingen_perf.utils.performance.config import ENVIRONMENTS, Level, build_config
from verenigingen_perf.utils.performance.schema import ALL_OPERATIONS
from verenigingen_perf.utils.performance.sketch import StoredSketchMerger, Summary

THRESHOLDS = {env: build_config(env, "test").thresholds for env in ENVIRONMENTS}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_component_score_is_anchored_at_the_configured_levels(environment):
	thresholds = THRESHOLDS[environment]
	score_levels = thresholds.health_score
	for level in (
		thresholds.api_response_ms,
		thresholds.page_load_ms,
		thresholds.job_duration_ms,
		thresholds.error_rate,
		thresholds.api_queries,
	):
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


def figures(api_p95=5.0, page_p95=None, job_p95=None, **values) -> health.WindowFigures:
	by_type = {}
	if api_p95 is not None:
		by_type["api"] = health.TypeFigures(count=100, p95_ms=api_p95, queries_per_operation=1.0)
	if page_p95 is not None:
		by_type["page"] = health.TypeFigures(count=10, p95_ms=page_p95, queries_per_operation=20.0)
	if job_p95 is not None:
		by_type["job"] = health.TypeFigures(count=5, p95_ms=job_p95, queries_per_operation=50.0)
	base = {
		"window_hours": 1,
		"count": sum(t.count for t in by_type.values()),
		"by_type": by_type,
		"error_rate": 0.0,
		"memory_max_mb": 10.0,
		"job_lag_s": {"drain": 0.0, "rollup": 0.0},
	}
	return health.WindowFigures(**{**base, **values})


def test_no_measurement_is_no_data_not_a_score():
	report = health.judge(
		figures(api_p95=None, error_rate=None, memory_max_mb=None), THRESHOLDS["production"]
	)
	assert report.score is None
	assert report.level == health.NO_DATA
	assert "no data" in report.message
	assert {c.name for c in report.components} >= {
		"api_response_p95",
		"api_queries",
		"page_load_p95",
		"page_queries",
		"job_duration_p95",
		"error_rate",
		"memory",
	}


def test_the_weakest_component_decides_and_every_component_is_reported():
	thresholds = THRESHOLDS["production"]
	healthy = health.judge(figures(), thresholds)
	assert healthy.level == health.HEALTHY
	slow = health.judge(figures(api_p95=thresholds.api_response_ms.critical * 2), thresholds)
	assert slow.level == health.CRITICAL
	weakest = min(slow.components, key=lambda c: c.score if c.score is not None else health.FULL_SCORE)
	assert weakest.name == "api_response_p95"
	assert slow.score == weakest.score
	lagging = health.judge(
		figures(job_lag_s={"drain": thresholds.job_lag_s.warning * 1.5, "rollup": 0.0}), thresholds
	)
	assert lagging.level == health.WARNING
	assert {c.name: c.level for c in lagging.components}["drain_job_lag"] == health.WARNING


def test_each_kind_of_operation_is_judged_on_its_own_levels():
	"""A page load or a job as slow as the API's critical level is healthy on its own levels; a
	kind with nothing in the window takes no part."""
	thresholds = THRESHOLDS["production"]
	api_warning = thresholds.api_response_ms.warning
	beyond_api = (api_warning + min(thresholds.page_load_ms.warning, thresholds.job_duration_ms.warning)) / 2
	assert beyond_api > api_warning
	report = health.judge(figures(api_p95=1.0, page_p95=beyond_api, job_p95=beyond_api), thresholds)
	levels = {c.name: c.level for c in report.components}
	assert levels["page_load_p95"] == levels["job_duration_p95"] == health.HEALTHY
	assert report.level == health.HEALTHY
	assert health.judge(figures(), thresholds).components[2].level == health.NO_DATA
	slow_page = health.judge(figures(page_p95=thresholds.page_load_ms.critical * 1.5), thresholds)
	assert slow_page.level == health.CRITICAL and "page_load_p95" in slow_page.message


def test_a_job_that_never_ran_has_no_lag_figure():
	assert schedule.job_lag_s(None, 60, 1000.0) is None
	assert schedule.job_lag_s(990.0, 60, 1000.0) == 0
	assert schedule.job_lag_s(800.0, 60, 1000.0) == 140


def stored(values):
	summary = Summary()
	for v in values:
		summary.add(v, False, 1, 0.0, 1.0)
	return summary, summary.bins.dumps()


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


def rows_for(operation, values, errors=0, operation_type="api", client_errors=0):
	summary, text = stored(values)
	return {
		"operation": operation,
		"operation_type": operation_type,
		"count": summary.count,
		"error_count": errors,
		"client_error_count": client_errors,
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
	rows = [
		rows_for("fast", fast[:450]),
		rows_for("fast", fast[450:], errors=9, client_errors=20),
		rows_for("slow", slow),
		# the rollup's site-wide row of the same rows, which the judged figures come from
		rows_for(ALL_OPERATIONS, fast + slow, errors=9, client_errors=20),
		rows_for(ALL_OPERATIONS, [5000.0] * 10, operation_type="custom"),
	]
	window, per_operation = health.window_figures(rows, 1)
	exact = sorted(fast + slow)[int(0.95 * 999)]
	assert window.count == 1000  # measured blocks run inside requests: not judged, not counted
	assert window.of("api").p95_ms == pytest.approx(exact, rel=0.011)
	assert window.error_rate == pytest.approx(9 / 1000)
	assert window.client_error_rate == pytest.approx(20 / 1000)
	ranked = health.slowest(per_operation, 1)
	assert [r["operation"] for r in ranked] == ["slow"]
	assert ranked[0]["count"] == 100
