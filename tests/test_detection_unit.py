"""The detection statistics and rules, against reference implementations (scipy) and by their
properties. No site needed."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from verenigingen_perf.utils.performance.config import build_config
from verenigingen_perf.utils.performance.detection import rules, statistics
from verenigingen_perf.utils.performance.sketch import RELATIVE_ACCURACY, StoredSketchMerger, Summary

MAPPING_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
CONFIG = build_config("production", "default").detection


def summary_of(values) -> Summary:
	summary = Summary()
	values = list(values)
	summary.add_many(values, 0, [10] * len(values), [1.0] * len(values), [0.0] * len(values))
	return summary


def binned_values(merger: StoredSketchMerger) -> list[float]:
	"""The values a sketch holds, one per count, each at its bin's key (what the rank test ranks)."""
	out = [0.0] * merger.zero_count
	if merger.bins is not None:
		for index in np.flatnonzero(merger.bins):
			out += [float(merger.first_key + index)] * int(merger.bins[index])
	return out


@pytest.mark.parametrize("seed", range(12))
def test_the_rank_test_from_bins_is_scipys_mann_whitney_on_the_binned_values(seed):
	rng = np.random.default_rng(seed)
	shift = rng.choice([1.0, 1.03, 1.2, 0.9])
	base = summary_of(rng.lognormal(3.0, rng.uniform(0.3, 1.2), int(rng.integers(20, 3000))))
	window = summary_of(rng.lognormal(3.0 + math.log(shift), 0.8, int(rng.integers(5, 500))))
	ours = statistics.rank_test(base.bins, window.bins)
	reference = stats.mannwhitneyu(
		binned_values(window.bins), binned_values(base.bins), alternative="greater", use_continuity=False
	)
	assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("seed", range(200))
