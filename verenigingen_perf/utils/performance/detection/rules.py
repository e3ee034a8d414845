"""What counts as a regression and as an anomaly: the decisions, on figures already read. Pure Python.

A regression compares an operation's evaluation window (the last `regression_window_hours`) with its
baseline; every metric must pass both a size rule (a change a person would care about, larger than
what the sketches can resolve) and a significance test at `regression_alpha` (not noise):

- duration p50/p95/p99: a relative change above `regression_threshold` even after the sketches'
  error bound is taken off it, the rank test on the two duration distributions, and Fisher's exact
  test on the share of the window above the baseline's percentile (this percentile moved);
- statements per call: a rise of at least `regression_statements_min_rise`, in every hour of the
  window (sustained), and significant against the per-call spread the baseline showed;
- error rate: a rise of at least `regression_error_rate_min_rise`, and the two-proportion test
  (Fisher's exact), also without the window's worst hour (a one-hour burst is an anomaly).

An anomaly is one hour's count, error rate or p95 far (modified z-score above `anomaly_z`) from the
same hour of the week in the last `anomaly_weeks` weeks, or from the recent hours when fewer weeks
are there, with each metric's sampling noise as the least spread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from verenigingen_perf.utils.performance.config import DetectionConfig
from verenigingen_perf.utils.performance.detection import statistics
from verenigingen_perf.utils.performance.sketch import QUANTILES, RELATIVE_ACCURACY, Summary

# the regression metrics, in the order they are evaluated
DURATION_METRICS = {"duration_p50": "p50_ms", "duration_p95": "p95_ms", "duration_p99": "p99_ms"}
STATEMENTS, ERROR_RATE = "statements", "error_rate"
REGRESSION_METRICS = (*DURATION_METRICS, STATEMENTS, ERROR_RATE)
# the anomaly metrics
COUNT, P95 = "count", "p95_ms"
ANOMALY_METRICS = (COUNT, ERROR_RATE, P95)
# two percentiles each read within RELATIVE_ACCURACY: their ratio is known to within this
SKETCH_RATIO_ERROR = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY) - 1


@dataclass
class Baseline:
	"""An operation's reference figures: its merged summary and the spread of its statements."""

	summary: Summary
	statements: statistics.MeanSpread

	@property
	def error_rate(self) -> float:
		return self.summary.error_count / self.summary.count if self.summary.count else 0.0


@dataclass(frozen=True)
class HourTotals:
	calls: int
	statements: int
	errors: int


@dataclass
class Window:
	"""The evaluated hours of an operation: merged, and each hour's totals."""

	summary: Summary
	hours: list[HourTotals]


@dataclass(frozen=True)
class Finding:
	"""One metric's comparison. `flagged`: a regression; `within`: back within the size rule (what
	resolving a regression waits for). `change` is relative, except for the error rate (absolute)."""

	metric: str
	before: float
	after: float
	change: float
	flagged: bool
	within: bool
	statistic: float
	p_value: float
	baseline_samples: int
	window_samples: int


def evaluate(baseline: Baseline, window: Window, config: DetectionConfig) -> list[Finding]:
	"""Every regression metric of one operation that can be judged (none below the sample minima)."""
	if baseline.summary.count < config.baseline_min_samples:
		return []
	if window.summary.count < config.regression_min_samples:
		return []
	return [
		*_durations(baseline, window, config),
		_statements(baseline, window, config),
		_error_rate(baseline, window, config),
	]


def _durations(baseline: Baseline, window: Window, config: DetectionConfig) -> list[Finding]:
	test = statistics.rank_test(baseline.summary.bins, window.summary.bins)
	quantiles = tuple(QUANTILES[column] for column in DURATION_METRICS.values())
	before = baseline.summary.quantiles(quantiles)
	after = window.summary.quantiles(quantiles)
	findings = []
	for metric, q, old, new in zip(DURATION_METRICS, quantiles, before, after, strict=True):
		change = new / old - 1 if old > 0 else (math.inf if new > 0 else 0.0)
		# this percentile moved, not only the distribution: more of the window lies above the
		# baseline's percentile than of the baseline
		above = statistics.exceedance_test(
			*statistics.counts_above(baseline.summary.bins, window.summary.bins, q)
		)
		findings.append(
			Finding(
				metric=metric,
				before=old,
				after=new,
				change=change,
				flagged=_beyond_sketch_error(change) > config.regression_threshold
				and test.p_value < config.regression_alpha
				and above.p_value < config.regression_alpha,
				within=change <= config.regression_threshold,
				statistic=test.statistic,
				p_value=max(test.p_value, above.p_value),
				baseline_samples=baseline.summary.count,
				window_samples=window.summary.count,
			)
		)
	return findings


def _beyond_sketch_error(change: float) -> float:
	"""The least change two sketch percentiles `change` apart can stand for."""
	return (1 + change) / (1 + SKETCH_RATIO_ERROR) - 1


