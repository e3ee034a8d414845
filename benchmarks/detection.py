"""Detection benchmark: are the regression and anomaly detectors right on data shaped like a site's,
including data that does not share the detectors' own assumptions?

For each seed (`--seeds`, comma-separated), generates `--days` days of hourly aggregates with real
sketches for `--operations` operations, stores them as the rollup would, plants regressions,
statement rises and anomalies in the last `--evaluate-days` (14) days, and runs the detection job
hour by hour over those days as the scheduler would (`detection.job.run_detection(now=...)`). It
then scores what the job recorded against what was planted, and scores the naive rule of the
replaced system (p95 above the baseline by 5%, no significance) on the same data and baselines.
Each seed's figures are printed on a line of their own; the last line is one JSON object with the
figures pooled over the seeds. Unless told otherwise (`RUN_DEFAULTS`), `--generator simple` runs one
seed (42) of 500 operations over 90 days, and `--generator hard` five seeds (101 to 105: the
defaults were chosen on seeds 1 and 2) of 250 operations over 60 days with 90 whole and 30 tail
regressions, enough for at least 60 planted regressions of each size on busy operations.

Two generators (`--generator`):

- `simple`: the data the detectors were first designed on. Each operation's mean volume is
  log-uniform from 5 to 5,000 requests an hour, with a daily cycle (quiet nights) and a weekly one
  (quiet weekends), Poisson counts; durations are a log-normal body with a 3% slow tail (5x the
  median), fixed for the whole run, every hour scaled by a small random factor (2% spread) and a
  load effect; statements per call are a fixed path plus extra statements on a 5% cache-miss branch;
  error rates from 0.01% to 1%, binomial. Each hour's sketch is the multinomial draw of its count
  over the sketch's bins.
- `hard`: what real sites do and the detectors do not assume. Counts are negative-binomial with a
  variance 3 to 10 times the mean (per operation); 15% of the operations are batch operations whose
  requests come in bursts (a quarter of the hours hold all of an hour's traffic, the others none).
  Each operation's median follows a slow random walk (0.3% to 1% a day) and moves by a small real
  change at each weekly deploy (Tuesday 10:00; normal, mean +0.5%, spread 2%, within +-4%), which
  must not alert. The share of slow-path requests (5x to 10x the median, 1.5% to 4% of requests)
  rises by 1x to 3x every morning (peak at 08:30): tails change with the hour. Busy hours are slower
  by a per-operation load effect (up to 4% at the daily peak), and every hour by a 2% random factor.
  Error counts are binomial with an hour-to-hour spread of the rate (log-normal, 0.7). Durations are
  drawn one by one and counted into the sketch's keys. The site-wide rows "(all operations)" are
  stored as the rollup stores them (every operation's hour merged), so their p95 moves with the
  traffic mix.

Planted, in the evaluated days: regressions (`simple`: durations x1.10, x1.20 or x1.50; `hard`:
x1.20, x1.50 or x2.00 of every duration, or of the slow path only: "tail" regressions, `--tail-
regressions` of them), from a random hour on; statement rises (+1, +2 or +5 per call); count spikes
(x3 for one hour) and error bursts (25% of one hour's requests), the anomalies only in hours
expecting at least `--anomaly-min-expected` requests and only on operations that are not batch
operations. Regressions are planted on operations of at least 200 requests an hour (mean) for two
thirds of them (`--busy-share`), on any operation for the rest.

Scoring: a regression is found when the job opens a record for its operation and a duration metric
(statement rises: the statements metric) within `--detection-hours` (6) hours of its start; recall
counts regressions of operations expecting at least 200 requests an hour on average over those
hours ("busy"; `*_by_mean_volume` counts by the daily mean volume instead), pooled over the seeds,
with its Clopper-Pearson 95% interval. A false alarm is a regression record opened on an operation
and metric where nothing was planted (or before the planted change started), per 1,000
operation-hours free of any planted change (the hours of an operation after its regression or
statement rise starts are left out of the denominator); records of the site-wide rows are counted
apart (explained while at least 5% of the site's requests run a planted whole regression, else
false). The naive rule gets the same episode handling as the detector: an alarm when its condition
starts to hold and no alarm of that operation is open, closed once the condition has not held for
`regression_resolve_hours` hours. Anomaly recall counts planted anomalies recorded in their hour
(count spikes as `count`, bursts as `error_rate`). The anomaly records of an operation whose
planted regression is under way are reported apart, as anomaly records per planted regression;
so are the site-wide rows' (unexplained: no planted anomaly of that kind in that hour); anomaly
precision is the share of the other records at a planted anomaly's operation and hour.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from ddsketch.mapping import LogarithmicMapping

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import connect_site
from verenigingen_perf.utils.performance.sketch import RELATIVE_ACCURACY, StoredSketchMerger, Summary

HOUR = timedelta(hours=1)
MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
# keys from 0.05 ms to 10 minutes cover every duration drawn
LOW_KEY, HIGH_KEY = MAPPING.key(0.05), MAPPING.key(600_000.0)
KEY_VALUES = np.array([MAPPING.value(k) for k in range(LOW_KEY, HIGH_KEY + 1)])
LOG_GAMMA = math.log((1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY))
STATEMENT_RISES = (1, 2, 5)
HIGH_VOLUME = 200
SITE_WIDE = "(all operations)"
OPERATION_TYPE = "api"
# the share of the site's requests under a planted whole regression that explains a site-wide record
SITE_WIDE_EXPLAINED_SHARE = 0.05


def _normal_cdf(x: np.ndarray) -> np.ndarray:
	return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def seasonality(at: datetime) -> float:
	"""Traffic relative to the operation's mean: quiet nights, busy office hours, quiet weekends."""
	daily = 0.25 + 1.5 * math.exp(-(((at.hour + 0.5 - 13.0) / 4.0) ** 2))
	weekly = 0.45 if at.weekday() >= 5 else 1.0
	return daily * weekly


