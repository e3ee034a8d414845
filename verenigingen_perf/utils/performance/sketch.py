"""Mergeable duration distributions (DDSketch) and the per-bucket summary built on them. Pure Python.

Percentiles are read from sketches, and sketches are merged, never averaged: a daily p99 is the p99 of
the merged hourly sketches, within the sketch's relative accuracy of the exact value.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from ddsketch import DDSketch
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

# part of the stored format, not a tunable threshold: sketches only merge at the same accuracy
RELATIVE_ACCURACY = 0.01
QUANTILES = {"p50_ms": 0.50, "p90_ms": 0.90, "p95_ms": 0.95, "p99_ms": 0.99}
# the key-to-value mapping of DDSketch(RELATIVE_ACCURACY), which every stored sketch shares; only
# its public methods are used (`key`, `value`, `min_possible`)
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)


def _log_gamma_factor(mapping: LogarithmicMapping) -> float:
	"""What the mapping multiplies a base-2 logarithm by, from its public attributes and with
	ddsketch's own arithmetic (LogarithmicMapping: 1 / log1p(gamma - 1), times log(2))."""
	mantissa = 2 * mapping.relative_accuracy / (1 - mapping.relative_accuracy)
	return (1 / math.log1p(mantissa)) * math.log(2)


_LOG_GAMMA_FACTOR = _log_gamma_factor(_MAPPING)
_KEY_OFFSET = _MAPPING.key(1.0)
# a value whose scaled logarithm lies this close to a whole number may fall on either side of a bin
# boundary when numpy's log and the C library's differ in the last bit: its key is the mapping's own
_BOUNDARY = 1e-7


def keys_of(durations: np.ndarray) -> np.ndarray:
	"""`_MAPPING.key` of every value (all above `min_possible`), computed for the whole array at once:
	exactly the mapping's keys (the few values next to a bin boundary are keyed one by one)."""
	scaled = np.log(durations) / math.log(2) * _LOG_GAMMA_FACTOR
	keys = np.ceil(scaled).astype(np.int64) + _KEY_OFFSET
	near = np.flatnonzero(np.abs(scaled - np.rint(scaled)) < _BOUNDARY)
	for index in near.tolist():
		keys[index] = _MAPPING.key(float(durations[index]))
	return keys


@dataclass
class GroupBins:
	"""One group's share of `bin_by_group`: its values too small for the mapping (counted as zeros)
	and the keys its other values fall in (ascending, distinct), with how many fell in each."""

	group: int
	zero_count: int
	keys: np.ndarray
	counts: np.ndarray


def bin_by_group(group_ids: np.ndarray, durations: np.ndarray) -> list[GroupBins]:
	"""The sketch bins of many groups' values at once: `group_ids[i]` is the group of `durations[i]`.

	Equal to calling `Summary.add_durations` with each group's values (a rollup page holds hundreds
	of groups; keying and counting them in one vectorised pass spares a numpy round per group)."""
	positive = durations > _MAPPING.min_possible
	zeros = np.bincount(group_ids[~positive])
	groups, keys = group_ids[positive], keys_of(durations[positive])
	found: dict[int, GroupBins] = {
		int(group): GroupBins(int(group), int(zeros[group]), _NO_KEYS, _NO_KEYS)
		for group in np.flatnonzero(zeros)
	}
	if keys.size:
		low = int(keys.min())
		span = int(keys.max()) - low + 1
		combined, counts = np.unique(groups.astype(np.int64) * span + (keys - low), return_counts=True)
		owners = combined // span
		starts = np.flatnonzero(np.diff(owners, prepend=-1))
		ends = np.append(starts[1:], len(owners))
		for first, last in zip(starts.tolist(), ends.tolist(), strict=True):
			group = int(owners[first])
			entry = found.setdefault(group, GroupBins(group, 0, _NO_KEYS, _NO_KEYS))
			entry.keys = combined[first:last] - group * span + low
			entry.counts = counts[first:last]
	return list(found.values())


_NO_KEYS = np.zeros(0, dtype=np.int64)


def new_sketch() -> DDSketch:
	return DDSketch(RELATIVE_ACCURACY)


# stored formats: 1 = counts as uint32; 2 = counts in the narrowest of uint8/16/32 (smaller rows,
# faster to compress); both are read
_FORMAT = 2
_HEADER_V1 = "<BIi"
_HEADER_V2 = "<BBIi"
_WIDTHS = ((0xFF, np.uint8), (0xFFFF, np.uint16), (0xFFFFFFFF, np.uint32))