def test_fishers_exact_test_is_scipys_hypergeometric_tail(seed):
	rng = np.random.default_rng(seed)
	base_total, window_total = int(rng.integers(1, 50_000)), int(rng.integers(1, 5_000))
	base_events = int(rng.integers(0, min(base_total, 200) + 1))
	window_events = int(rng.integers(0, min(window_total, 60) + 1))
	ours = statistics.exceedance_test(base_events, base_total, window_events, window_total)
	reference = stats.hypergeom.sf(
		window_events - 1, base_total + window_total, base_events + window_events, window_total
	)
	assert ours.p_value == pytest.approx(reference, rel=1e-9, abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(
	st.lists(st.floats(0.5, 5000), min_size=3, max_size=80),
	st.lists(st.floats(0.5, 5000), min_size=3, max_size=80),
)
def test_swapping_baseline_and_window_flips_the_rank_tests_sign(first, second):
	a, b = summary_of(first), summary_of(second)
	forward, backward = statistics.rank_test(a.bins, b.bins), statistics.rank_test(b.bins, a.bins)
	assert forward.statistic == pytest.approx(-backward.statistic, abs=1e-9)
	effect = statistics.common_language_effect(a.bins, b.bins)
	assert effect == pytest.approx(1 - statistics.common_language_effect(b.bins, a.bins))


def test_robust_score_with_mad_zero_and_without_history():
	# MAD 0 but not every value equal: the mean absolute deviation takes over
	score = statistics.robust_score(20.0, [10.0, 10.0, 10.0, 14.0], 0.0)
	assert score.median == 10.0 and score.scale == pytest.approx(1.0 * statistics.MEAN_AD_TO_SD)
	# every value equal and no noise floor: equal is 0, anything else is certain
	assert statistics.robust_score(5.0, [5.0, 5.0, 5.0], 0.0).score == 0.0
	assert statistics.robust_score(6.0, [5.0, 5.0, 5.0], 0.0).score == math.inf
	assert statistics.robust_score(4.0, [5.0, 5.0, 5.0], 0.0).score == -math.inf
	# the noise floor (inflated for the median's own noise) bounds the scale from below
	floored = statistics.robust_score(8.0, [5.0, 5.0, 5.0, 5.0], 1.0)
	assert floored.scale == pytest.approx(math.sqrt(1 + math.pi / 8))
	with pytest.raises(ValueError, match="history is empty"):
		statistics.robust_score(1.0, [], 1.0)
	assert rules.anomalies(rules.HourFigures(100, 0, 50.0), [], CONFIG) == []


def test_a_count_spike_is_an_anomaly_and_poisson_noise_is_not():
	rng = np.random.default_rng(3)
	history = [rules.HourFigures(int(c), 0, 0.0) for c in rng.poisson(100, 4)]
	spike = rules.anomalies(rules.HourFigures(300, 0, 0.0), history, CONFIG)
	assert [(f.metric, f.direction) for f in spike] == [("count", "high")]
	quiet = [rules.HourFigures(int(c), 0, 0.0) for c in rng.poisson(3, 4)]
	noise = sum(
		bool(rules.anomalies(rules.HourFigures(int(c), 0, 0.0), quiet, CONFIG)) for c in rng.poisson(3, 2000)
	)
	assert noise <= 2
	assert rules.anomalies(rules.HourFigures(0, 0, 0.0), history, CONFIG)[0].direction == "low"
	# a drop that is not to zero is a quiet hour, not an anomaly
	assert rules.anomalies(rules.HourFigures(40, 0, 0.0), history, CONFIG) == []


def test_an_error_burst_is_an_anomaly_and_a_quiet_hours_error_is_not():
	history = [rules.HourFigures(200, e, 0.0) for e in (1, 0, 2, 1)]
	assert rules.anomalies(rules.HourFigures(200, 3, 0.0), history, CONFIG) == []
	burst = rules.anomalies(rules.HourFigures(200, 40, 0.0), history, CONFIG)
	assert [f.metric for f in burst] == ["error_rate"] and burst[0].value == 0.2
	# below anomaly_min_samples requests, the error rate is not judged at all
	assert rules.anomalies(rules.HourFigures(10, 10, 0.0), [rules.HourFigures(10, 0, 0.0)] * 4, CONFIG) == []


def baseline_of(values, statements=10) -> rules.Baseline:
	summary = summary_of(values)
	return rules.Baseline(summary, statistics.MeanSpread(statements, summary.count, 0.0))


def window_of(values, statements=10, hours=3, errors=0) -> rules.Window:
	summary = summary_of(values)
	summary.error_count = errors
	summary.query_sum = statements * summary.count
	per_hour = summary.count // hours
	return rules.Window(
		summary, [rules.HourTotals(per_hour, statements * per_hour, errors // hours) for _ in range(hours)]
	)


def test_a_real_slowdown_is_flagged_and_noise_or_a_small_sample_is_not():
	rng = np.random.default_rng(11)
	baseline = baseline_of(rng.lognormal(4.0, 0.6, 30_000))
	slower = {
		f.metric: f
		for f in rules.evaluate(baseline, window_of(rng.lognormal(4.0 + math.log(1.3), 0.6, 900)), CONFIG)
	}
	assert slower["duration_p95"].flagged and slower["duration_p50"].flagged
	assert slower["duration_p95"].change == pytest.approx(0.3, abs=0.08)
	same = rules.evaluate(baseline, window_of(rng.lognormal(4.0, 0.6, 900)), CONFIG)
	assert not any(f.flagged for f in same)
	assert {f.metric: f for f in same}["duration_p50"].within
	# fewer than regression_min_samples in the window: nothing is judged
	assert rules.evaluate(baseline, window_of(rng.lognormal(6.0, 0.6, 20)), CONFIG) == []


def test_a_rise_of_statements_is_flagged_only_when_sustained():
	rng = np.random.default_rng(12)
	baseline = baseline_of(rng.lognormal(4.0, 0.6, 30_000), statements=10)
	risen = {
		f.metric: f
		for f in rules.evaluate(baseline, window_of(rng.lognormal(4.0, 0.6, 900), statements=12), CONFIG)
	}
	assert risen["statements"].flagged and risen["statements"].after == 12
	window = window_of(rng.lognormal(4.0, 0.6, 900), statements=12)
	window.hours[0] = rules.HourTotals(300, 3000, 0)  # one hour at the old count: not sustained
	assert not {f.metric: f for f in rules.evaluate(baseline, window, CONFIG)}["statements"].flagged


def test_an_error_rate_regression_needs_more_than_one_hours_burst():
	rng = np.random.default_rng(13)
	baseline = baseline_of(rng.lognormal(4.0, 0.6, 30_000))
	baseline.summary.error_count = 30  # 0.1%
	durations = rng.lognormal(4.0, 0.6, 900)
	spread = rules.evaluate(baseline, window_of(durations, errors=45), CONFIG)
	assert {f.metric: f for f in spread}["error_rate"].flagged
	burst = window_of(durations, errors=45)
	burst.hours = [
		rules.HourTotals(300, 3000, 45),
		rules.HourTotals(300, 3000, 0),
		rules.HourTotals(300, 3000, 0),
	]
	assert not {f.metric: f for f in rules.evaluate(baseline, burst, CONFIG)}["error_rate"].flagged
