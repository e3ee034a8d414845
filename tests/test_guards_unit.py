"""The regression guards' own tests that need no site: memory, timing, baselines."""

import json

import numpy as np
import pytest

from verenigingen_perf.testing import (
	Baselines,
	GuardFailure,
	MissingBaseline,
	PerformanceGuards,
	memory_budget,
	timing,
	timing_guard,
)


def test_a_planted_allocation_fails_the_memory_budget_and_names_its_size():
	with memory_budget(10):
		kept = bytearray(2 * 2**20)
	assert kept
	with pytest.raises(GuardFailure) as failure:
		with memory_budget(1):
			kept = bytearray(4 * 2**20)
	assert "memory budget: peak of Python allocations 4.0" in str(failure.value)


def test_the_memory_budget_is_also_a_decorator():
	@memory_budget(1)
	def greedy():
		return bytearray(3 * 2**20)

	with pytest.raises(GuardFailure):
		greedy()


def work(n: int) -> int:
	return sum(i * i for i in range(n))


def rounds_under_load(slowdown: float, seed: int, rounds: int = timing.ROUNDS) -> tuple[list, list]:
	"""Interleaved rounds as `compare` takes them on a shared, noisy machine: each round's load slows
	both functions alike (up to 3x), and each block has noise of its own (about 5%)."""
	rng = np.random.default_rng(seed)
	load = rng.uniform(1.0, 3.0, rounds)
	candidate = 1.0 * (1 + slowdown) * load * rng.lognormal(0, 0.05, rounds)
	reference = 1.0 * load * rng.lognormal(0, 0.05, rounds)
	return candidate.tolist(), reference.tolist()


def test_the_timing_guard_passes_the_unchanged_and_catches_a_30pct_slowdown_under_load():
	"""The calibration in small, on simulated rounds (benchmarks/timing_guard.py measures it on real
	ones): with the defaults, an unchanged function is never called slower and a 30% slowdown
	nearly always is, however loaded the machine, since both run in the same round."""
	trials = 20
	unchanged = [timing.judge(*rounds_under_load(0.0, s), paired=True, seed=s) for s in range(trials)]
	planted = [timing.judge(*rounds_under_load(0.3, s), paired=True, seed=s) for s in range(trials)]
	assert not [c for c in unchanged if c.slower], [c.describe() for c in unchanged if c.slower]
	assert sum(c.slower for c in planted) >= trials - 2, [c.describe() for c in planted]


def test_the_timing_guard_fails_a_function_many_times_slower():
	with pytest.raises(GuardFailure) as failure:
		timing_guard(lambda: work(200_000), lambda: work(20_000))
	assert "slower" in str(failure.value) and "interval" in str(failure.value)


def test_the_interval_is_on_the_ratio_of_medians():
	candidate = [1.2, 1.21, 1.19, 1.2, 1.22, 1.18, 1.2]
	reference = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0]
	judged = timing.judge(candidate, reference, allowed_slowdown=0.1, confidence=0.99, paired=True)
	assert judged.ratio == pytest.approx(1.2)
	assert judged.low <= judged.ratio <= judged.high
	assert judged.slower
	assert not timing.judge(reference, candidate, paired=True).slower


def test_baselines_are_recorded_in_update_mode_and_a_missing_one_fails(tmp_path):
	path = tmp_path / "baselines.json"
	recording = Baselines(path, update=True)
	assert timing_guard(lambda: work(5000), name="work", baselines=recording) is None
	with memory_budget(name="buffer", baselines=recording):
		kept = bytearray(2**20)
	assert kept
	stored = json.loads(path.read_text())
	assert len(stored["timings_ms"]["work"]) == timing.ROUNDS
	assert stored["memory_mb"]["buffer"] == pytest.approx(1.0, abs=0.1)
	comparing = Baselines(path)
	# against the recorded samples (a function ten times faster: never slower, however loaded the
	# machine is when the two runs happen)
	compared = timing_guard(lambda: work(500), name="work", baselines=comparing)
	assert compared.reference_samples_ms == stored["timings_ms"]["work"] and not compared.slower
	with pytest.raises(MissingBaseline) as missing:
		with memory_budget(name="not recorded", baselines=comparing):
			pass
	assert "--vperf-update-baselines" in str(missing.value)


def test_the_unittest_mixin_gives_the_same_guards():
	class Case(PerformanceGuards):
		pass

	with pytest.raises(GuardFailure):
		with Case().assertMemoryBudget(1):
			kept = bytearray(3 * 2**20)
	assert kept is not None
	assert not Case().assertNotSlower(lambda: work(100), lambda: work(1000)).slower
