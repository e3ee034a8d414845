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
are there, with each metric's sampling noise, times the dispersion the operation showed the day
before (`Dispersion`), as the least spread.

Duration percentiles are compared with the same hours of day on the baseline's days (`SameHours`),
where there are enough of them, and judged against both sampling noise and how much the same hours
varied from day to day beyond it; a regression that starts while a record of the metric is open is
a new one when the metric rises above the record's level by the size rule (`worse_than_level`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

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
	# the errors' per-call spread from the hourly error rates' scatter (None: not known)
	errors: statistics.MeanSpread | None = None
	# per duration quantile, the spread of its log from day to day beyond sampling, pooled over the
	# slots of the day (DURATION_METRICS' quantiles; missing: none known)
	day_spread: dict[float, float] = field(default_factory=dict)

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


@dataclass
class SameHours:
	"""The window's hours of day on each of the baseline's days (one merged summary a day): what the
	window's duration percentiles are compared with, so that an hour of day that is always slower
	(more slow-path requests every morning, a busy hour's contention) is not news."""

	days: list[Summary]

	def merged(self) -> Summary:
		total = Summary()
		for day in self.days:
			total.merge(day)
		return total


def evaluate(
	baseline: Baseline, window: Window, config: DetectionConfig, same_hours: SameHours | None = None
) -> list[Finding]:
	"""Every regression metric of one operation that can be judged (none below the sample minima).
	Duration percentiles are compared with `same_hours` (judged only when at least
	`regression_min_replicates` of its days have data), or, without `same_hours` (a pinned
	baseline), with the whole baseline."""
	if baseline.summary.count < config.baseline_min_samples:
		return []
	if window.summary.count < config.regression_min_samples:
		return []
	if same_hours is None:
		durations = _durations(baseline.summary, [], window, baseline.day_spread, config)
	elif len(days := [day for day in same_hours.days if day.count]) >= config.regression_min_replicates:
		durations = _durations(SameHours(days).merged(), days, window, baseline.day_spread, config)
	else:
		# an operation seldom running at these hours (a batch operation's bursts) or too new has no
		# reference for them: the whole baseline would mix in other hours' tails
		durations = []
	return [*durations, _statements(baseline, window, config), _error_rate(baseline, window, config)]


def _durations(
	reference: Summary,
	days: list[Summary],
	window: Window,
	day_spread: dict[float, float],
	config: DetectionConfig,
) -> list[Finding]:
	"""Each duration percentile: the size rule; Fisher's test on the share of the window above the
	reference's percentile (this percentile moved: a slower tail alone moves p95 and p99, not the
	ranks of the whole distribution); for p50 also the rank test (the distribution moved); and the
	change against its sampling noise plus the day-to-day variation of the same hours beyond it
	(`_day_to_day`), which a busy operation's drift, deploys and busy hours make larger than its
	sample size says."""
	test = statistics.rank_test(reference.bins, window.summary.bins)
	quantiles = tuple(QUANTILES[column] for column in DURATION_METRICS.values())
	before = reference.quantiles(quantiles)
	after = window.summary.quantiles(quantiles)
	findings = []
	for metric, q, old, new in zip(DURATION_METRICS, quantiles, before, after, strict=True):
		change = new / old - 1 if old > 0 else (math.inf if new > 0 else 0.0)
		above = statistics.exceedance_test(*statistics.counts_above(reference.bins, window.summary.bins, q))
		shift = _day_to_day(reference, days, window.summary, q, old, new, day_spread.get(q, 0.0), config)
		tests = [above, shift] if q > QUANTILES["p50_ms"] else [test, above, shift]
		findings.append(
			Finding(
				metric=metric,
				before=old,
				after=new,
				change=change,
				flagged=_beyond_sketch_error(change) > config.regression_threshold
				and all(t.p_value < config.regression_alpha for t in tests),
				within=change <= config.regression_threshold,
				statistic=shift.statistic,
				p_value=max(t.p_value for t in tests),
				baseline_samples=reference.count,
				window_samples=window.summary.count,
			)
		)
	return findings


def _log_sd(summary: Summary, q: float) -> float:
	return statistics.quantile_log_sd(
		summary.bins, q, summary.count, summary.duration_min_ms, summary.duration_max_ms
	)


def log_quantile(summary: Summary, q: float, config: DetectionConfig) -> tuple[float, float] | None:
	"""log(q-quantile) of a replicate and its sampling variance; None below
	`regression_min_samples` values or where the spread cannot be read."""
	if summary.count < config.regression_min_samples:
		return None
	value, spread = summary.quantile(q), _log_sd(summary, q)
	if value <= 0 or not math.isfinite(spread):
		return None
	return math.log(value), spread**2


