"""Regression guards for any Frappe app's tests: statements, memory and time of a block of code.

	from verenigingen_perf.testing import query_budget, memory_budget, timing_guard

	with query_budget(5):                     # exactly 5 statements (maximum=True: at most 5)
		load_member()
	with memory_budget(20):                   # at most 20 MB of Python allocations at the peak
		build_report()
	timing_guard(new_version, old_version)     # fails only when surely more than 10% slower

pytest gets them as fixtures (registered by entry point: `query_budget`, `memory_budget`,
`timing_guard`) with the options `--vperf-baselines PATH` and `--vperf-update-baselines`; Frappe's
unittest runner through the mixin `PerformanceGuards` (assertQueryBudget, assertMemoryBudget,
assertNotSlower). A failure is a `GuardFailure`, an AssertionError.
"""

from verenigingen_perf.testing.baselines import Baselines, MissingBaseline, set_default_baselines
from verenigingen_perf.testing.guards import (
	GuardFailure,
	MemoryBudget,
	QueryBudget,
	memory_budget,
	query_budget,
	timing_guard,
)
from verenigingen_perf.testing.timing import TimingComparison


class PerformanceGuards:
	"""Mixin for `unittest.TestCase` (Frappe's `FrappeTestCase` / `IntegrationTestCase`)."""

	def assertQueryBudget(self, n: int | None = None, **kwargs) -> QueryBudget:
		return query_budget(n, **kwargs)

	def assertMemoryBudget(self, mb: float | None = None, **kwargs) -> MemoryBudget:
		return memory_budget(mb, **kwargs)

	def assertNotSlower(self, candidate, reference=None, **kwargs) -> TimingComparison | None:
		return timing_guard(candidate, reference, **kwargs)


__all__ = [
	"Baselines",
	"GuardFailure",
	"MemoryBudget",
	"MissingBaseline",
	"PerformanceGuards",
	"QueryBudget",
	"TimingComparison",
	"memory_budget",
	"query_budget",
	"set_default_baselines",
	"timing_guard",
]
