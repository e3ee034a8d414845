"""The regression guards: statements, memory and time of a block of code, for any app's tests.

- `query_budget(n)`: the exact number of SQL statements of a block (`maximum=True`: at most n). On
  failure the message lists every statement shape with its count and time and marks the repeated
  ones (N+1), where Frappe's `assertQueryCount` gives one number. Transaction control (BEGIN,
  COMMIT, SAVEPOINT, ...) is not counted unless `transactions=True`: backends and Frappe versions
  issue it differently, and it is not the work being budgeted.
- `memory_budget(mb)`: the peak of Python allocations of a block (tracemalloc).
- `timing_guard(candidate, reference)`: a comparison that is sound on a noisy machine (timing.py).

Each works as a context manager and a decorator (the timing guard is a call), with a number or with
the name of a baseline (baselines.py). A failure raises `GuardFailure`, an AssertionError, so pytest
and unittest report it as a test failure.
"""

from __future__ import annotations

import functools
import re
import tracemalloc
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, TypeVar

from verenigingen_perf.testing import timing
from verenigingen_perf.testing.baselines import Baselines, default_baselines
from verenigingen_perf.utils.performance.statements import ShapeFigures, group_shapes, recorded_statements

F = TypeVar("F", bound=Callable[..., Any])
# a shape seen this often in one block is reported as an N+1 pattern
N_PLUS_ONE_REPEATS = 3
# how many allocation sites a failed memory budget lists
_TOP_ALLOCATIONS = 5
_TRANSACTION_CONTROL = re.compile(
	r"^\s*(begin|commit|rollback|start\s+transaction|savepoint|release\s+savepoint|set\s+transaction)\b",
	re.IGNORECASE,
)


class GuardFailure(AssertionError):
	"""A guard's budget was exceeded; the message says by what."""


def _baselines(given: Baselines | None) -> Baselines:
	baselines = given or default_baselines()
	if baselines is None:
		raise GuardFailure(
			"a guard named a baseline, but no baselines file is configured (pytest --vperf-baselines PATH, "
			"or the VPERF_BASELINES environment variable)"
		)
	return baselines


class _Guard:
	"""A context manager that is also a decorator."""

	def __call__(self, fn: F) -> F:
		@functools.wraps(fn)
		def wrapper(*args: Any, **kwargs: Any) -> Any:
			with self:
				return fn(*args, **kwargs)

		return wrapper  # type: ignore[return-value]


class QueryBudget(_Guard):
	def __init__(
		self,
		n: int | None = None,
		*,
		maximum: bool = False,
		name: str | None = None,
		repeats: int = N_PLUS_ONE_REPEATS,
		transactions: bool = False,
		baselines: Baselines | None = None,
	):
		if n is None and name is None:
			raise ValueError("query_budget: give a number of statements or the name of a baseline")
		self.n, self.maximum, self.name, self.repeats = n, maximum, name, repeats
		self.transactions = transactions
		self.baselines = baselines
		self.statements: list[tuple[str, float]] = []
		self._recorded: list[tuple[str, float]] = []
		self._stack: ExitStack | None = None

	def __enter__(self) -> QueryBudget:
		self._stack = ExitStack()
		self._recorded = self._stack.enter_context(recorded_statements())
		return self

	def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
		assert self._stack is not None
		self._stack.close()
		self.statements = [
			(query, seconds)
			for query, seconds in self._recorded
			if self.transactions or not _TRANSACTION_CONTROL.match(query)
		]
		if exc_type is None:
			self.check()

	@property
	def count(self) -> int:
		return len(self.statements)

	def check(self) -> None:
		expected = self.n
		if expected is None:
			baselines = _baselines(self.baselines)
			if baselines.update:
				baselines.record("queries", self.name, self.count)
				return
			expected = int(baselines.get("queries", self.name))
		within = self.count <= expected if self.maximum else self.count == expected
		if not within:
			raise GuardFailure(self.report(expected))

	def report(self, expected: int) -> str:
		what = f"query budget {self.name!r}" if self.name else "query budget"
		bound = "at most" if self.maximum else "exactly"
		lines = [f"{what}: {self.count} statements, expected {bound} {expected}"]
		for shape in group_shapes(self.statements):
			lines.append(_shape_line(shape, self.repeats))
		return "\n".join(lines)


