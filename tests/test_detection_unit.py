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


# --- data that does not share the detectors' assumptions ------------------------------------------


def day_of(rng, median: float, count: int, sigma: float = 0.6) -> Summary:
	return summary_of(rng.lognormal(math.log(median), sigma, count))


def test_the_excess_variance_is_what_sampling_does_not_explain():
	assert statistics.excess_variance([1.0], [0.5]) == 0.0
	# replicates as far apart as their sampling says: no excess
	assert statistics.excess_variance([0.0, 0.1, -0.1], [0.01, 0.01, 0.01]) == pytest.approx(0.0, abs=1e-12)
	assert statistics.excess_variance([0.0, 0.2, -0.2], [0.01, 0.01, 0.01]) == pytest.approx(0.03)
	# pooled over groups, each weighing its degrees of freedom
	pooled = statistics.pooled_excess_variance(
		[([0.0, 0.2, -0.2], [0.01] * 3), ([0.0, 0.0], [0.0, 0.0]), ([1.0], [0.0])]
	)
	assert pooled == pytest.approx((0.04 * 2 - 0.01 * 2) / 3)


def test_the_medians_sampling_spread_is_that_of_a_log_normal_median():
	rng = np.random.default_rng(21)
	sigma, count = 0.7, 4000
	merger = day_of(rng, 50.0, count, sigma).bins
	spread = statistics.quantile_log_sd(merger, 0.5, count, 0.0, math.inf)
	# var(log median) = pi/2 * sigma^2 / n for log-normal values
	assert spread == pytest.approx(math.sqrt(math.pi / 2) * sigma / math.sqrt(count), rel=0.15)


def test_dispersion_is_fitted_without_the_largest_and_never_below_poisson():
	poisson = statistics.POISSON
	assert statistics.dispersion([], []) == poisson and statistics.dispersion([5.0, 5.0], [1, 1]) == poisson
	assert statistics.dispersion([0.1, 0.2, -0.1], [10, 10, 10]) == poisson
	# a constant factor (negative-binomial counts, variance 4x the mean), one anomalous hour left out
	constant = statistics.dispersion([2.0, -2.0, 2.0, 30.0], [5, 50, 500, 50])
	assert constant.base == pytest.approx(4.0) and constant.per_level == 0.0
	# a rate that varies from hour to hour by 50%: its variance grows by 0.25 per unit of level
	rng = np.random.default_rng(81)
	levels = rng.uniform(1, 200, 400)
	deviations = rng.normal(0.0, np.sqrt(1.0 + 0.25 * levels))
	grown = statistics.dispersion(list(deviations), list(levels))
	assert grown.per_level == pytest.approx(0.25, rel=0.3) and grown.base == pytest.approx(1.0, abs=1.5)
	assert grown.at(100) == pytest.approx(grown.base + 100 * grown.per_level)
	# averaged into the previous days', each day weighing 1/days
	today = rules.Dispersion(statistics.Overdispersion(9.0, 0.7))
	averaged = today.averaged(rules.Dispersion(statistics.Overdispersion(2.0, 0.0)), 7)
	assert averaged.count.base == pytest.approx(2.0 * 6 / 7 + 9.0 / 7)
	assert averaged.count.per_level == pytest.approx(0.1) and averaged.p95_ms == poisson
	assert today.averaged(None, 7) == today


def same_hours_of(rng, medians, count=900) -> rules.SameHours:
	return rules.SameHours([day_of(rng, m, count) for m in medians])


def test_a_window_is_judged_against_the_same_hours_of_day_not_the_whole_day():
	rng = np.random.default_rng(31)
	# the whole baseline is mostly quiet night hours at 40 ms; every morning runs at 50 ms
	whole = baseline_of(rng.lognormal(math.log(40.0), 0.6, 30_000))
	morning = window_of(rng.lognormal(math.log(50.0), 0.6, 900))
	flat = {f.metric: f for f in rules.evaluate(whole, morning, CONFIG)}
	assert flat["duration_p50"].flagged
	mornings = same_hours_of(rng, [50.0] * 7)
	judged = {f.metric: f for f in rules.evaluate(whole, morning, CONFIG, mornings)}
	assert not any(judged[m].flagged for m in rules.DURATION_METRICS)
	assert judged["duration_p50"].before == pytest.approx(50.0, rel=0.05)
	# a real +30% that morning is still found
	slower = window_of(rng.lognormal(math.log(65.0), 0.6, 900))
	assert {f.metric: f for f in rules.evaluate(whole, slower, CONFIG, mornings)}["duration_p50"].flagged
	# too few days with those hours (a batch operation's): durations are not judged at all
	sparse = rules.SameHours([day_of(rng, 50.0, 900), Summary(), Summary()])
	assert [f.metric for f in rules.evaluate(whole, slower, CONFIG, sparse)] == ["statements", "error_rate"]


def test_a_change_within_the_day_to_day_variation_is_not_a_regression_at_any_volume():
	rng = np.random.default_rng(41)
	whole = baseline_of(rng.lognormal(math.log(50.0), 0.6, 100_000))
	# a busy operation whose same hours move +-8% from day to day (drift, deploys, contention)
	moving = same_hours_of(rng, [50.0 * f for f in (0.92, 1.0, 1.08, 0.95, 1.05, 0.9, 1.1)], count=20_000)
	window = window_of(rng.lognormal(math.log(50.0 * 1.13), 0.6, 20_000))
	found = {f.metric: f for f in rules.evaluate(whole, window, CONFIG, moving)}
	assert found["duration_p50"].change > 0.12 and not found["duration_p50"].flagged
	# the same +13% against same hours that never moved is a regression
	steady = same_hours_of(rng, [50.0] * 7, count=20_000)
	assert {f.metric: f for f in rules.evaluate(whole, window, CONFIG, steady)}["duration_p50"].flagged
	# and the pooled day-to-day spread kept in the baseline protects where the week looked steady
	whole.day_spread = {0.5: 0.06, 0.95: 0.06, 0.99: 0.06}
	assert not {f.metric: f for f in rules.evaluate(whole, window, CONFIG, steady)}["duration_p50"].flagged


