"""The statistics of detection, on the stored data's own shapes (sketch bins, counts, sums). Pure Python.

- `rank_test`: the Mann-Whitney U test of "the window's durations are larger than the baseline's",
  computed from two sketches' bins: values in one bin are ties (they differ by less than the sketch's
  relative accuracy), which the tie-corrected normal approximation accounts for exactly.
- `exceedance_test`: Fisher's exact test of two proportions, one-sided (error rates, and the share of
  values above a baseline percentile).
- `mean_rise_test`: a one-sided z test of a rise of a per-call mean (statements) whose per-call spread
  is estimated from how the baseline's hourly means scatter around their mean.
- `robust_score`: the modified z-score (median and MAD) against a history, with a floor for the
  sampling noise the history cannot show (few values, or MAD = 0); counts are scored on Anscombe's
  scale (`anscombe`), where that noise is the same at every volume.
- `replicate_shift_test`: a change of a log-percentile judged against its sampling noise plus the
  variation the same hours showed from day to day beyond sampling (`excess_variance`): drift,
  deploys and busy hours make a busy operation's percentile move more than its sample size says.
- `dispersion`: how many times the sampling variance a metric's observed deviations show (1 for
  Poisson counts): real counts are overdispersed and bursty, and the noise floor scales with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from verenigingen_perf.utils.performance.sketch import StoredSketchMerger

# the MAD of a normal distribution is 0.6745 of its standard deviation (Iglewicz and Hoaglin)
MAD_TO_SD = 1.0 / 0.6745
# the mean absolute deviation of a normal distribution is sqrt(2/pi) of its standard deviation
MEAN_AD_TO_SD = math.sqrt(math.pi / 2)


def upper_tail(z: float) -> float:
	"""P(Z >= z) for a standard normal Z."""
	return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class TestResult:
	"""A one-sided test of "the window is worse than the baseline": its statistic and p-value."""

	statistic: float
	p_value: float


NO_EVIDENCE = TestResult(statistic=0.0, p_value=1.0)


def aligned_bins(first: StoredSketchMerger, second: StoredSketchMerger) -> tuple[np.ndarray, np.ndarray]:
	"""Both sketches' counts on one grid of keys, ascending, the zero bucket first."""
	grids = [m for m in (first, second) if m.bins is not None]
	if not grids:
		return np.array([first.zero_count]), np.array([second.zero_count])
	low = min(m.first_key for m in grids)
	high = max(m.first_key + len(m.bins) for m in grids)

	def counts(merger: StoredSketchMerger) -> np.ndarray:
		out = np.zeros(high - low + 1, dtype=np.float64)
		out[0] = merger.zero_count
		if merger.bins is not None:
			start = merger.first_key - low + 1
			out[start : start + len(merger.bins)] = merger.bins
		return out

	return counts(first), counts(second)


def rank_test(baseline: StoredSketchMerger, window: StoredSketchMerger) -> TestResult:
	"""Mann-Whitney U of the window against the baseline, one-sided (window larger), from the bins.

	U counts the (window, baseline) pairs in which the window's value is larger, a tie counting one
	half; under "same distribution" its mean is n_w*n_b/2 and its variance is the tie-corrected
	n_w*n_b/12 * ((N+1) - sum(t^3 - t) / (N(N-1))). The statistic returned is z; scipy's
	`mannwhitneyu(window, baseline, alternative="greater", use_continuity=False)` on the bins'
	values gives the same p-value."""
	base, win = aligned_bins(baseline, window)
	n_b, n_w = float(base.sum()), float(win.sum())
	total = n_b + n_w
	if n_b < 1 or n_w < 1 or total < 3:
		return NO_EVIDENCE
	below = np.cumsum(base) - base
	u = float(np.dot(win, below + base / 2.0))
	ties = base + win
	tie_term = float(np.dot(ties, ties * ties - 1.0)) / (total * (total - 1.0))
	variance = n_b * n_w / 12.0 * ((total + 1.0) - tie_term)
	if variance <= 0:
		return NO_EVIDENCE
	z = (u - n_b * n_w / 2.0) / math.sqrt(variance)
	return TestResult(statistic=z, p_value=upper_tail(z))


def common_language_effect(baseline: StoredSketchMerger, window: StoredSketchMerger) -> float:
	"""P(a window value > a baseline value), ties counting one half: 0.5 when nothing changed."""
	base, win = aligned_bins(baseline, window)
	pairs = float(base.sum()) * float(win.sum())
	if not pairs:
		return 0.5
	below = np.cumsum(base) - base
	return float(np.dot(win, below + base / 2.0)) / pairs