def _encode(counts: np.ndarray, first_key: int, zero_count: int) -> str:
	"""The bins as stored: version, count width, zero count, first key, counts; zlib, base64.

	DDSketch's own protobuf loader re-adds every bin one call at a time (about a millisecond per
	sketch), which made it most of the rollup's time; this loads a store in one step. Durations are
	never negative, so there is no negative store to write."""
	top = int(counts.max()) if len(counts) else 0
	dtype = next(dtype for limit, dtype in _WIDTHS if top <= limit)
	packed = counts.astype(dtype)
	header = struct.pack(
		_HEADER_V2, _FORMAT, packed.itemsize, int(zero_count), first_key if len(counts) else 0
	)
	return base64.b64encode(zlib.compress(header + packed.tobytes(), 6)).decode()


def loads(text: str) -> DDSketch:
	"""A stored sketch as a DDSketch (for interoperating and checking; the app reads the bins)."""
	merger = StoredSketchMerger()
	merger.add(text)
	return merger.sketch()


@dataclass
class Summary:
	"""Everything an aggregate row holds, for one operation and period; merges with another exactly
	(counts, sums, extremes) or within the sketch's accuracy (percentiles).

	The duration sketch is kept as DDSketch's bins in a numpy array (`bins`): the same keys and
	counts DDSketch.add would keep, merged, read and stored without a Python loop per bin.
	`sketch` gives it as a DDSketch."""

	count: int = 0
	# server errors (HTTP 5xx, jobs that raised); an HTTP 4xx is a client error, counted apart
	error_count: int = 0
	client_error_count: int = 0
	duration_min_ms: float = math.inf
	duration_max_ms: float = 0.0
	duration_sum_ms: float = 0.0
	query_sum: int = 0
	query_max: int = 0
	db_time_sum_ms: float = 0.0
	memory_max_mb: float = 0.0
	# a lambda: StoredSketchMerger is defined further down this module
	bins: StoredSketchMerger = field(default_factory=lambda: StoredSketchMerger())

	@property
	def sketch(self) -> DDSketch:
		return self.bins.sketch()

	def add(
		self, duration_ms: float, is_error: bool, queries: int, db_time_ms: float, memory_mb: float
	) -> None:
		self.add_many([duration_ms], int(is_error), [queries], [db_time_ms], [memory_mb])

	def add_many(
		self,
		durations: list[float],
		errors: int,
		queries: list[int],
		db_times: list[float],
		memories: list[float],
	) -> None:
		"""`add` for a batch of rows of one bucket: the sums and extremes by builtins."""
		if not durations:
			return
		self.count += len(durations)
		self.error_count += errors
		self.duration_min_ms = min(self.duration_min_ms, min(durations))
		self.duration_max_ms = max(self.duration_max_ms, max(durations))
		self.duration_sum_ms += sum(durations)
		self.query_sum += sum(queries)
		self.query_max = max(self.query_max, max(queries))
		self.db_time_sum_ms += sum(db_times)
		self.memory_max_mb = max(self.memory_max_mb, max(memories))
		self.add_durations(durations)

	def add_durations(self, durations: list[float] | np.ndarray) -> None:
		"""Only the sketch part of `add`: the keys DDSketch.add computes (`keys_of`), counted into
		the bins; values too small for the mapping count as zeros."""
		values = np.asarray(durations, dtype=np.float64)
		if not values.size:
			return
		positive = values[values > _MAPPING.min_possible]
		self.bins.add_key_array(keys_of(positive))
		self.bins.zero_count += int(values.size - positive.size)

	def merge(self, other: Summary) -> None:
		if not other.count:
			return
		self.count += other.count
		self.error_count += other.error_count
		self.client_error_count += other.client_error_count
		self.duration_min_ms = min(self.duration_min_ms, other.duration_min_ms)
		self.duration_max_ms = max(self.duration_max_ms, other.duration_max_ms)
		self.duration_sum_ms += other.duration_sum_ms
		self.query_sum += other.query_sum
		self.query_max = max(self.query_max, other.query_max)
		self.db_time_sum_ms += other.db_time_sum_ms
		self.memory_max_mb = max(self.memory_max_mb, other.memory_max_mb)
		self.bins.merge(other.bins)

	def quantile(self, q: float) -> float:
		return self.quantiles((q,))[0]

	def quantiles(self, qs: tuple[float, ...]) -> list[float]:
		"""Several quantiles in one pass, read exactly as DDSketch's get_quantile_value reads one
		(rank q*(n-1), lower key; ranks among the zeros are 0), kept inside the exact extremes."""
		if not self.count or not self.bins.total():
			return [0.0 for _ in qs]
		return self.bins.quantiles(qs, self.duration_min_ms, self.duration_max_ms)

	def as_values(self) -> dict:
		values = {
			"count": self.count,
			"error_count": self.error_count,
			"client_error_count": self.client_error_count,
			"duration_min_ms": self.duration_min_ms if self.count else 0.0,
			"duration_max_ms": self.duration_max_ms,
			"duration_sum_ms": self.duration_sum_ms,
			"duration_mean_ms": self.duration_sum_ms / self.count if self.count else 0.0,
			"query_sum": self.query_sum,
			"query_mean": self.query_sum / self.count if self.count else 0.0,
			"query_max": self.query_max,
			"db_time_sum_ms": self.db_time_sum_ms,
			"memory_max_mb": self.memory_max_mb,
			"sketch": self.bins.dumps(),
		}
		values.update(zip(QUANTILES, self.quantiles(tuple(QUANTILES.values())), strict=True))
		# plain Python numbers: durations may come in as numpy scalars, which no database driver
		# adapts as numbers (psycopg2 writes numpy 2's float64 as `np.float64(...)`, invalid SQL)
		return {
			key: value.item() if isinstance(value, np.generic) else value for key, value in values.items()
		}

	@classmethod
	def from_values(cls, values: dict) -> Summary:
		bins = StoredSketchMerger()
		bins.add(values.get("sketch") or None)
		return cls(
			count=int(values["count"] or 0),
			error_count=int(values["error_count"] or 0),
			client_error_count=int(values.get("client_error_count") or 0),
			duration_min_ms=float(values["duration_min_ms"]) if values["count"] else math.inf,
			duration_max_ms=float(values["duration_max_ms"] or 0),
			duration_sum_ms=float(values["duration_sum_ms"] or 0),
			query_sum=int(values["query_sum"] or 0),
			query_max=int(values["query_max"] or 0),
			db_time_sum_ms=float(values["db_time_sum_ms"] or 0),
			memory_max_mb=float(values["memory_max_mb"] or 0),
			bins=bins,
		)


