"""Detection benchmark: are the regression and anomaly detectors right on data shaped like a site's?

Generates `--days` (90) days of hourly aggregates with real sketches for `--operations` (500)
operations, stores them as the rollup would, plants regressions, statement rises and anomalies in
the last `--evaluate-days` (14) days, and runs the detection job hour by hour over those days as the
scheduler would (`detection.job.run_detection(now=...)`). It then scores what the job recorded against
what was planted, and scores the naive rule of the replaced system (p95 above the baseline by 5%, no
significance) on the same data and baselines.

The traffic: each operation's mean volume is log-uniform from 5 to 5,000 requests an hour, with a
daily cycle (quiet nights) and a weekly one (quiet weekends), Poisson counts; durations are a
log-normal body with a 3% slow tail (5x the median), every hour scaled by a small random factor
(2% spread) and a load effect; statements per call are a fixed path plus extra statements on a 5%
cache-miss branch; error rates from 0.01% to 1%. Each hour's sketch is the multinomial draw of its
count over the sketch's bins, as DDSketch would hold the durations.

Planted: regressions (durations x1.10, x1.20 or x1.50 from a random hour on), statement rises (+1, +2
or +5 per call), count spikes (x3 for one hour) and error bursts (25% of one hour's requests), the
anomalies only in hours expecting at least `--anomaly-min-expected` requests (below that a spike is
not distinguishable from Poisson noise by anyone).

Scoring: a regression is found when the job opens a record for its operation and a duration metric
(statement rises: the statements metric) within 3 hours of its start; recall for +20% and +50% counts
regressions of operations with >= 200 requests an hour in those 3 hours (an operation averaging 200
has 50 at night: `*_by_mean_volume` counts by the daily mean instead, and is reported too). A false
alarm is a regression record opened on an operation and metric where nothing was planted (and, for
operations with a planted change, before it started), per 1,000 operation-hours evaluated. Anomaly
recall counts planted anomalies recorded in their hour (count spikes as `count`, bursts as
`error_rate`); anomaly precision is the share of the other records that are at a planted anomaly's
hour, leaving out p95 records on an operation whose planted regression is under way (a real change,
which the regression detector reports; counted apart as `p95_anomalies_at_planted_regressions`).
The naive rule's alarms are the hours its condition starts to hold (after not holding) per operation.

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import defaultdict
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
REGRESSION_FACTORS = (1.10, 1.20, 1.50)
STATEMENT_RISES = (1, 2, 5)
HIGH_VOLUME = 200
DETECTION_HOURS = 3


@dataclass
class Operation:
	name: str
	volume: float
	median_ms: float
	sigma: float
	statements: int
	miss_statements: int
	error_rate: float
	probabilities: np.ndarray = field(repr=False)
	regression: tuple[datetime, float] | None = None
	statement_rise: tuple[datetime, int] | None = None


def _normal_cdf(x: np.ndarray) -> np.ndarray:
	return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def bin_probabilities(median_ms: float, sigma: float) -> np.ndarray:
	"""P(a duration falls in each key's bin): 97% log-normal body, 3% tail at 5x the median."""
	edges = np.sqrt(KEY_VALUES[:-1] * KEY_VALUES[1:])
	logs = np.log(edges)
	cdf = 0.97 * _normal_cdf((logs - math.log(median_ms)) / sigma) + 0.03 * _normal_cdf(
		(logs - math.log(5 * median_ms)) / sigma
	)
	cdf = np.concatenate(([0.0], cdf, [1.0]))
	return np.diff(cdf)


def seasonality(at: datetime) -> float:
	"""Traffic relative to the operation's mean: quiet nights, busy office hours, quiet weekends."""
	daily = 0.25 + 1.5 * math.exp(-(((at.hour + 0.5 - 13.0) / 4.0) ** 2))
	weekly = 0.45 if at.weekday() >= 5 else 1.0
	return daily * weekly


def operations(count: int, rng: np.random.Generator) -> list[Operation]:
	ops = []
	for i in range(count):
		median_ms = float(np.exp(rng.uniform(math.log(5), math.log(500))))
		sigma = float(rng.uniform(0.4, 1.0))
		ops.append(
			Operation(
				name=f"/api/method/bench.detection.op_{i:03d}",
				volume=float(np.exp(rng.uniform(math.log(5), math.log(5000)))),
				median_ms=median_ms,
				sigma=sigma,
				statements=int(rng.integers(3, 60)),
				miss_statements=int(rng.integers(1, 6)),
				error_rate=float(np.exp(rng.uniform(math.log(1e-4), math.log(1e-2)))),
				probabilities=bin_probabilities(median_ms, sigma),
			)
		)
	return ops


@dataclass
class Plan:
	"""What was planted, for scoring."""

	regressions: dict[str, tuple[datetime, float]] = field(default_factory=dict)
	statement_rises: dict[str, tuple[datetime, int]] = field(default_factory=dict)
	# (operation, hour) -> "count" or "error_rate"
	anomalies: dict[tuple[str, datetime], str] = field(default_factory=dict)


def plant(ops: list[Operation], eval_start: datetime, end: datetime, rng: np.random.Generator, args) -> Plan:
	plan = Plan()
	hours = int((end - eval_start) / HOUR)
	chosen = rng.permutation(len(ops))
	regressed = chosen[: args.regressions]
	risen = chosen[args.regressions : args.regressions + args.statement_rises]
	for i, index in enumerate(regressed):
		start = eval_start + HOUR * int(rng.integers(args.baseline_hours_before, hours - DETECTION_HOURS))
		ops[index].regression = (start, REGRESSION_FACTORS[i % len(REGRESSION_FACTORS)])
		plan.regressions[ops[index].name] = ops[index].regression
	for i, index in enumerate(risen):
		start = eval_start + HOUR * int(rng.integers(args.baseline_hours_before, hours - DETECTION_HOURS))
		ops[index].statement_rise = (start, STATEMENT_RISES[i % len(STATEMENT_RISES)])
		plan.statement_rises[ops[index].name] = ops[index].statement_rise
	kinds = ("count", "error_rate")
	while len(plan.anomalies) < args.anomalies:
		op = ops[int(rng.integers(len(ops)))]
		at = eval_start + HOUR * int(rng.integers(0, hours))
		if op.volume * seasonality(at) >= args.anomaly_min_expected:
			plan.anomalies.setdefault((op.name, at), kinds[len(plan.anomalies) % 2])
	return plan


def hour_values(op: Operation, at: datetime, plan: Plan, rng: np.random.Generator) -> dict | None:
	"""One hour's aggregate row of `op`, as the rollup stores it (None: no request that hour)."""
	season = seasonality(at)
	anomaly = plan.anomalies.get((op.name, at))
	count = int(rng.poisson(op.volume * season * (3 if anomaly == "count" else 1)))
	if not count:
		return None
	scale = float(rng.normal(0.0, 0.02)) + 0.02 * (season - 1.0)
	if op.regression and at >= op.regression[0]:
		scale += math.log(op.regression[1])
	shift = round(scale / LOG_GAMMA)
	counts = rng.multinomial(count, op.probabilities)
	nonzero = np.flatnonzero(counts)
	low, high = int(nonzero[0]), int(nonzero[-1])
	bins = StoredSketchMerger()
	bins.add((0, LOW_KEY + low + shift, counts[low : high + 1].astype(np.int64)))
	values_ms = KEY_VALUES[low : high + 1] * math.exp(shift * LOG_GAMMA)
	duration_sum = float(np.dot(counts[low : high + 1], values_ms))
	misses = int(rng.binomial(count, 0.05))
	rise = op.statement_rise[1] if op.statement_rise and at >= op.statement_rise[0] else 0
	error_rate = 0.25 if anomaly == "error_rate" else op.error_rate
	summary = Summary(
		count=count,
		error_count=int(rng.binomial(count, error_rate)),
		duration_min_ms=float(values_ms[0]),
		duration_max_ms=float(values_ms[-1]),
		duration_sum_ms=duration_sum,
		query_sum=count * (op.statements + rise) + misses * op.miss_statements,
		query_max=op.statements + rise + (op.miss_statements if misses else 0),
		db_time_sum_ms=0.3 * duration_sum,
		bins=bins,
	)
	return summary.as_values()


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


def store(ops: list[Operation], start: datetime, hours: int, plan: Plan, rng: np.random.Generator) -> int:
	"""Every operation's hourly rows, inserted a day at a time as the rollup would have left them."""
	import frappe

	from verenigingen_perf.utils.performance import rollup
	from verenigingen_perf.utils.performance.schema import AGGREGATE

	columns = ("name", *rollup.AGGREGATE_COLUMNS, "creation", "modified", "owner", "modified_by")
	stored = 0
	for day in range(0, hours, 24):
		values = []
		for op in ops:
			for h in range(day, min(day + 24, hours)):
				at = start + HOUR * h
				row = hour_values(op, at, plan, rng)
				if row is None:
					continue
				row.update(operation=op.name, operation_type="api", granularity="hour", period_start=at)
				name = rollup.aggregate_name("hour", at, "api", op.name)
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
	ops: list[Operation], eval_hours: list[datetime], threshold: float, window_hours: int
) -> dict[str, list[datetime]]:
	"""The replaced system's rule on the same rows and the same rolling baselines' periods: the
	window's p95 above the baseline's p95 by `threshold`, no significance; an alarm each time the
	condition starts to hold."""
	from verenigingen_perf.utils.performance.config import get_config
	from verenigingen_perf.utils.performance.detection import baselines

	config = get_config().detection
	alarms: dict[str, list[datetime]] = defaultdict(list)
	holding: dict[str, bool] = {}
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
			now_holds = acc.summary.quantile(0.95) > reference[name] * (1 + threshold)
			if now_holds and not holding.get(name):
				alarms[name].append(hour)
			holding[name] = now_holds
	return alarms