def exceedance_test(base_events: int, base_total: int, window_events: int, window_total: int) -> TestResult:
	"""Fisher's exact test, one-sided: the window's share of events (errors; values above a baseline
	percentile) is higher than the baseline's. Under "same share", given all events, the window's
	events are hypergeometric; the p-value is that distribution's upper tail at the window's events
	(scipy's `hypergeom.sf(window_events - 1, N, K, window_total)`). Exact at any count, so a quiet
	hour with three errors is judged on what three errors in it mean, not on a normal curve.
	The statistic returned is the window's share minus the baseline's."""
	if base_total <= 0 or window_total <= 0:
		return NO_EVIDENCE
	total, events = base_total + window_total, base_events + window_events
	difference = window_events / window_total - base_events / base_total
	return TestResult(
		statistic=difference, p_value=_hypergeometric_upper_tail(window_events, total, events, window_total)
	)


def _hypergeometric_upper_tail(k: int, total: int, events: int, draws: int) -> float:
	"""P(X >= k) for X ~ Hypergeometric(total, events, draws), summed term by term from k with the
	pmf's ratio recurrence (either tail, whichever is on the far side of the mean), until the terms
	no longer change the sum."""
	low, high = max(0, draws - (total - events)), min(events, draws)
	if k <= low:
		return 1.0
	if k > high:
		return 0.0

	def log_pmf(x: int) -> float:
		return _log_choose(events, x) + _log_choose(total - events, draws - x) - _log_choose(total, draws)

	def ratio_up(x: int) -> float:  # pmf(x + 1) / pmf(x)
		return (events - x) * (draws - x) / ((x + 1) * (total - events - draws + x + 1))

	mean = draws * events / total
	if k >= mean:
		term = math.exp(log_pmf(k))
		tail, x = term, k
		while x < high and term > tail * _NEGLIGIBLE:
			term *= ratio_up(x)
			x += 1
			tail += term
		return min(tail, 1.0)
	# k below the mean: one minus the lower tail P(X <= k - 1)
	term = math.exp(log_pmf(k - 1))
	lower, x = term, k - 1
	while x > low and term > lower * _NEGLIGIBLE:
		term /= ratio_up(x - 1)
		x -= 1
		lower += term
	return max(0.0, 1.0 - lower)


# a term this much smaller than the sum so far no longer changes a float's sum
_NEGLIGIBLE = 1e-17


def _log_choose(n: int, k: int) -> float:
	return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


@dataclass(frozen=True)
class MeanSpread:
	"""A per-call mean and the per-call standard deviation, estimated from hourly sums."""

	mean: float
	calls: int
	per_call_sd: float


def mean_spread(hourly_sums: Sequence[float], hourly_calls: Sequence[int]) -> MeanSpread:
	"""Hour h's mean of n_h calls has variance sd^2/n_h, so sum(n_h (m_h - m)^2) / (H - 1) estimates
	sd^2 (0 when every hour has the same mean: a deterministic code path)."""
	pairs = [(float(s), int(n)) for s, n in zip(hourly_sums, hourly_calls, strict=True) if n > 0]
	calls = sum(n for _, n in pairs)
	if not calls:
		return MeanSpread(0.0, 0, 0.0)
	mean = sum(s for s, _ in pairs) / calls
	if len(pairs) < 2:
		return MeanSpread(mean, calls, 0.0)
	scatter = sum(n * (s / n - mean) ** 2 for s, n in pairs) / (len(pairs) - 1)
	return MeanSpread(mean, calls, math.sqrt(scatter))


def mean_rise_test(baseline: MeanSpread, window_mean: float, window_calls: int) -> TestResult:
	"""z of the window's mean above the baseline's, with the baseline's per-call spread; a rise of
	a mean that never varied (spread 0) is certain."""
	if window_calls <= 0 or baseline.calls <= 0:
		return NO_EVIDENCE
	rise = window_mean - baseline.mean
	error = baseline.per_call_sd * math.sqrt(1.0 / window_calls + 1.0 / baseline.calls)
	if error <= 0:
		return TestResult(statistic=math.inf, p_value=0.0) if rise > 0 else NO_EVIDENCE
	z = rise / error
	return TestResult(statistic=z, p_value=upper_tail(z))