def _day_to_day(
	reference: Summary,
	days: list[Summary],
	window: Summary,
	q: float,
	old: float,
	new: float,
	pooled_spread: float,
	config: DetectionConfig,
) -> statistics.TestResult:
	"""The window's log-percentile shift against its sampling noise, the reference's, and the
	variance from day to day beyond sampling: the larger of what the same hours showed across the
	baseline's days (a few values: noisy) and what every slot of the day showed, pooled
	(`pooled_spread`, kept in the baseline: steady, but blind to a slot of the day that varies more)."""
	if old <= 0 or new <= 0:
		return statistics.NO_EVIDENCE
	replicates = [found for day in days if (found := log_quantile(day, q, config))]
	excess = statistics.excess_variance([r[0] for r in replicates], [r[1] for r in replicates])
	return statistics.replicate_shift_test(
		math.log(new) - math.log(old),
		_log_sd(window, q),
		_log_sd(reference, q),
		max(excess, pooled_spread**2),
		max(len(replicates), 1),
	)


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
	test = _errors_rose(baseline, window.summary.error_count, window.summary.count)
	rise = after - before
	if len(window.hours) > 1 and test.p_value < config.regression_alpha:
		# sustained, not one hour's burst (an anomaly's business): still significant without the
		# window's hour of most errors
		worst = max(window.hours, key=lambda hour: hour.errors)
		rest = _errors_rose(
			baseline, window.summary.error_count - worst.errors, window.summary.count - worst.calls
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


def _errors_rose(baseline: Baseline, errors: int, calls: int) -> statistics.TestResult:
	"""Fisher's exact test of the error rate's rise, and (where the baseline's hours showed how its
	errors scatter) the rise against that spread: errors that come in bursts vary more than a
	binomial count, and only the larger p-value counts."""
	test = statistics.exceedance_test(baseline.summary.error_count, baseline.summary.count, errors, calls)
	if baseline.errors is not None and baseline.errors.per_call_sd > 0 and calls > 0:
		bursty = statistics.mean_rise_test(baseline.errors, errors / calls, calls)
		test = statistics.TestResult(test.statistic, max(test.p_value, bursty.p_value))
	return test


def worse_than_level(finding: Finding, level: float, config: DetectionConfig) -> bool:
	"""A new regression under an open record: the metric is flagged and has risen, by the metric's
	size rule, above the level the record stands for (its window's value once that window lay wholly
	inside the episode). Without this, a record still open when a real regression starts hides it."""
	if not finding.flagged:
		return False
	if finding.metric in DURATION_METRICS:
		return level > 0 and _beyond_sketch_error(finding.after / level - 1) > config.regression_threshold
	if finding.metric == STATEMENTS:
		return finding.after - level >= config.regression_statements_min_rise
	return finding.after - level >= config.regression_error_rate_min_rise


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


@dataclass(frozen=True)
class Dispersion:
	"""Each anomaly metric's `statistics.Overdispersion` for an operation (Poisson: counts and
	binomial errors as noisy as sampling makes them, a p95 as noisy as its sample size): real counts
	are overdispersed and bursty, error rates vary from hour to hour, and a percentile moves with
	drift and deploys."""

	count: statistics.Overdispersion = statistics.POISSON
	error_rate: statistics.Overdispersion = statistics.POISSON
	p95_ms: statistics.Overdispersion = statistics.POISSON

	def of(self, metric: str) -> statistics.Overdispersion:
		return {COUNT: self.count, ERROR_RATE: self.error_rate, P95: self.p95_ms}[metric]

	def averaged(self, previous: Dispersion | None, days: int) -> Dispersion:
		"""One day's estimate averaged into the previous days' (each day weighing 1/`days`): a day
		holds too few hours, and a bursty operation too few bursts, to estimate it alone."""
		if previous is None:
			return self
		keep = 1.0 - 1.0 / days

		def blend(
			old: statistics.Overdispersion, new: statistics.Overdispersion
		) -> statistics.Overdispersion:
			return statistics.Overdispersion(
				keep * old.base + (1.0 - keep) * new.base, keep * old.per_level + (1.0 - keep) * new.per_level
			)

		return Dispersion(*(blend(previous.of(m), self.of(m)) for m in ANOMALY_METRICS))


@dataclass(frozen=True)
class _Measure:
	"""One anomaly metric of an hour on its scoring scale, with its history and sampling noise."""

	metric: str
	scored: float
	history: list[float]
	noise_sd: float
	# the expected value on the raw scale (requests, errors), which a rate's own variation grows with
	level: float = 0.0


def _measures(hour: HourFigures, history: Sequence[HourFigures], config: DetectionConfig) -> list[_Measure]:
	"""The metrics of `hour` that can be judged against `history`: the count where the history's
	median hour had traffic; error rate and p95 only in hours with `anomaly_min_samples` requests and
	a history of at least two such hours."""
	measures = []
	# an operation idle in most of its history hours (a batch operation's bursts, one used now and
	# then) has no usual volume for a count to depart from
	if _median([h.count for h in history]) > 0:
		# counts on Anscombe's scale, where Poisson noise has spread 1 at any volume: 3 requests
		# instead of 1 are not news, 300 instead of 100 are
		measures.append(
			_Measure(
				COUNT,
				statistics.anscombe(hour.count),
				[statistics.anscombe(h.count) for h in history],
				statistics.ANSCOMBE_SD,
				_median([h.count for h in history]),
			)
		)
	if hour.count < config.anomaly_min_samples:
		return measures
	judged = [h for h in history if h.count >= config.anomaly_min_samples]
	if len(judged) < 2:
		return measures
	# errors on Anscombe's scale too: this hour's errors against what each history hour's rate
	# would give at this hour's volume (rare errors are counts, not a normal curve)
	expected = [h.error_count / h.count * hour.count for h in judged]
	measures.append(
		_Measure(
			ERROR_RATE,
			statistics.anscombe(hour.error_count),
			[statistics.anscombe(e) for e in expected],
			statistics.ANSCOMBE_SD,
			_median(expected),
		)
	)
	timed = [h for h in judged if h.p95_ms > 0]
	# an hour whose p95 spread cannot be read (too few values in its sketch) is not judged on it
	if hour.p95_ms > 0 and math.isfinite(hour.p95_log_sd) and len(timed) >= 2:
		noise = max(hour.p95_log_sd, math.log1p(SKETCH_RATIO_ERROR))
		measures.append(_Measure(P95, math.log(hour.p95_ms), [math.log(h.p95_ms) for h in timed], noise))
	return measures


def anomalies(
	hour: HourFigures,
	history: Sequence[HourFigures],
	config: DetectionConfig,
	dispersion: Dispersion = Dispersion(),
) -> list[AnomalyFinding]:
	"""The anomalous metrics of one hour against its history (same hours of the week, or recent
	hours), each metric's sampling noise scaled by the operation's `dispersion`. Counts are judged
	upwards where the history's median hour holds `anomaly_min_samples` requests, and downwards only
	to zero (an outage); error rate and p95 upwards, and only in hours with `anomaly_min_samples`
	requests and a history of such hours."""
	if not history:
		return []
	found = []
	for measure in _measures(hour, history, config):
		noise = measure.noise_sd * math.sqrt(dispersion.of(measure.metric).at(measure.level))
		score = statistics.robust_score(measure.scored, measure.history, noise)
		if measure.metric == COUNT:
			# a spike either way is scored, but a drop is flagged only to zero, and only where every
			# history hour had traffic: traffic that stops is an outage, traffic that thins is a
			# quieter hour more often than not, and an hour without traffic is news only where the
			# operation has never been idle at that hour
			stopped = hour.count == 0 and all(h.count for h in history)
			# a spike is judged where the usual hour holds `anomaly_min_samples` requests: below it, a
			# burst of a few requests is how a quiet operation behaves
			usual = _median([h.count for h in history]) >= config.anomaly_min_samples
			if (score.score > config.anomaly_z and usual) or (score.score < -config.anomaly_z and stopped):
				expected = float(_median([h.count for h in history]))
				direction = "high" if score.score > 0 else "low"
				found.append(AnomalyFinding(COUNT, hour.count, expected, score.score, direction))
		elif score.score > config.anomaly_z:
			if measure.metric == ERROR_RATE:
				rates = [h.error_count / h.count for h in history if h.count >= config.anomaly_min_samples]
				value, expected = hour.error_count / hour.count, float(_median(rates))
			else:
				value, expected = hour.p95_ms, math.exp(score.median)
			found.append(AnomalyFinding(measure.metric, value, expected, score.score, "high"))
	return found


def anomaly_deviations(
	hour: HourFigures, history: Sequence[HourFigures], config: DetectionConfig
) -> dict[str, tuple[float, float]]:
	"""Each judged metric's distance from its history's median in units of the sampling noise of
	that distance (the hour's own, inflated for the median's: what `anomalies` floors its scale at),
	with the metric's expected level, for `statistics.dispersion` to estimate an operation's
	dispersion from."""
	deviations = {}
	for measure in _measures(hour, history, config):
		noise = measure.noise_sd * math.sqrt(1.0 + math.pi / (2.0 * len(measure.history)))
		if noise > 0:
			deviations[measure.metric] = ((measure.scored - _median(measure.history)) / noise, measure.level)
	return deviations


def _median(values: Sequence[float]) -> float:
	ordered = sorted(values)
	middle = len(ordered) // 2
	return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