def mixture(rng, count: int, median: float, slow_share: float, slow_factor: float) -> np.ndarray:
	slow = rng.random(count) < slow_share
	values = rng.lognormal(math.log(median), 0.4, count)
	values[slow] = rng.lognormal(math.log(median * slow_factor), 0.3, int(slow.sum()))
	return values


def test_a_slower_tail_alone_is_a_p95_and_p99_regression():
	rng = np.random.default_rng(51)
	mornings = rules.SameHours([summary_of(mixture(rng, 3000, 40.0, 0.08, 6.0)) for _ in range(7)])
	whole = baseline_of(mixture(rng, 30_000, 40.0, 0.08, 6.0))
	tail = window_of(mixture(rng, 3000, 40.0, 0.08, 6.0 * 1.5))
	found = {f.metric: f for f in rules.evaluate(whole, tail, CONFIG, mornings)}
	# the ranks of the whole distribution barely move, the tail's percentiles do
	assert statistics.common_language_effect(mornings.merged().bins, tail.summary.bins) < 0.53
	assert found["duration_p95"].flagged and found["duration_p99"].flagged
	assert not found["duration_p50"].flagged


def test_a_new_regression_under_an_open_record_rises_above_its_level():
	finding = rules.Finding("duration_p95", 100.0, 150.0, 0.5, True, False, 9.0, 1e-9, 1000, 100)
	assert rules.worse_than_level(finding, 110.0, CONFIG)
	assert not rules.worse_than_level(finding, 140.0, CONFIG)
	unflagged = rules.Finding("duration_p95", 100.0, 150.0, 0.5, False, False, 1.0, 0.5, 1000, 100)
	assert not rules.worse_than_level(unflagged, 110.0, CONFIG)
	statements = rules.Finding("statements", 10.0, 13.0, 0.3, True, False, 9.0, 0.0, 1000, 100)
	assert rules.worse_than_level(statements, 12.0, CONFIG)
	assert not rules.worse_than_level(statements, 12.8, CONFIG)


def test_overdispersed_counts_are_no_anomaly_at_their_dispersion_and_spikes_still_are():
	rng = np.random.default_rng(61)

	# negative-binomial counts, variance 8x the mean (mean 400)
	def hour() -> int:
		return int(rng.negative_binomial(400 / 7, 1 / 8))

	poisson_flags = overdispersed_flags = 0
	for _ in range(1500):
		history = [rules.HourFigures(hour(), 0, 0.0) for _ in range(4)]
		now = rules.HourFigures(hour(), 0, 0.0)
		poisson_flags += bool(rules.anomalies(now, history, CONFIG))
		overdispersed = rules.Dispersion(count=statistics.Overdispersion(8.0))
		overdispersed_flags += bool(rules.anomalies(now, history, CONFIG, overdispersed))
	assert poisson_flags > 10 * max(overdispersed_flags, 1) and overdispersed_flags <= 3
	history = [rules.HourFigures(hour(), 0, 0.0) for _ in range(4)]
	spike = rules.anomalies(
		rules.HourFigures(1200, 0, 0.0),
		history,
		CONFIG,
		rules.Dispersion(count=statistics.Overdispersion(8.0)),
	)
	assert [f.metric for f in spike] == ["count"]


def test_a_usually_idle_operations_bursts_and_gaps_are_no_anomaly():
	idle = [rules.HourFigures(c, 0, 0.0) for c in (0, 0, 900, 0)]
	assert rules.anomalies(rules.HourFigures(1000, 0, 0.0), idle, CONFIG) == []
	# an operation idle at this hour in one of its weeks: a zero now is not an outage
	sometimes = [rules.HourFigures(c, 0, 0.0) for c in (400, 0, 380, 420)]
	assert rules.anomalies(rules.HourFigures(0, 0, 0.0), sometimes, CONFIG) == []
	always = [rules.HourFigures(c, 0, 0.0) for c in (400, 390, 380, 420)]
	assert [f.direction for f in rules.anomalies(rules.HourFigures(0, 0, 0.0), always, CONFIG)] == ["low"]


def test_bursty_errors_are_no_error_rate_regression_and_a_sustained_rise_is():
	rng = np.random.default_rng(71)
	baseline = baseline_of(rng.lognormal(4.0, 0.6, 30_000))
	baseline.summary.error_count = 150  # 0.5%
	durations = rng.lognormal(4.0, 0.6, 3000)
	# errors in bursts: the hourly rates scattered as if each call's errors had spread 0.3
	baseline.errors = statistics.MeanSpread(0.005, 30_000, 0.3)
	found = {f.metric: f for f in rules.evaluate(baseline, window_of(durations, errors=60), CONFIG)}
	assert not found["error_rate"].flagged  # 2%: within what such bursts do
	sustained = {f.metric: f for f in rules.evaluate(baseline, window_of(durations, errors=150), CONFIG)}
	assert sustained["error_rate"].flagged
	# binomial errors (spread sqrt(p(1-p))): the first rise is a regression too
	baseline.errors = statistics.MeanSpread(0.005, 30_000, math.sqrt(0.005 * 0.995))
	assert {f.metric: f for f in rules.evaluate(baseline, window_of(durations, errors=60), CONFIG)}[
		"error_rate"
	].flagged