StoredBins = tuple[int, int, np.ndarray]  # zero count, first key, counts from that key on
# keys of room kept on each side when the bins are made or grown: the array covers what was added
# (a rollup holds thousands of summaries at once, so no more than that), and merging a sketch with a
# slightly wider range seldom has to grow it again
_SLACK_KEYS = 32


def decode_stored(text: str) -> StoredBins:
	"""A stored sketch's bins, without building a DDSketch."""
	raw = zlib.decompress(binascii.a2b_base64(text))
	version = raw[0]
	if version == _FORMAT:
		_version, width, zero_count, min_key = struct.unpack_from(_HEADER_V2, raw)
		dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32}[width]
		return zero_count, min_key, np.frombuffer(raw, dtype=dtype, offset=_HEADER_V2_SIZE)
	if version == 1:
		_version, zero_count, min_key = struct.unpack_from(_HEADER_V1, raw)
		return zero_count, min_key, np.frombuffer(raw, dtype=np.uint32, offset=_HEADER_V1_SIZE)
	raise ValueError(f"sketch: unknown stored format {version}")


_HEADER_V1_SIZE = struct.calcsize(_HEADER_V1)
_HEADER_V2_SIZE = struct.calcsize(_HEADER_V2)


class StoredSketchMerger:
	"""Merges stored sketches bin by bin without building a DDSketch for each (the health check and
	the dashboard merge thousands per answer); the result equals merging them with DDSketch.merge."""

	__slots__ = ("bins", "first_key", "zero_count")

	def __init__(self) -> None:
		self.bins: np.ndarray | None = None
		self.first_key = 0
		self.zero_count = 0

	def add(self, stored: str | StoredBins | None) -> None:
		"""Add a stored sketch: its text, or its bins from `decode_stored`."""
		if not stored:
			return
		zero_count, min_key, counts = decode_stored(stored) if isinstance(stored, str) else stored
		self.zero_count += zero_count
		if len(counts):
			start = self._room(min_key, min_key + len(counts))
			self.bins[start : start + len(counts)] += counts

	def add_keys(self, keys: list[int]) -> None:
		"""Count one value at each key."""
		self.add_key_array(np.asarray(keys, dtype=np.int64))

	def add_key_array(self, keys: np.ndarray) -> None:
		"""Count one value at each key (an integer array)."""
		if not keys.size:
			return
		low = int(keys.min())
		counts = np.bincount(keys - low)
		start = self._room(low, low + len(counts))
		self.bins[start : start + len(counts)] += counts

	def add_counts(self, keys: np.ndarray, counts: np.ndarray) -> None:
		"""Count `counts[i]` values at `keys[i]` (keys ascending and distinct, as `bin_by_group` gives)."""
		if not keys.size:
			return
		low = int(keys[0])
		start = self._room(low, int(keys[-1]) + 1)
		self.bins[start + (keys - low)] += counts

	def total(self) -> int:
		"""The number of values, zeros included."""
		return (int(self.bins.sum()) if self.bins is not None else 0) + self.zero_count

	def dumps(self) -> str:
		"""Stored as `dumps` stores a DDSketch with the same bins."""
		if self.bins is not None and (nonzero := np.flatnonzero(self.bins)).size:
			low, high = int(nonzero[0]), int(nonzero[-1])
			counts = self.bins[low : high + 1]
			return _encode(counts, self.first_key + low, self.zero_count)
		return _encode(np.zeros(0, dtype=np.int64), 0, self.zero_count)

	def merge(self, other: StoredSketchMerger) -> None:
		if other.bins is not None:
			self.add((other.zero_count, other.first_key, other.bins))
		else:
			self.zero_count += other.zero_count

	def _room(self, low_key: int, high_key: int) -> int:
		"""Make the array cover keys [low_key, high_key); the index of low_key."""
		if self.bins is None:
			self.first_key = low_key - _SLACK_KEYS
			self.bins = np.zeros(high_key - low_key + 2 * _SLACK_KEYS, dtype=np.int64)
		last_key = self.first_key + len(self.bins)
		if low_key < self.first_key or high_key > last_key:
			new_first = min(low_key - _SLACK_KEYS, self.first_key)
			new_last = max(high_key + _SLACK_KEYS, last_key)
			grown = np.zeros(new_last - new_first, dtype=np.int64)
			grown[self.first_key - new_first : self.first_key - new_first + len(self.bins)] = self.bins
			self.bins, self.first_key = grown, new_first
		return low_key - self.first_key

	def quantiles(self, qs: tuple[float, ...], minimum: float, maximum: float) -> list[float]:
		"""Exactly what `Summary.quantiles` reads from the merged sketch, straight from the bins (the
		occupied ones: the array keeps room for keys no value has reached)."""
		occupied = np.flatnonzero(self.bins) if self.bins is not None else ()
		if not len(occupied):
			# only zeros (or nothing): every rank reads 0, kept inside the extremes
			return [min(max(0.0, minimum), maximum) for _ in qs]
		low, high = int(occupied[0]), int(occupied[-1])
		cumulative = np.cumsum(self.bins[low : high + 1])
		total = int(cumulative[-1]) + self.zero_count
		ranks = [q * (total - 1) - self.zero_count for q in qs]
		indices = np.searchsorted(cumulative, ranks, side="right").tolist()
		results = []
		for rank, index in zip(ranks, indices, strict=True):
			value = _MAPPING.value(self.first_key + low + min(index, high - low)) if rank >= 0 else 0.0
			results.append(min(max(value, minimum), maximum))
		return results

	def counts_at_most(self, bounds: tuple[float, ...]) -> list[int]:
		"""For each bound (ascending), how many values lie at or below it: every value of a bin whose
		key is at most the bound's key, zeros included. A value within the sketch's relative accuracy
		of a bound may be counted on either side of it: that is the histogram's resolution."""
		if self.bins is None:
			return [self.zero_count for _ in bounds]
		cumulative = np.cumsum(self.bins)
		counts = []
		for bound in bounds:
			index = _MAPPING.key(bound) - self.first_key if bound > _MAPPING.min_possible else -1
			below = 0 if index < 0 else int(cumulative[min(index, len(cumulative) - 1)])
			counts.append(below + self.zero_count)
		return counts

	def sketch(self) -> DDSketch:
		"""The same values as a DDSketch, built through ddsketch's public constructors."""
		store = DenseStore()
		if self.bins is not None:
			for index in np.flatnonzero(self.bins):
				store.add(self.first_key + int(index), float(self.bins[index]))
		return BaseDDSketch(
			mapping=LogarithmicMapping(RELATIVE_ACCURACY),
			store=store,
			negative_store=DenseStore(),
			zero_count=float(self.zero_count),
		)