@dataclass
class Regression:
	start: datetime
	factor: float
	# "whole": every duration; "tail": the slow path's durations only
	kind: str = "whole"


@dataclass
class Plan:
	"""What was planted, for scoring."""

	regressions: dict[str, Regression] = field(default_factory=dict)
	statement_rises: dict[str, tuple[datetime, int]] = field(default_factory=dict)
	# (operation, hour) -> "count" or "error_rate"
	anomalies: dict[tuple[str, datetime], str] = field(default_factory=dict)


@dataclass
class Operation:
	name: str
	volume: float
	median_ms: float
	sigma: float
	statements: int
	miss_statements: int
	error_rate: float
	batch: bool = False
	probabilities: np.ndarray | None = field(default=None, repr=False)


def _choose_regressed(
	ops: list[Operation], count: int, busy_share: float, rng: np.random.Generator, taken: set[int]
) -> list[int]:
	"""`count` operations not taken yet, `busy_share` of them busy ones (mean volume >= HIGH_VOLUME)."""
	free = [i for i in rng.permutation(len(ops)) if i not in taken and not ops[i].batch]
	busy = [i for i in free if ops[i].volume >= HIGH_VOLUME]
	wanted_busy = min(round(count * busy_share), len(busy))
	chosen = busy[:wanted_busy]
	rest = [i for i in free if i not in set(chosen)]
	chosen += rest[: count - len(chosen)]
	taken.update(chosen)
	return chosen


def plant(
	ops: list[Operation],
	eval_start: datetime,
	end: datetime,
	rng: np.random.Generator,
	args,
	factors: tuple[float, ...],
) -> Plan:
	plan = Plan()
	hours = int((end - eval_start) / HOUR)
	taken: set[int] = set()
	latest = hours - args.detection_hours

	def start() -> datetime:
		return eval_start + HOUR * int(rng.integers(0, latest))

	for i, index in enumerate(_choose_regressed(ops, args.regressions, args.busy_share, rng, taken)):
		plan.regressions[ops[index].name] = Regression(start(), factors[i % len(factors)], "whole")
	for i, index in enumerate(_choose_regressed(ops, args.tail_regressions, args.busy_share, rng, taken)):
		plan.regressions[ops[index].name] = Regression(start(), factors[i % len(factors)], "tail")
	for i, index in enumerate(_choose_regressed(ops, args.statement_rises, 0.0, rng, taken)):
		plan.statement_rises[ops[index].name] = (start(), STATEMENT_RISES[i % len(STATEMENT_RISES)])
	kinds = ("count", "error_rate")
	candidates = [op for op in ops if not op.batch]
	while len(plan.anomalies) < args.anomalies:
		op = candidates[int(rng.integers(len(candidates)))]
		at = eval_start + HOUR * int(rng.integers(0, hours))
		if op.volume * seasonality(at) >= args.anomaly_min_expected:
			plan.anomalies.setdefault((op.name, at), kinds[len(plan.anomalies) % 2])
	return plan


def _bins_of(counts: np.ndarray, low: int) -> StoredSketchMerger:
	bins = StoredSketchMerger()
	bins.add((0, LOW_KEY + low, counts.astype(np.int64)))
	return bins


# --- the simple generator ----------------------------------------------------------------------------


def simple_bin_probabilities(median_ms: float, sigma: float) -> np.ndarray:
	"""P(a duration falls in each key's bin): 97% log-normal body, 3% tail at 5x the median."""
	edges = np.sqrt(KEY_VALUES[:-1] * KEY_VALUES[1:])
	logs = np.log(edges)
	cdf = 0.97 * _normal_cdf((logs - math.log(median_ms)) / sigma) + 0.03 * _normal_cdf(
		(logs - math.log(5 * median_ms)) / sigma
	)
	cdf = np.concatenate(([0.0], cdf, [1.0]))
	return np.diff(cdf)


