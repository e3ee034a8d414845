"""The summaries of a fold's buckets, built from pages of its detail rows: pure numpy, no database.

A page row is what the rollup's page query sends: (bucket text, duration in ms, outcome, statements,
database time in ms, memory in KB), where the outcome is `SERVER_ERROR`, `CLIENT_ERROR` or 0 and the
memory is the larger of the row's RSS growth and Python allocation peak (what one run of the
operation took; never the worker's RSS, which holds the framework whatever the operation). Every bucket's count, errors,
sums and extremes and its sketch's bins are added up a page at a time in arrays indexed by bucket, so
a page costs a few vectorised passes whatever the number of its buckets, and the database sorts and
groups nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from verenigingen_perf.utils.performance.sketch import StoredSketchMerger, Summary, bin_by_group

SERVER_ERROR = 1
CLIENT_ERROR = 2
PageRow = tuple[str, float, int, int, float, float]

_SUMS = ("count", "error_count", "client_error_count", "duration_sum_ms", "query_sum", "db_time_sum_ms")
_MAXIMA = ("duration_max_ms", "query_max", "memory_max_kb")
_INTEGERS = {"count", "error_count", "client_error_count", "query_sum", "query_max"}


class BucketTotals:
	"""Adds pages of rows up per bucket; `summaries` gives each bucket's Summary."""

	def __init__(self) -> None:
		self.slots: dict[str, int] = {}
		self.bins: list[StoredSketchMerger] = []
		self.columns: dict[str, np.ndarray] = {}
		self._grow(64)

	def add_page(self, rows: Sequence[PageRow]) -> None:
		if not rows:
			return
		texts, durations, outcomes, queries, db_times, memories = zip(*rows, strict=True)
		slots = self.slots
		ids = np.fromiter((slots.setdefault(text, len(slots)) for text in texts), np.int64, len(texts))
		buckets = len(slots)
		if buckets > len(self.bins):
			self._grow(buckets)
		duration = _numbers(durations)
		outcome = _numbers(outcomes)
		query = _numbers(queries)
		added = {
			"count": np.bincount(ids, minlength=buckets),
			"error_count": np.bincount(ids, weights=outcome == SERVER_ERROR, minlength=buckets),
			"client_error_count": np.bincount(ids, weights=outcome == CLIENT_ERROR, minlength=buckets),
			"duration_sum_ms": np.bincount(ids, weights=duration, minlength=buckets),
			"query_sum": np.bincount(ids, weights=query, minlength=buckets),
			"db_time_sum_ms": np.bincount(ids, weights=_numbers(db_times), minlength=buckets),
		}
		for name, values in added.items():
			self.columns[name][:buckets] += values
		np.minimum.at(self.columns["duration_min_ms"], ids, duration)
		np.maximum.at(self.columns["duration_max_ms"], ids, duration)
		np.maximum.at(self.columns["query_max"], ids, query)
		np.maximum.at(self.columns["memory_max_kb"], ids, _numbers(memories))
		for entry in bin_by_group(ids, duration):
			bins = self.bins[entry.group]
			bins.add_counts(entry.keys, entry.counts)
			bins.zero_count += entry.zero_count

	def summaries(self) -> dict[str, Summary]:
		"""Each bucket's Summary (plain Python numbers), by its text."""
		buckets = len(self.slots)
		values = {
			name: (
				np.rint(column[:buckets]).astype(np.int64) if name in _INTEGERS else column[:buckets]
			).tolist()
			for name, column in self.columns.items()
		}
		return {
			text: Summary(
				count=values["count"][slot],
				error_count=values["error_count"][slot],
				client_error_count=values["client_error_count"][slot],
				duration_min_ms=values["duration_min_ms"][slot],
				duration_max_ms=values["duration_max_ms"][slot],
				duration_sum_ms=values["duration_sum_ms"][slot],
				query_sum=values["query_sum"][slot],
				query_max=values["query_max"][slot],
				db_time_sum_ms=values["db_time_sum_ms"][slot],
				memory_max_mb=values["memory_max_kb"][slot] / 1024,
				bins=self.bins[slot],
			)
			for text, slot in self.slots.items()
		}

	def _grow(self, buckets: int) -> None:
		"""Room for at least `buckets` buckets (doubling, so a fold of many pages grows a few times)."""
		size = max(buckets, 2 * len(self.bins))
		for name in (*_SUMS, *_MAXIMA, "duration_min_ms"):
			start = np.inf if name == "duration_min_ms" else 0.0
			grown = np.full(size, start)
			if name in self.columns:
				grown[: len(self.bins)] = self.columns[name]
			self.columns[name] = grown
		self.bins.extend(StoredSketchMerger() for _ in range(size - len(self.bins)))


def _numbers(values: Sequence[float | int | None]) -> np.ndarray:
	"""A column of a page as floats; a missing number (the columns are NOT NULL; defensive) is 0."""
	return np.nan_to_num(np.array(values, dtype=np.float64), nan=0.0)