def score(ops, plan: Plan, opened, anomalies, naive, evaluated: int) -> dict:
	from verenigingen_perf.utils.performance.detection import rules

	volume = {op.name: op.volume for op in ops}

	def found(name: str, metrics, start: datetime) -> bool:
		limit = start + HOUR * DETECTION_HOURS
		return any(start <= h <= limit for m in metrics for h in opened.get((name, m), []))

	by_name = {op.name: op for op in ops}

	def busy(name: str, start: datetime) -> bool:
		"""At least HIGH_VOLUME requests an hour expected in the hours the detector has to find it in."""
		op = by_name[name]
		hours = [op.volume * seasonality(start + HOUR * k) for k in range(DETECTION_HOURS)]
		return sum(hours) / len(hours) >= HIGH_VOLUME

	recall, recall_by_mean = {}, {}
	for factor in REGRESSION_FACTORS:
		planted = [(n, s) for n, (s, f) in plan.regressions.items() if f == factor and busy(n, s)]
		hits = sum(found(n, rules.DURATION_METRICS, s) for n, s in planted)
		recall[factor] = (hits / len(planted) if planted else None, len(planted))
		by_mean = [
			(n, s) for n, (s, f) in plan.regressions.items() if f == factor and volume[n] >= HIGH_VOLUME
		]
		hits = sum(found(n, rules.DURATION_METRICS, s) for n, s in by_mean)
		recall_by_mean[factor] = hits / len(by_mean) if by_mean else None
	missed = [
		{
			"volume": round(volume[n]),
			"start": str(s),
			"first_detected_after_h": min(
				((h - s) / HOUR for m in rules.DURATION_METRICS for h in opened.get((n, m), []) if h >= s),
				default=None,
			),
			"opened_before_start": sorted(
				m for m in rules.DURATION_METRICS if any(h < s for h in opened.get((n, m), []))
			),
		}
		for n, (s, f) in plan.regressions.items()
		if f == 1.20 and busy(n, s) and not found(n, rules.DURATION_METRICS, s)
	]
	rises = list(plan.statement_rises.items())
	statement_hits = sum(found(n, [rules.STATEMENTS], s) for n, (s, _k) in rises)
	false_alarms = 0
	for (name, metric), hours in opened.items():
		planted_at = None
		if metric in rules.DURATION_METRICS and name in plan.regressions:
			planted_at = plan.regressions[name][0]
		if metric == rules.STATEMENTS and name in plan.statement_rises:
			planted_at = plan.statement_rises[name][0]
		false_alarms += sum(planted_at is None or h < planted_at for h in hours)
	naive_false = sum(
		sum(name not in plan.regressions or h < plan.regressions[name][0] for h in hours)
		for name, hours in naive.items()
	)
	naive_hits = {
		factor: sum(
			any(s <= h <= s + HOUR * DETECTION_HOURS for h in naive.get(n, []))
			for n, (s, f) in plan.regressions.items()
			if f == factor and busy(n, s)
		)
		for factor in REGRESSION_FACTORS
	}
	recorded = set(anomalies)
	anomaly_hits = sum((n, h, kind) in recorded for (n, h), kind in plan.anomalies.items())
	# p95 anomalies on an operation whose planted regression is under way are real changes: neither
	# right nor wrong for the anomaly detector's precision, reported apart
	at_regressions = [
		a
		for a in anomalies
		if a[2] == rules.P95 and a[0] in plan.regressions and a[1] >= plan.regressions[a[0]][0]
	]
	judged = [a for a in anomalies if a not in at_regressions]
	right = sum((n, h) in plan.anomalies for n, h, _m in judged)
	per_1000 = 1000 / evaluated
	return {
		"regression_recall_10pct": recall[1.10][0],
		"regression_recall_20pct": recall[1.20][0],
		"regression_recall_50pct": recall[1.50][0],
		"missed_20pct": missed,
		# the same over operations whose mean volume (day and night) is >= 200 an hour, wherever
		# in the day their regression began (a night's 50 requests an hour included)
		"regression_recall_20pct_by_mean_volume": recall_by_mean[1.20],
		"regression_recall_50pct_by_mean_volume": recall_by_mean[1.50],
		"planted_high_volume_regressions": {f"{f:.2f}": recall[f][1] for f in REGRESSION_FACTORS},
		"statement_rise_recall": statement_hits / len(rises) if rises else None,
		"false_alarms": false_alarms,
		"false_alarms_per_1000_operation_hours": round(false_alarms * per_1000, 3),
		"naive_regression_recall_20pct": naive_hits[1.20] / recall[1.20][1] if recall[1.20][1] else None,
		"naive_regression_recall_50pct": naive_hits[1.50] / recall[1.50][1] if recall[1.50][1] else None,
		"naive_false_alarms_per_1000_operation_hours": round(naive_false * per_1000, 3),
		"false_alarm_ratio_naive_to_ours": round(naive_false / false_alarms, 1) if false_alarms else None,
		"anomaly_recall": anomaly_hits / len(plan.anomalies) if plan.anomalies else None,
		"anomaly_precision": right / len(judged) if judged else None,
		"anomalies_recorded": len(anomalies),
		"p95_anomalies_at_planted_regressions": len(at_regressions),
	}


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("--db", default="sqlite", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--operations", type=int, default=500)
	parser.add_argument("--days", type=int, default=90)
	parser.add_argument("--evaluate-days", type=int, default=14)
	parser.add_argument("--regressions", type=int, default=150)
	parser.add_argument("--statement-rises", type=int, default=30)
	parser.add_argument("--anomalies", type=int, default=700)
	parser.add_argument("--anomaly-min-expected", type=float, default=50)
	parser.add_argument("--seed", type=int, default=42)
	args = parser.parse_args()
	args.baseline_hours_before = 0
	connect_site(args.db)
	import frappe

	from verenigingen_perf.utils.performance import config as config_module
	from verenigingen_perf.utils.performance import rollup
	from verenigingen_perf.utils.performance.detection import job

	config_module.reset_overrides()
	frappe.db.commit()
	detection_config = config_module.get_config().detection
	rng = np.random.default_rng(args.seed)
	end = frappe.utils.now_datetime().replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
	start = end - timedelta(days=args.days)
	eval_start = end - timedelta(days=args.evaluate_days)
	ops = operations(args.operations, rng)
	plan = plant(ops, eval_start, end, rng, args)
	wipe()
	started = time.monotonic()
	rows = store(ops, start, args.days * 24, plan, rng)
	print(
		f"stored {rows:,} hourly rows of {len(ops)} operations over {args.days} days in {time.monotonic() - started:.0f} s",
		flush=True,
	)
	# the job starts where evaluation starts, as if it had run every hour before
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
	print(f"evaluated {len(eval_hours)} hours", flush=True)
	opened, anomalies = detected()
	naive = naive_alarms(
		ops, eval_hours, detection_config.regression_threshold, detection_config.regression_window_hours
	)
	evaluated = len(ops) * len(eval_hours)
	figures = {
		"db": args.db,
		"operations": len(ops),
		"days": args.days,
		"hourly_rows": rows,
		"evaluated_hours": len(eval_hours),
		"eval_s_per_hour": round(float(np.mean(per_hour)), 3),
		"eval_s_per_hour_max": round(float(np.max(per_hour)), 3),
		"eval_s_per_hour_with_baseline_refresh": round(float(np.mean(refresh_hours)), 3)
		if refresh_hours
		else None,
		"planted_anomalies": len(plan.anomalies),
		**score(ops, plan, opened, anomalies, naive, evaluated),
	}
	wipe()
	print(json.dumps(figures))


if __name__ == "__main__":
	main()