class SimpleTraffic:
	"""Poisson counts, fixed duration distributions with 2% hour jitter (the detectors' assumptions)."""

	factors = (1.10, 1.20, 1.50)

	def __init__(self, args, rng: np.random.Generator, start: datetime, eval_start: datetime, end: datetime):
		self.rng = rng
		self.ops = []
		for i in range(args.operations):
			median_ms = float(np.exp(rng.uniform(math.log(5), math.log(500))))
			sigma = float(rng.uniform(0.4, 1.0))
			self.ops.append(
				Operation(
					name=f"/api/method/bench.detection.op_{i:03d}",
					volume=float(np.exp(rng.uniform(math.log(5), math.log(5000)))),
					median_ms=median_ms,
					sigma=sigma,
					statements=int(rng.integers(3, 60)),
					miss_statements=int(rng.integers(1, 6)),
					error_rate=float(np.exp(rng.uniform(math.log(1e-4), math.log(1e-2)))),
					probabilities=simple_bin_probabilities(median_ms, sigma),
				)
			)
		self.plan = plant(self.ops, eval_start, end, rng, args, self.factors)

	def expected_volume(self, op: Operation, at: datetime) -> float:
		return op.volume * seasonality(at)

	def hour_rows(self, at: datetime) -> list[tuple[str, dict]]:
		rows = []
		for op in self.ops:
			values = self._hour_values(op, at)
			if values is not None:
				rows.append((op.name, values))
		return rows

	def _hour_values(self, op: Operation, at: datetime) -> dict | None:
		rng, plan = self.rng, self.plan
		season = seasonality(at)
		anomaly = plan.anomalies.get((op.name, at))
		count = int(rng.poisson(op.volume * season * (3 if anomaly == "count" else 1)))
		if not count:
			return None
		scale = float(rng.normal(0.0, 0.02)) + 0.02 * (season - 1.0)
		regression = plan.regressions.get(op.name)
		if regression and at >= regression.start:
			scale += math.log(regression.factor)
		shift = round(scale / LOG_GAMMA)
		counts = rng.multinomial(count, op.probabilities)
		nonzero = np.flatnonzero(counts)
		low, high = int(nonzero[0]), int(nonzero[-1])
		bins = StoredSketchMerger()
		bins.add((0, LOW_KEY + low + shift, counts[low : high + 1].astype(np.int64)))
		values_ms = KEY_VALUES[low : high + 1] * math.exp(shift * LOG_GAMMA)
		duration_sum = float(np.dot(counts[low : high + 1], values_ms))
		misses = int(rng.binomial(count, 0.05))
		rise = plan.statement_rises.get(op.name)
		extra = rise[1] if rise and at >= rise[0] else 0
		error_rate = 0.25 if anomaly == "error_rate" else op.error_rate
		summary = Summary(
			count=count,
			error_count=int(rng.binomial(count, error_rate)),
			duration_min_ms=float(values_ms[0]),
			duration_max_ms=float(values_ms[-1]),
			duration_sum_ms=duration_sum,
			query_sum=count * (op.statements + extra) + misses * op.miss_statements,
			query_max=op.statements + extra + (op.miss_statements if misses else 0),
			db_time_sum_ms=0.3 * duration_sum,
			bins=bins,
		)
		return summary.as_values()


# --- the hard generator ------------------------------------------------------------------------------

# Tuesday 10:00: the weekly deploy
DEPLOY_WEEKDAY, DEPLOY_HOUR = 1, 10


@dataclass
class HardOperation(Operation):
	dispersion: float = 1.0
	slow_share: float = 0.03
	slow_peak: float = 1.0
	slow_factor: float = 5.0
	load_effect: float = 0.0
	# log of the median's level in each hour of the run: the random walk and the deploys' changes
	log_level: np.ndarray | None = field(default=None, repr=False)