@dataclass(frozen=True)
class RobustScore:
	"""How far a value lies from its history, in robust standard deviations."""

	score: float
	median: float
	scale: float


def robust_score(value: float, history: Sequence[float], noise_sd: float) -> RobustScore:
	"""The modified z-score (value - median) / (1.4826 MAD), where the scale is at least `noise_sd`
	(the sampling noise of one value, which a short history's MAD can miss). With MAD = 0 the scale
	falls back to the mean absolute deviation (1.2533 x), and then to the noise floor alone; with
	every scale 0 a value equal to the median scores 0 and any other value scores infinity."""
	values = np.asarray(history, dtype=np.float64)
	if not len(values):
		raise ValueError("robust_score: the history is empty")
	median = float(np.median(values))
	deviations = np.abs(values - median)
	scale = float(np.median(deviations)) * MAD_TO_SD
	if scale == 0:
		scale = float(np.mean(deviations)) * MEAN_AD_TO_SD
	# the median of k values is itself noisy (variance pi/2 * sd^2 / k for normal values): the floor
	# is the spread of (value - median), not of the value alone
	scale = max(scale, noise_sd * math.sqrt(1.0 + math.pi / (2.0 * len(values))))
	difference = value - median
	if scale == 0:
		return RobustScore(0.0 if difference == 0 else math.copysign(math.inf, difference), median, 0.0)
	return RobustScore(difference / scale, median, scale)


# the spread of Poisson counts on Anscombe's scale, whatever their mean
ANSCOMBE_SD = 1.0


def anscombe(count: float) -> float:
	"""Anscombe's variance-stabilising transform of a Poisson count: 2 sqrt(x + 3/8)."""
	return 2.0 * math.sqrt(count + 3.0 / 8.0)


def binomial_sd(rate: float, trials: int) -> float:
	"""The spread of an observed rate of `trials` events around `rate` (for a rate of 0, the spread
	that one event in `trials` would show, so that one error in a quiet hour is not certain news)."""
	if trials <= 0:
		return 0.0
	rate = min(max(rate, 1.0 / trials), 1.0 - 1.0 / trials) if trials > 1 else 0.5
	return math.sqrt(rate * (1.0 - rate) / trials)


def quantile_log_sd(
	merger: StoredSketchMerger, q: float, count: int, minimum: float, maximum: float
) -> float:
	"""The sampling spread of log(q-quantile) of `count` values (q from 0.5 on): the larger of
	sqrt(q(1-q)/n) / pdf(z_q) * sigma for log-normal values, with sigma read from the sketch's own
	median and q-quantile (the median's: the 84th percentile; stable at any count, where neighbouring order statistics of a small hour are not),
	and half the log-width of the order statistics' interval, ranks q +- sqrt(q(1-q)/n).
	Infinite when it cannot be read (fewer than two values, or no spread)."""
	if count < 2 or not 0.5 <= q < 1:
		return math.inf
	step = math.sqrt(q * (1.0 - q) / count)
	normal = NormalDist()
	# the median's spread reads sigma one standard deviation above it
	spread_at = q if q > 0.5 else normal.cdf(1.0)
	median, upper, below, above = merger.quantiles(
		(0.5, spread_at, max(q - step, 0.0), min(q + step, 1.0)), minimum, maximum
	)
	if median <= 0 or upper <= median or below <= 0:
		return math.inf
	sigma = (math.log(upper) - math.log(median)) / normal.inv_cdf(spread_at)
	parametric = step / normal.pdf(normal.inv_cdf(q)) * sigma
	# where the values are not log-normal around the quantile (a slow tail beginning there), the
	# order statistics' own interval is the wider one
	order_statistics = (math.log(above) - math.log(below)) / 2.0
	return max(parametric, order_statistics)


def counts_above(
	baseline: StoredSketchMerger, window: StoredSketchMerger, q: float
) -> tuple[int, int, int, int]:
	"""(baseline values above, baseline values, window values above, window values), "above"
	meaning in a bin above the one holding the baseline's q-quantile."""
	base, win = aligned_bins(baseline, window)
	total = float(base.sum())
	if not total:
		return 0, 0, int(win[1:].sum() if len(win) > 1 else 0), int(win.sum())
	cumulative = np.cumsum(base)
	index = int(np.searchsorted(cumulative, q * (total - 1), side="right"))
	return int(base[index + 1 :].sum()), int(total), int(win[index + 1 :].sum()), int(win.sum())


