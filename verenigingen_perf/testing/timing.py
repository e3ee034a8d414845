"""A timing comparison that is sound on a noisy machine. Pure Python (and numpy); no site.

The candidate and the reference run interleaved, in rounds (the order alternates, so neither always
runs on a warmer cache); each round times a few blocks of calls of each, long enough to see past the
clock's resolution, and keeps each side's fastest block (noise on a shared machine only adds time). The verdict is on a bootstrap confidence interval of the ratio of the medians
(candidate / reference, the rounds resampled in pairs, so noise that hit both halves of a round
cancels): a comparison fails only when the whole interval lies above `1 + allowed_slowdown`. A
stored baseline (samples recorded earlier) takes the reference's place; its samples and the new
ones are then resampled independently.

Calibration, on the 2-core shared machine this app is developed on (`benchmarks/timing_guard.py`,
with the defaults: 21 rounds of 3 blocks a side, 99% interval, 10% allowed): an unchanged function
failed in 0 of 400 comparisons (the highest lower bound was 1.000), a planted 30% slowdown was caught
in 399 of 400 (99.75%). With the machine busy with other benchmarks at the same time: 0 of 40 and
37 of 40.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ROUNDS = 21
CONFIDENCE = 0.99
ALLOWED_SLOWDOWN = 0.10
# how long one timed block of calls should take, so the clock's resolution does not matter
BLOCK_S = 0.002
# blocks per side and round; a round keeps the fastest of each side (noise on a shared machine only
# ever adds time, so the minimum is the least disturbed measurement)
BLOCKS_PER_ROUND = 3
_BOOTSTRAP_RESAMPLES = 4000


@dataclass
class TimingComparison:
	"""Median time per call of candidate and reference (ms), their ratio and its interval."""

	candidate_ms: float
	reference_ms: float
	ratio: float
	low: float
	high: float
	confidence: float
	allowed_slowdown: float
	rounds: int
	candidate_samples_ms: list[float] = field(repr=False, default_factory=list)
	reference_samples_ms: list[float] = field(repr=False, default_factory=list)

	@property
	def slower(self) -> bool:
		"""Slower beyond the allowed slowdown, with the stated confidence."""
		return self.low > 1 + self.allowed_slowdown

	def describe(self) -> str:
		return (
			f"candidate {self.candidate_ms:.4g} ms, reference {self.reference_ms:.4g} ms per call: ratio "
			f"{self.ratio:.3f}, {self.confidence:.0%} interval [{self.low:.3f}, {self.high:.3f}] over "
			f"{self.rounds} rounds; allowed up to {1 + self.allowed_slowdown:.2f}"
		)


def calls_per_block(fn: Callable[[], object], block_s: float = BLOCK_S) -> int:
	"""How many calls of `fn` take about `block_s` (at least one)."""
	calls, elapsed = 1, 0.0
	while True:
		started = time.perf_counter()
		for _ in range(calls):
			fn()
		elapsed = time.perf_counter() - started
		if elapsed >= block_s / 4 or calls >= 1 << 20:
			break
		calls *= 4
	return max(1, round(calls * block_s / max(elapsed, 1e-9)))


def time_block(fn: Callable[[], object], calls: int) -> float:
	"""Milliseconds per call over one block of `calls` calls."""
	started = time.perf_counter()
	for _ in range(calls):
		fn()
	return (time.perf_counter() - started) * 1000 / calls


def compare(
	candidate: Callable[[], object],
	reference: Callable[[], object],
	*,
	rounds: int = ROUNDS,
	allowed_slowdown: float = ALLOWED_SLOWDOWN,
	confidence: float = CONFIDENCE,
	seed: int = 0,
) -> TimingComparison:
	"""Candidate against reference, interleaved (see the module docstring)."""
	calls = max(calls_per_block(reference), 1)
	candidate(), reference()  # warm both
	candidate_ms, reference_ms = [], []
	for i in range(rounds):
		fastest = {candidate: float("inf"), reference: float("inf")}
		for j in range(BLOCKS_PER_ROUND):
			for fn in (candidate, reference) if (i + j) % 2 else (reference, candidate):
				fastest[fn] = min(fastest[fn], time_block(fn, calls))
		candidate_ms.append(fastest[candidate])
		reference_ms.append(fastest[reference])
	return judge(candidate_ms, reference_ms, allowed_slowdown, confidence, paired=True, seed=seed)


def measure(candidate: Callable[[], object], *, rounds: int = ROUNDS) -> list[float]:
	"""Samples of the candidate alone (ms per call), as a baseline records them."""
	calls = calls_per_block(candidate)
	candidate()
	return [min(time_block(candidate, calls) for _ in range(BLOCKS_PER_ROUND)) for _ in range(rounds)]


def judge(
	candidate_ms: list[float],
	reference_ms: list[float],
	allowed_slowdown: float = ALLOWED_SLOWDOWN,
	confidence: float = CONFIDENCE,
	*,
	paired: bool,
	seed: int = 0,
) -> TimingComparison:
	"""The ratio of medians and its bootstrap interval (percentile method)."""
	candidate = np.asarray(candidate_ms, dtype=float)
	reference = np.asarray(reference_ms, dtype=float)
	rng = np.random.default_rng(seed)
	picks = rng.integers(0, len(candidate), size=(_BOOTSTRAP_RESAMPLES, len(candidate)))
	reference_picks = (
		picks if paired else rng.integers(0, len(reference), size=(_BOOTSTRAP_RESAMPLES, len(reference)))
	)
	ratios = np.median(candidate[picks], axis=1) / np.median(reference[reference_picks], axis=1)
	tail = (1 - confidence) / 2
	low, high = np.quantile(ratios, [tail, 1 - tail])
	candidate_median, reference_median = statistics.median(candidate_ms), statistics.median(reference_ms)
	return TimingComparison(
		candidate_ms=candidate_median,
		reference_ms=reference_median,
		ratio=candidate_median / reference_median,
		low=float(low),
		high=float(high),
		confidence=confidence,
		allowed_slowdown=allowed_slowdown,
		rounds=len(candidate_ms),
		candidate_samples_ms=list(candidate_ms),
		reference_samples_ms=list(reference_ms),
	)