class HardTraffic:
	"""Overdispersed, bursty counts; drifting medians; deploys' small real changes; tails that change
	with the hour; a load effect; the site-wide rows (see the module's docstring)."""

	factors = (1.20, 1.50, 2.00)
	# a quarter of a batch operation's hours hold its traffic
	batch_active_share = 0.25

	def __init__(self, args, rng: np.random.Generator, start: datetime, eval_start: datetime, end: datetime):
		self.rng, self.start = rng, start
		hours = int((end - start) / HOUR)
		deploys = np.array(
			[
				(start + HOUR * h).weekday() == DEPLOY_WEEKDAY and (start + HOUR * h).hour == DEPLOY_HOUR
				for h in range(hours)
			]
		)
		self.ops = []
		for i in range(args.operations):
			median_ms = float(np.exp(rng.uniform(math.log(5), math.log(500))))
			daily_drift = float(rng.uniform(0.003, 0.01))
			walk = np.cumsum(rng.normal(0.0, daily_drift / math.sqrt(24), hours))
			changes = np.clip(rng.normal(0.005, 0.02, hours), -0.04, 0.04) * deploys
			self.ops.append(
				HardOperation(
					name=f"/api/method/bench.detection.op_{i:03d}",
					volume=float(np.exp(rng.uniform(math.log(5), math.log(5000)))),
					median_ms=median_ms,
					sigma=float(rng.uniform(0.4, 1.0)),
					statements=int(rng.integers(3, 60)),
					miss_statements=int(rng.integers(1, 6)),
					error_rate=float(np.exp(rng.uniform(math.log(1e-4), math.log(1e-2)))),
					batch=bool(rng.random() < 0.15),
					dispersion=float(rng.uniform(3.0, 10.0)),
					slow_share=float(rng.uniform(0.015, 0.04)),
					slow_peak=float(rng.uniform(1.0, 3.0)),
					slow_factor=float(rng.uniform(5.0, 10.0)),
					load_effect=float(rng.uniform(0.0, 0.04)),
					log_level=walk + np.cumsum(changes),
				)
			)
		self.plan = plant(self.ops, eval_start, end, rng, args, self.factors)
		self.log_edges = np.log(np.sqrt(KEY_VALUES[:-1] * KEY_VALUES[1:]))

	def expected_volume(self, op: Operation, at: datetime) -> float:
		return op.volume * seasonality(at)

	def _count(self, op: HardOperation, at: datetime, multiplier: float) -> int:
		mean = op.volume * seasonality(at) * multiplier
		if op.batch:
			if self.rng.random() >= self.batch_active_share:
				return 0
			mean /= self.batch_active_share
		if mean <= 0:
			return 0
		# negative binomial with variance dispersion x mean
		return int(self.rng.negative_binomial(mean / (op.dispersion - 1.0), 1.0 / op.dispersion))

	def hour_rows(self, at: datetime) -> list[tuple[str, dict]]:
		rows = []
		site = np.zeros(len(KEY_VALUES), dtype=np.int64)
		site_summary = Summary()
		for op in self.ops:
			summary = self._hour_summary(op, at, site)
			if summary is not None:
				rows.append((op.name, summary.as_values()))
				site_summary.merge(summary)
		if site_summary.count:
			rows.append((SITE_WIDE, site_summary.as_values()))
		return rows

	def _hour_summary(self, op: HardOperation, at: datetime, site: np.ndarray) -> Summary | None:
		rng, plan = self.rng, self.plan
		anomaly = plan.anomalies.get((op.name, at))
		count = self._count(op, at, 3.0 if anomaly == "count" else 1.0)
		if not count:
			return None
		season = seasonality(at)
		index = int((at - self.start) / HOUR)
		log_median = (
			math.log(op.median_ms)
			+ float(op.log_level[index])
			+ math.log1p(op.load_effect * max(season - 1.0, 0.0) / 0.75)
			+ float(rng.normal(0.0, 0.02))
		)
		share = op.slow_share * (1.0 + (op.slow_peak - 1.0) * math.exp(-(((at.hour + 0.5 - 8.5) / 1.5) ** 2)))
		slow = int(rng.binomial(count, min(share, 0.5)))
		log_slow = log_median + math.log(op.slow_factor)
		regression = plan.regressions.get(op.name)
		if regression and at >= regression.start:
			log_slow += math.log(regression.factor)
			if regression.kind == "whole":
				log_median += math.log(regression.factor)
		durations = np.concatenate(
			(rng.normal(log_median, op.sigma, count - slow), rng.normal(log_slow, op.sigma * 0.6, slow))
		)
		keys = np.clip(np.searchsorted(self.log_edges, durations), 0, len(KEY_VALUES) - 1)
		counts = np.bincount(keys, minlength=len(KEY_VALUES))
		nonzero = np.flatnonzero(counts)
		low, high = int(nonzero[0]), int(nonzero[-1])
		values_ms = np.exp(durations)
		duration_sum = float(values_ms.sum())
		misses = int(rng.binomial(count, 0.05))
		rise = plan.statement_rises.get(op.name)
		extra = rise[1] if rise and at >= rise[0] else 0
		rate = 0.25 if anomaly == "error_rate" else min(op.error_rate * float(rng.lognormal(0.0, 0.7)), 1.0)
		return Summary(
			count=count,
			error_count=int(rng.binomial(count, rate)),
			duration_min_ms=float(KEY_VALUES[low]),
			duration_max_ms=float(KEY_VALUES[high]),
			duration_sum_ms=duration_sum,
			query_sum=count * (op.statements + extra) + misses * op.miss_statements,
			query_max=op.statements + extra + (op.miss_statements if misses else 0),
			db_time_sum_ms=0.3 * duration_sum,
			bins=_bins_of(counts[low : high + 1], low),
		)


GENERATORS = {"simple": SimpleTraffic, "hard": HardTraffic}


# --- the run on a site ------------------------------------------------------------------------------