def excess_variance(values: Sequence[float], sampling_variances: Sequence[float]) -> float:
	"""The variance of `values` (one figure of each of several replicates: the same hours on earlier
	days) beyond what their own sampling noise explains; 0 when sampling explains it all, or with
	fewer than two replicates."""
	if len(values) < 2:
		return 0.0
	observed = float(np.var(np.asarray(values, dtype=np.float64), ddof=1))
	return max(0.0, observed - float(np.mean(sampling_variances)))


def pooled_excess_variance(groups: Sequence[tuple[Sequence[float], Sequence[float]]]) -> float:
	"""`excess_variance` pooled over groups (each: one figure of several replicates and their
	sampling variances, e.g. one slot of the day on each of a week's days), each weighing its degrees
	of freedom: many groups of a few replicates estimate the variance far more steadily than one."""
	observed = sampling = freedom = 0.0
	for values, variances in groups:
		if len(values) < 2:
			continue
		degrees = len(values) - 1
		observed += float(np.var(np.asarray(values, dtype=np.float64), ddof=1)) * degrees
		sampling += float(np.mean(variances)) * degrees
		freedom += degrees
	return max(0.0, (observed - sampling) / freedom) if freedom else 0.0


def replicate_shift_test(
	shift: float, window_sd: float, reference_sd: float, excess: float, replicates: int
) -> TestResult:
	"""z of a log-percentile's `shift` (window minus reference) against the sampling noise of both
	and the day-to-day `excess` variance: the window's own day carries it whole, the reference
	(pooled over `replicates` days) a share of it."""
	variance = window_sd**2 + reference_sd**2 + excess * (1.0 + 1.0 / max(replicates, 1))
	if not math.isfinite(variance):
		return NO_EVIDENCE
	if variance <= 0:
		return TestResult(statistic=math.inf, p_value=0.0) if shift > 0 else NO_EVIDENCE
	z = shift / math.sqrt(variance)
	return TestResult(statistic=z, p_value=upper_tail(z))


@dataclass(frozen=True)
class Overdispersion:
	"""A metric's variance in units of its sampling variance, growing with its level: `base` (1 for
	Poisson counts; a constant factor where counts are negative-binomial with variance a multiple of
	the mean) plus `per_level` times the expected value (a rate that itself varies from hour to hour
	by a coefficient of variation c adds c^2 per unit of level on Anscombe's scale)."""

	base: float = 1.0
	per_level: float = 0.0

	def at(self, level: float) -> float:
		return self.base + self.per_level * max(level, 0.0)


POISSON = Overdispersion()


def dispersion(deviations: Sequence[float], levels: Sequence[float]) -> Overdispersion:
	"""The `Overdispersion` the `deviations` (each in units of its own sampling noise, at an expected
	`level`) show: the squared deviations fitted as base + per_level x level by least squares,
	weighted once by the first fit's variances (a squared deviation's spread grows with its variance),
	without the largest one (one anomalous hour should not hide the next ones; a bursty operation
	has many large deviations, not one); never below Poisson (base >= 1, per_level >= 0). Poisson
	with fewer than three deviations."""
	if len(deviations) < 3:
		return POISSON
	squares = np.square(np.asarray(deviations, dtype=np.float64))
	level = np.maximum(np.asarray(levels, dtype=np.float64), 0.0)
	keep = np.argsort(squares)[:-1]
	squares, level = squares[keep], level[keep]
	fitted = _fit(squares, level, np.ones_like(squares))
	return _fit(squares, level, 1.0 / np.square(fitted.base + fitted.per_level * level))


def _fit(squares: np.ndarray, level: np.ndarray, weights: np.ndarray) -> Overdispersion:
	total = float(weights.sum())
	mean_level = float(np.dot(weights, level)) / total
	mean_square = float(np.dot(weights, squares)) / total
	spread = float(np.dot(weights, np.square(level - mean_level)))
	slope = (
		float(np.dot(weights, (level - mean_level) * (squares - mean_square))) / spread if spread > 0 else 0.0
	)
	if slope <= 0:
		return Overdispersion(max(1.0, mean_square), 0.0)
	base = mean_square - slope * mean_level
	if base >= 1.0:
		return Overdispersion(base, slope)
	# the line crosses below Poisson at low levels: Poisson there, the slope refitted through it
	denominator = float(np.dot(weights, np.square(level)))
	slope = float(np.dot(weights, (squares - 1.0) * level)) / denominator if denominator > 0 else 0.0
	return Overdispersion(1.0, max(slope, 0.0))
