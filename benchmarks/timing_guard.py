"""Calibration of the timing guard (verenigingen_perf.testing.timing) on this machine.

	.devruntime/venv/bin/python -m benchmarks.timing_guard [--trials 400]

Runs the guard's comparison `--trials` times on an unchanged function (candidate and reference
alike) and as many times on a planted slowdown (the candidate does 30% more work), with the
guard's defaults; prints how often each failed. The last line is one JSON object:
`false_fail_rate` (target < 0.01) and `detection_rate_30pct` (target > 0.95).
"""

from __future__ import annotations

import argparse
import json
import time

from verenigingen_perf.testing import timing

WORK = 20_000
PLANTED = 1.30


def work(n: int) -> int:
	return sum(i * i for i in range(n))


def trial(slowdown: float, seed: int) -> timing.TimingComparison:
	size = int(WORK * slowdown)
	return timing.compare(lambda: work(size), lambda: work(WORK), seed=seed)


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__)
	parser.add_argument("--trials", type=int, default=400)
	args = parser.parse_args()
	started = time.perf_counter()
	unchanged = [trial(1.0, seed) for seed in range(args.trials)]
	planted = [trial(PLANTED, seed) for seed in range(args.trials)]
	false_fails = sum(c.slower for c in unchanged)
	caught = sum(c.slower for c in planted)
	print(
		json.dumps(
			{
				"trials": args.trials,
				"rounds": timing.ROUNDS,
				"confidence": timing.CONFIDENCE,
				"allowed_slowdown": timing.ALLOWED_SLOWDOWN,
				"false_fails": false_fails,
				"false_fail_rate": round(false_fails / args.trials, 4),
				"unchanged_ratio_max": round(max(c.ratio for c in unchanged), 4),
				"unchanged_low_max": round(max(c.low for c in unchanged), 4),
				"caught_30pct": caught,
				"detection_rate_30pct": round(caught / args.trials, 4),
				"planted_low_min": round(min(c.low for c in planted), 4),
				"seconds": round(time.perf_counter() - started, 1),
			}
		)
	)


if __name__ == "__main__":
	main()