def wipe() -> None:
	import frappe

	from verenigingen_perf.utils.performance import rollup
	from verenigingen_perf.utils.performance.schema import (
		AGGREGATE,
		ANOMALY,
		BASELINE,
		REGRESSION,
		ROLLUP_STATE,
	)

	for doctype in (AGGREGATE, BASELINE, REGRESSION, ANOMALY):
		frappe.db.delete(doctype)
	frappe.db.sql(
		"update `tabSingles` set value=NULL where doctype=%s and field in ('watermark', 'detected_until')",
		(ROLLUP_STATE,),
	)
	rollup.ensure_state_row()
	frappe.db.commit()


def store(traffic, start: datetime, hours: int) -> int:
	"""Every operation's hourly rows, inserted a day at a time as the rollup would have left them."""
	import frappe

	from verenigingen_perf.utils.performance import rollup
	from verenigingen_perf.utils.performance.schema import AGGREGATE

	columns = ("name", *rollup.AGGREGATE_COLUMNS, "creation", "modified", "owner", "modified_by")
	stored = 0
	for day in range(0, hours, 24):
		values = []
		for h in range(day, min(day + 24, hours)):
			at = start + HOUR * h
			for operation, row in traffic.hour_rows(at):
				row.update(
					operation=operation, operation_type=OPERATION_TYPE, granularity="hour", period_start=at
				)
				name = rollup.aggregate_name("hour", at, OPERATION_TYPE, operation)
				values.append(
					(
						name,
						*(row[c] for c in rollup.AGGREGATE_COLUMNS),
						at,
						at,
						"Administrator",
						"Administrator",
					)
				)
		frappe.db.bulk_insert(AGGREGATE, columns, values, chunk_size=5000)
		frappe.db.commit()
		stored += len(values)
	return stored


def detected() -> tuple[dict[tuple[str, str], list[datetime]], list[tuple[str, datetime, str]]]:
	"""The regression records opened (per operation and metric: first detections) and the anomalies."""
	import frappe

	from verenigingen_perf.utils.performance.schema import ANOMALY, REGRESSION

	opened: dict[tuple[str, str], list[datetime]] = defaultdict(list)
	for r in frappe.get_all(
		REGRESSION, fields=["operation", "metric", "first_detected"], order_by="first_detected"
	):
		opened[(r["operation"], r["metric"])].append(r["first_detected"])
	anomalies = [
		(r["operation"], r["period_start"], r["metric"])
		for r in frappe.get_all(ANOMALY, fields=["operation", "period_start", "metric"])
	]
	return opened, anomalies


def naive_alarms(
	eval_hours: list[datetime], threshold: float, window_hours: int
) -> dict[str, list[datetime]]:
	"""The replaced system's rule on the same rows and the same rolling baselines' periods: the
	window's p95 above the baseline's p95 by `threshold`, no significance. Episodes as the detector
	keeps them: an alarm when the condition holds and none of the operation's is open; it closes once
	the condition has not held for `regression_resolve_hours` hours in a row."""
	from verenigingen_perf.utils.performance.config import get_config
	from verenigingen_perf.utils.performance.detection import baselines

	config = get_config().detection
	alarms: dict[str, list[datetime]] = defaultdict(list)
	open_since_clear: dict[str, int] = {}
	reference: dict[str, float] = {}
	reference_day = None
	for hour in eval_hours:
		start, end = baselines.rolling_period(hour, config)
		if reference_day != end:
			merged = baselines.merge_period(start, end)
			reference = {
				key[1]: acc.summary.quantile(0.95)
				for key, acc in merged.items()
				if acc.summary.count >= config.baseline_min_samples
			}
			reference_day = end
		windows = baselines.merge_period(hour - HOUR * (window_hours - 1), hour + HOUR)
		for (_type, name), acc in windows.items():
			if name not in reference or not acc.summary.count:
				continue
			holds = acc.summary.quantile(0.95) > reference[name] * (1 + threshold)
			if name not in open_since_clear:
				if holds:
					alarms[name].append(hour)
					open_since_clear[name] = 0
				continue
			open_since_clear[name] = 0 if holds else open_since_clear[name] + 1
			if open_since_clear[name] >= config.regression_resolve_hours:
				del open_since_clear[name]
	return alarms