def _shape_line(shape: ShapeFigures, repeats: int) -> str:
	marker = "  <- repeated: N+1" if shape.count >= repeats else ""
	return f"  {shape.count:4d} x {shape.total_ms:9.3f} ms  {shape.shape[:200]}{marker}"


def query_budget(n: int | None = None, **kwargs: Any) -> QueryBudget:
	"""`with query_budget(5): ...`, `@query_budget(5)`, `query_budget(12, maximum=True)`,
	`query_budget(name="drain one batch")` (the number from the baselines file)."""
	return QueryBudget(n, **kwargs)


class MemoryBudget(_Guard):
	def __init__(
		self, mb: float | None = None, *, name: str | None = None, baselines: Baselines | None = None
	):
		if mb is None and name is None:
			raise ValueError("memory_budget: give megabytes or the name of a baseline")
		self.mb, self.name, self.baselines = mb, name, baselines
		self.peak_mb = 0.0
		self._started_tracing = False
		self._base = 0

	def __enter__(self) -> MemoryBudget:
		self._started_tracing = not tracemalloc.is_tracing()
		if self._started_tracing:
			tracemalloc.start()
		self._base = tracemalloc.get_traced_memory()[0]
		tracemalloc.reset_peak()
		return self

	def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
		try:
			self.peak_mb = max(0, tracemalloc.get_traced_memory()[1] - self._base) / 2**20
			if exc_type is None:
				self.check()
		finally:
			if self._started_tracing:
				tracemalloc.stop()

	def check(self) -> None:
		budget = self.mb
		if budget is None:
			baselines = _baselines(self.baselines)
			if baselines.update:
				baselines.record("memory_mb", self.name, round(self.peak_mb, 3))
				return
			budget = float(baselines.get("memory_mb", self.name))
		if self.peak_mb > budget:
			raise GuardFailure(self.report(budget))

	def report(self, budget: float) -> str:
		what = f"memory budget {self.name!r}" if self.name else "memory budget"
		lines = [f"{what}: peak of Python allocations {self.peak_mb:.2f} MB, allowed {budget:g} MB"]
		for stat in tracemalloc.take_snapshot().statistics("lineno")[:_TOP_ALLOCATIONS]:
			lines.append(f"  {stat.size / 2**20:8.2f} MB still held  {stat.traceback}")
		return "\n".join(lines)


def memory_budget(mb: float | None = None, **kwargs: Any) -> MemoryBudget:
	"""`with memory_budget(20): ...` or `@memory_budget(20)`: the block's peak Python allocations."""
	return MemoryBudget(mb, **kwargs)


def timing_guard(
	candidate: Callable[[], object],
	reference: Callable[[], object] | None = None,
	*,
	name: str | None = None,
	baselines: Baselines | None = None,
	**options: Any,
) -> timing.TimingComparison | None:
	"""Fail when `candidate` is slower than `reference` (or than the baseline named `name`) beyond
	the allowed slowdown with the stated confidence (timing.py). Returns the comparison (None when
	a baseline was recorded instead)."""
	if reference is not None:
		comparison = timing.compare(candidate, reference, **options)
	else:
		if name is None:
			raise ValueError("timing_guard: give a reference callable or the name of a baseline")
		stored = _baselines(baselines)
		rounds = options.get("rounds", timing.ROUNDS)
		samples = timing.measure(candidate, rounds=rounds)
		if stored.update:
			stored.record("timings_ms", name, [round(s, 6) for s in samples])
			return None
		comparison = timing.judge(
			samples,
			list(stored.get("timings_ms", name)),
			options.get("allowed_slowdown", timing.ALLOWED_SLOWDOWN),
			options.get("confidence", timing.CONFIDENCE),
			paired=False,
		)
	if comparison.slower:
		label = f"timing guard {name!r}" if name else "timing guard"
		raise GuardFailure(f"{label}: slower: {comparison.describe()}")
	return comparison
