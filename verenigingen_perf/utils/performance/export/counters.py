"""Monotonic per-operation counters for the Prometheus exposition, and which operations have a series
of their own. Pure Python: no site needed.

A counter row only ever grows: the rollup adds each folded hour's summaries to it (counts, errors,
duration sum, statements and the merged duration sketch) in the transaction that moves the watermark,
so every measurement is counted exactly once, and retention (which deletes detail rows and old
aggregates, never these rows) cannot lower a figure.

Which operations have a series (the top N): the busiest by `total_count`, the measurements folded
since the counters began, exposed or not. Membership is decided before each fold is attributed, and
a fold's measurements go to the operation's own series while it has one, else to the `other` series
of its type. So every series only grows: an operation that leaves the top N keeps its figures frozen
(its series goes stale in Prometheus instead of falling) and resumes from them if it comes back; the
`other` series keeps what it counted before an operation was promoted out of it. Ties keep the
operations that have a series (no flapping between equals).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from verenigingen_perf.utils.performance.sketch import StoredSketchMerger, Summary

# (operation type, operation)
Key = tuple[str, str]


@dataclass
class Counter:
	operation_type: str
	operation: str
	exposed: bool = False
	# every measurement folded since the counters began, exposed or not (decides the top N)
	total_count: int = 0
	# what this row's series counted
	count: int = 0
	error_count: int = 0
	client_error_count: int = 0
	duration_sum_s: float = 0.0
	query_sum: int = 0
	bins: StoredSketchMerger = field(default_factory=StoredSketchMerger)

	@property
	def key(self) -> Key:
		return (self.operation_type, self.operation)

	def add(self, summary: Summary) -> None:
		self.count += summary.count
		self.error_count += summary.error_count
		self.client_error_count += summary.client_error_count
		self.duration_sum_s += summary.duration_sum_ms / 1000
		self.query_sum += summary.query_sum
		self.bins.merge(summary.bins)


def merge_by_operation(summaries: Iterable[tuple[Key, Summary]]) -> dict[Key, Summary]:
	"""A fold's summaries (one per operation and started hour) merged per operation."""
	merged: dict[Key, Summary] = {}
	for key, summary in summaries:
		merged.setdefault(key, Summary()).merge(summary)
	return merged


def top_operations(candidates: Iterable[Counter], top: int) -> set[Key]:
	"""The `top` busiest by total_count; on a tie the ones that already have a series stay."""
	ranked = sorted(candidates, key=lambda c: (-c.total_count, not c.exposed, c.operation_type, c.operation))
	return {c.key for c in ranked[:top]}


def fold(
	counters: dict[Key, Counter], folded: Mapping[Key, Summary], top: int, other: str
) -> dict[Key, Counter]:
	"""Add one fold's summaries (per operation) to the counters and return the rows that changed.

	`counters` must hold every exposed row and the stored rows of the folded operations (rows not
	given are new); it is updated in place. Operations named `other` (the rollup's own overflow) are
	never candidates and always count under `other`."""
	changed: dict[Key, Counter] = {}

	def row(key: Key) -> Counter:
		counter = counters.get(key)
		if counter is None:
			counter = counters[key] = Counter(*key)
		return counter

	for key, summary in folded.items():
		if key[1] != other:
			counter = row(key)
			counter.total_count += summary.count
			changed[key] = counter
	candidates = [c for c in counters.values() if c.operation != other and (c.exposed or c.key in folded)]
	members = top_operations(candidates, top)
	for counter in candidates:
		if counter.exposed != (counter.key in members):
			counter.exposed = counter.key in members
			changed[counter.key] = counter
	for key, summary in folded.items():
		target = counters[key] if key in members else row((key[0], other))
		# the `other` rows are always exposed
		target.exposed = True
		target.add(summary)
		changed[target.key] = target
	return changed


def histogram(counter: Counter, bounds_ms: tuple[float, ...]) -> list[tuple[str, int]]:
	"""Cumulative buckets in seconds for a Prometheus histogram, `+Inf` last (= the count): each
	bucket counted from the merged sketch, so it only grows as the sketch does."""
	counts = counter.bins.counts_at_most(bounds_ms)
	buckets = [(_seconds(bound), min(n, counter.count)) for bound, n in zip(bounds_ms, counts, strict=True)]
	buckets.append(("+Inf", counter.count))
	return buckets


def _seconds(bound_ms: float) -> str:
	return repr(bound_ms / 1000)