def score(traffic, opened, anomalies, naive, eval_hours: list[datetime], detection_hours: int) -> dict:
	"""One seed's counts (summed over seeds by `pool`) and its diagnostics."""
	from verenigingen_perf.utils.performance.detection import rules

	plan: Plan = traffic.plan
	by_name = {op.name: op for op in traffic.ops}
	durations = tuple(rules.DURATION_METRICS)

	def found(name: str, metrics, start: datetime) -> bool:
		limit = start + HOUR * detection_hours
		return any(start <= h <= limit for m in metrics for h in opened.get((name, m), []))

	def busy(name: str, start: datetime) -> bool:
		"""At least HIGH_VOLUME requests an hour expected in the hours the detector has to find it in."""
		op = by_name[name]
		volumes = [traffic.expected_volume(op, start + HOUR * k) for k in range(detection_hours)]
		return sum(volumes) / len(volumes) >= HIGH_VOLUME

	counts: dict[str, int] = Counter()
	for name, regression in plan.regressions.items():
		size = f"{regression.kind}_{round((regression.factor - 1) * 100)}pct"
		hit = found(name, durations, regression.start)
		if busy(name, regression.start):
			counts[f"planted_busy_{size}"] += 1
			counts[f"found_busy_{size}"] += hit
			naive_hit = any(
				regression.start <= h <= regression.start + HOUR * detection_hours
				for h in naive.get(name, [])
			)
			counts[f"naive_found_busy_{size}"] += naive_hit
			if not hit:
				counts[f"missed_busy_{size}_open_before"] += any(
					h < regression.start for m in durations for h in opened.get((name, m), [])
				)
		if by_name[name].volume >= HIGH_VOLUME:
			counts[f"planted_mean_volume_{size}"] += 1
			counts[f"found_mean_volume_{size}"] += hit
	for name, (start, _rise) in plan.statement_rises.items():
		counts["planted_statement_rises"] += 1
		counts["found_statement_rises"] += found(name, [rules.STATEMENTS], start)

	# the hours an operation runs a planted change are not hours in which it can raise a false alarm
	def changed_from(name: str) -> datetime | None:
		moments = [r.start for n, r in plan.regressions.items() if n == name]
		moments += [s for n, (s, _k) in plan.statement_rises.items() if n == name]
		return min(moments, default=None)

	clean_hours = 0
	for op in traffic.ops:
		since = changed_from(op.name)
		clean_hours += sum(since is None or h < since for h in eval_hours)
	counts["clean_operation_hours"] = clean_hours

	total_volume = {h: sum(traffic.expected_volume(op, h) for op in traffic.ops) for h in eval_hours}

	def regressed_share(hour: datetime) -> float:
		under = sum(
			traffic.expected_volume(by_name[n], hour)
			for n, r in plan.regressions.items()
			if r.kind == "whole" and r.start <= hour
		)
		return under / total_volume[hour] if total_volume.get(hour) else 0.0

	false_by_hour: Counter = Counter()
	for (name, metric), hours in opened.items():
		if name == SITE_WIDE:
			for h in hours:
				explained = metric in durations and regressed_share(h) >= SITE_WIDE_EXPLAINED_SHARE
				counts["site_wide_records_explained" if explained else "site_wide_false_alarms"] += 1
			continue
		planted_at = None
		if metric in durations and name in plan.regressions:
			planted_at = plan.regressions[name].start
		if metric == rules.STATEMENTS and name in plan.statement_rises:
			planted_at = plan.statement_rises[name][0]
		for h in hours:
			if planted_at is None or h < planted_at:
				counts["false_alarms"] += 1
				counts[f"false_alarms_{metric}"] += 1
				false_by_hour[h.hour] += 1
				counts["false_alarms_deploy_day"] += (
					h.weekday() == DEPLOY_WEEKDAY and h.hour >= DEPLOY_HOUR
				) or (h.weekday() == DEPLOY_WEEKDAY + 1 and h.hour < DEPLOY_HOUR)
	for name, hours in naive.items():
		if name == SITE_WIDE:
			continue
		planted_at = plan.regressions[name].start if name in plan.regressions else None
		counts["naive_false_alarms"] += sum(planted_at is None or h < planted_at for h in hours)

	recorded = set(anomalies)
	for (name, hour), kind in plan.anomalies.items():
		counts["planted_anomalies"] += 1
		counts["found_anomalies"] += (name, hour, kind) in recorded
	planted_kinds_at = {(hour, kind) for (_name, hour), kind in plan.anomalies.items()}
	for name, hour, metric in anomalies:
		if name == SITE_WIDE:
			# the site's rows sum every operation's: a planted anomaly of the same kind that hour
			# explains the site-wide one
			counts["site_wide_anomaly_records"] += 1
			counts["site_wide_anomaly_records_unexplained"] += (hour, metric) not in planted_kinds_at
			continue
		regression = plan.regressions.get(name)
		if regression is not None and hour >= regression.start:
			counts["anomaly_records_at_regressions"] += 1
			continue
		counts["anomaly_records_judged"] += 1
		counts["anomaly_records_right"] += (name, hour) in plan.anomalies
		if (name, hour) not in plan.anomalies:
			counts[f"false_anomaly_records_{metric}"] += 1
	counts["planted_regressions"] = len(plan.regressions)
	counts["anomaly_records"] = len(anomalies)
	return {
		"counts": dict(counts),
		"false_alarms_by_hour_of_day": dict(sorted(false_by_hour.items())),
	}