def _statements(baseline: Baseline, window: Window, config: DetectionConfig) -> Finding:
	before = baseline.statements.mean
	after = window.summary.query_sum / window.summary.count
	rise = after - before
	test = statistics.mean_rise_test(baseline.statements, after, window.summary.count)
	sustained = all(hour.statements / hour.calls > before for hour in window.hours if hour.calls)
	return Finding(
		metric=STATEMENTS,
		before=before,
		after=after,
		change=rise / before if before > 0 else (math.inf if rise > 0 else 0.0),
		flagged=rise >= config.regression_statements_min_rise
		and sustained
		and test.p_value < config.regression_alpha,
		within=rise < config.regression_statements_min_rise,
		statistic=test.statistic,
		p_value=test.p_value,
		baseline_samples=baseline.summary.count,
		window_samples=window.summary.count,
	)


def _error_rate(baseline: Baseline, window: Window, config: DetectionConfig) -> Finding:
	before = baseline.error_rate
	after = window.summary.error_count / window.summary.count
	base = (baseline.summary.error_count, baseline.summary.count)
	test = statistics.exceedance_test(*base, window.summary.error_count, window.summary.count)
	rise = after - before
	if len(window.hours) > 1 and test.p_value < config.regression_alpha:
		# sustained, not one hour's burst (an anomaly's business): still significant without the
		# window's hour of most errors
		worst = max(window.hours, key=lambda hour: hour.errors)
		rest = statistics.exceedance_test(
			*base, window.summary.error_count - worst.errors, window.summary.count - worst.calls
		)
		test = statistics.TestResult(test.statistic, max(test.p_value, rest.p_value))
	return Finding(
		metric=ERROR_RATE,
		before=before,
		after=after,
		change=rise,
		flagged=rise >= config.regression_error_rate_min_rise and test.p_value < config.regression_alpha,
		within=rise < config.regression_error_rate_min_rise,
		statistic=test.statistic,
		p_value=test.p_value,
		baseline_samples=baseline.summary.count,
		window_samples=window.summary.count,
	)


# --- anomalies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HourFigures:
	"""An operation's figures of one hour, as the anomaly detector reads them."""

	count: int
	error_count: int
	p95_ms: float
	# the sampling spread of log(p95) of this hour (from its sketch); infinite when unknown
	p95_log_sd: float = math.inf


@dataclass(frozen=True)
class AnomalyFinding:
	metric: str
	value: float
	expected: float
	score: float
	direction: str


def anomalies(
	hour: HourFigures, history: Sequence[HourFigures], config: DetectionConfig
) -> list[AnomalyFinding]:
	"""The anomalous metrics of one hour against its history (same hours of the week, or recent
	hours). Counts are judged upwards, and downwards only to zero (an outage); error rate and p95 upwards,
	and only in hours with `anomaly_min_samples` requests and a history of such hours."""
	if not history:
		return []
	found = []
	# counts on Anscombe's scale, where Poisson noise has spread 1 at any volume: 3 requests instead
	# of 1 are not news, 300 instead of 100 are
	transformed = [statistics.anscombe(h.count) for h in history]
	score = statistics.robust_score(statistics.anscombe(hour.count), transformed, statistics.ANSCOMBE_SD)
	# a spike either way is scored, but a drop is flagged only to zero: traffic that stops is an
	# outage, traffic that thins is a quieter hour more often than not
	if score.score > config.anomaly_z or (score.score < -config.anomaly_z and hour.count == 0):
		expected = float(_median([h.count for h in history]))
		direction = "high" if score.score > 0 else "low"
		found.append(AnomalyFinding(COUNT, hour.count, expected, score.score, direction))
	if hour.count < config.anomaly_min_samples:
		return found
	judged = [h for h in history if h.count >= config.anomaly_min_samples]
	if len(judged) < 2:
		return found
	# errors on Anscombe's scale too: this hour's errors against what each history hour's rate
	# would give at this hour's volume (rare errors are counts, not a normal curve)
	rates = [h.error_count / h.count for h in judged]
	expected = [statistics.anscombe(r * hour.count) for r in rates]
	score = statistics.robust_score(statistics.anscombe(hour.error_count), expected, statistics.ANSCOMBE_SD)
	if score.score > config.anomaly_z:
		rate = hour.error_count / hour.count
		found.append(AnomalyFinding(ERROR_RATE, rate, float(_median(rates)), score.score, "high"))
	timed = [h for h in judged if h.p95_ms > 0]
	# an hour whose p95 spread cannot be read (too few values in its sketch) is not judged on it
	if hour.p95_ms > 0 and math.isfinite(hour.p95_log_sd) and len(timed) >= 2:
		logs = [math.log(h.p95_ms) for h in timed]
		noise = max(hour.p95_log_sd, math.log1p(SKETCH_RATIO_ERROR))
		score = statistics.robust_score(math.log(hour.p95_ms), logs, noise)
		if score.score > config.anomaly_z:
			found.append(AnomalyFinding(P95, hour.p95_ms, math.exp(score.median), score.score, "high"))
	return found


def _median(values: Sequence[float]) -> float:
	ordered = sorted(values)
	middle = len(ordered) // 2
	return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