def clopper_pearson(hits: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
	"""The exact binomial interval of a proportion: the beta quantiles of Clopper and Pearson."""
	from scipy.stats import beta

	tail = (1 - confidence) / 2
	low = float(beta.ppf(tail, hits, total - hits + 1)) if hits > 0 else 0.0
	high = float(beta.ppf(1 - tail, hits + 1, total - hits)) if hits < total else 1.0
	return low, high


def pool(counts: Counter, factors: tuple[float, ...], kinds: tuple[str, ...]) -> dict:
	"""The figures of the summed counts: recall with Clopper-Pearson intervals, rates, ratios."""

	def ratio(numerator: float, denominator: float, digits: int = 3) -> float | None:
		return round(numerator / denominator, digits) if denominator else None

	figures: dict = {}
	for kind in kinds:
		for factor in factors:
			size = f"{kind}_{round((factor - 1) * 100)}pct"
			label = (
				f"{round((factor - 1) * 100)}pct"
				if kind == "whole"
				else f"tail_{round((factor - 1) * 100)}pct"
			)
			planted, hits = counts[f"planted_busy_{size}"], counts[f"found_busy_{size}"]
			figures[f"regression_recall_{label}"] = ratio(hits, planted)
			figures[f"regression_recall_{label}_ci95"] = (
				[round(x, 3) for x in clopper_pearson(hits, planted)] if planted else None
			)
			figures[f"planted_busy_{label}"] = planted
			figures[f"missed_busy_{label}_under_an_open_record"] = counts[f"missed_busy_{size}_open_before"]
			figures[f"naive_regression_recall_{label}"] = ratio(counts[f"naive_found_busy_{size}"], planted)
			figures[f"regression_recall_{label}_by_mean_volume"] = ratio(
				counts[f"found_mean_volume_{size}"], counts[f"planted_mean_volume_{size}"]
			)
	figures["statement_rise_recall"] = ratio(
		counts["found_statement_rises"], counts["planted_statement_rises"]
	)
	per_1000 = 1000 / counts["clean_operation_hours"] if counts["clean_operation_hours"] else 0.0
	figures["clean_operation_hours"] = counts["clean_operation_hours"]
	figures["false_alarms"] = counts["false_alarms"]
	figures["false_alarms_by_metric"] = {
		key.removeprefix("false_alarms_"): value
		for key, value in sorted(counts.items())
		if key.startswith("false_alarms_") and not key.startswith("false_alarms_deploy")
	}
	figures["false_alarms_on_deploy_days"] = counts["false_alarms_deploy_day"]
	figures["false_alarms_per_1000_operation_hours"] = round(counts["false_alarms"] * per_1000, 3)
	figures["naive_false_alarms_per_1000_operation_hours"] = round(counts["naive_false_alarms"] * per_1000, 3)
	figures["false_alarm_ratio_naive_to_ours"] = ratio(
		counts["naive_false_alarms"], counts["false_alarms"], 1
	)
	figures["site_wide_false_alarms"] = counts["site_wide_false_alarms"]
	figures["site_wide_records_explained"] = counts["site_wide_records_explained"]
	figures["anomaly_recall"] = ratio(counts["found_anomalies"], counts["planted_anomalies"])
	figures["anomaly_precision"] = ratio(counts["anomaly_records_right"], counts["anomaly_records_judged"])
	figures["anomaly_records"] = counts["anomaly_records"]
	figures["false_anomaly_records_by_metric"] = {
		key.removeprefix("false_anomaly_records_"): value
		for key, value in sorted(counts.items())
		if key.startswith("false_anomaly_records_")
	}
	figures["site_wide_anomaly_records"] = counts["site_wide_anomaly_records"]
	figures["site_wide_anomaly_records_unexplained"] = counts["site_wide_anomaly_records_unexplained"]
	figures["anomaly_records_per_planted_regression"] = ratio(
		counts["anomaly_records_at_regressions"], counts["planted_regressions"], 2
	)
	return figures


def run_seed(seed: int, args, detection_config) -> tuple[dict, Counter, dict]:
	import frappe

	from verenigingen_perf.utils.performance import rollup
	from verenigingen_perf.utils.performance.detection import baselines, job

	rng = np.random.default_rng(seed)
	end = frappe.utils.now_datetime().replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
	start = end - timedelta(days=args.days)
	eval_start = end - timedelta(days=args.evaluate_days)
	traffic = GENERATORS[args.generator](args, rng, start, eval_start, end)
	wipe()
	started = time.monotonic()
	rows = store(traffic, start, args.days * 24)
	print(
		f"seed {seed}: stored {rows:,} hourly rows of {len(traffic.ops)} operations over {args.days} days "
		f"in {time.monotonic() - started:.0f} s",
		flush=True,
	)
	# the job starts where evaluation starts, as if it had run every hour before: the baselines (and
	# what they learn day by day, the anomaly metrics' dispersion) as the days before left them
	for day in range(detection_config.baseline_window_days, 0, -1):
		baselines.refresh_rolling(eval_start - timedelta(days=day), detection_config)
	rollup.set_watermark(eval_start)
	frappe.db.commit()
	job.run_detection(now=eval_start + timedelta(minutes=5))
	frappe.db.sql(
		"update `tabSingles` set value=%s where doctype='Performance Rollup State' and field='detected_until'",
		(eval_start,),
	)
	frappe.db.commit()
	eval_hours = [eval_start + HOUR * i for i in range(args.evaluate_days * 24)]
	per_hour, refresh_hours = [], []
	for hour in eval_hours:
		rollup.set_watermark(hour + HOUR)
		frappe.db.commit()
		report = job.run_detection(now=hour + HOUR + timedelta(minutes=5))
		assert report.hours_evaluated == 1, report
		(refresh_hours if report.baselines_refreshed else per_hour).append(report.seconds_per_hour[0])
	opened, anomalies = detected()
	naive = naive_alarms(
		eval_hours, detection_config.regression_threshold, detection_config.regression_window_hours
	)
	scored = score(traffic, opened, anomalies, naive, eval_hours, args.detection_hours)
	timing = {
		"hourly_rows": rows,
		"eval_s_per_hour": round(float(np.mean(per_hour)), 3),
		"eval_s_per_hour_max": round(float(np.max(per_hour)), 3),
		"eval_s_per_hour_with_baseline_refresh": round(float(np.mean(refresh_hours)), 3)
		if refresh_hours
		else None,
	}
	wipe()
	return timing, Counter(scored["counts"]), scored


# each generator's run unless told otherwise: the simple one as its figures were first measured (one
# seed, 500 operations, 90 days); the hard one on seeds the defaults were not chosen on (those were
# 1 and 2), with at least 60 planted regressions of each size on busy operations over its five seeds
RUN_DEFAULTS = {
	"simple": {
		"seeds": "42",
		"operations": 500,
		"days": 90,
		"regressions": 150,
		"tail_regressions": 0,
		"busy_share": 2 / 3,
		"statement_rises": 30,
		"anomalies": 700,
	},
	"hard": {
		"seeds": "101,102,103,104,105",
		"operations": 250,
		"days": 60,
		"regressions": 90,
		"tail_regressions": 30,
		"busy_share": 0.8,
		"statement_rises": 12,
		"anomalies": 350,
	},
}


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--db", default="sqlite", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--generator", default="simple", choices=tuple(GENERATORS))
	parser.add_argument("--seeds", help="comma-separated seeds, one run each, figures pooled")
	parser.add_argument("--operations", type=int)
	parser.add_argument("--days", type=int)
	parser.add_argument("--evaluate-days", type=int, default=14)
	parser.add_argument("--regressions", type=int)
	parser.add_argument("--tail-regressions", type=int)
	parser.add_argument("--busy-share", type=float)
	parser.add_argument("--statement-rises", type=int)
	parser.add_argument("--anomalies", type=int)
	parser.add_argument("--anomaly-min-expected", type=float, default=50)
	parser.add_argument("--detection-hours", type=int, default=6)
	args = parser.parse_args()
	for name, value in RUN_DEFAULTS[args.generator].items():
		if getattr(args, name) is None:
			setattr(args, name, value)
	seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
	connect_site(args.db)
	import frappe

	from verenigingen_perf.utils.performance import config as config_module

	config_module.reset_overrides()
	frappe.db.commit()
	detection_config = config_module.get_config().detection
	generator = GENERATORS[args.generator]
	kinds = ("whole", "tail") if args.tail_regressions else ("whole",)
	pooled: Counter = Counter()
	timings = []
	for seed in seeds:
		timing, counts, scored = run_seed(seed, args, detection_config)
		pooled.update(counts)
		timings.append(timing)
		line = {
			"seed": seed,
			**timing,
			**pool(counts, generator.factors, kinds),
			"false_alarms_by_hour_of_day": scored["false_alarms_by_hour_of_day"],
		}
		print(json.dumps(line), flush=True)
	figures = {
		"db": args.db,
		"generator": args.generator,
		"seeds": seeds,
		"operations": args.operations,
		"days": args.days,
		"evaluate_days": args.evaluate_days,
		"detection_hours": args.detection_hours,
		"hourly_rows": sum(t["hourly_rows"] for t in timings),
		"eval_s_per_hour": round(float(np.mean([t["eval_s_per_hour"] for t in timings])), 3),
		"eval_s_per_hour_max": max(t["eval_s_per_hour_max"] for t in timings),
		"eval_s_per_hour_with_baseline_refresh": round(
			float(np.mean([t["eval_s_per_hour_with_baseline_refresh"] or 0 for t in timings])), 3
		),
		**pool(pooled, generator.factors, kinds),
	}
	print(json.dumps(figures))


if __name__ == "__main__":
	main()
