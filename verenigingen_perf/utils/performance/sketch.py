"""Mergeable duration distributions (DDSketch) and the per-bucket summary built on them. Pure Python.

Percentiles are read from sketches, and sketches are merged, never averaged: a daily p99 is the p99 of
the merged hourly sketches, within the sketch's relative accuracy of the exact value.
"""

from __future__ import annotations

import base64
import math
import zlib
from dataclasses import dataclass, field

from ddsketch import DDSketch
from ddsketch.pb.ddsketch_pb2 import DDSketch as DDSketchMessage
from ddsketch.pb.proto import DDSketchProto

# part of the stored format, not a tunable threshold: sketches only merge at the same accuracy
RELATIVE_ACCURACY = 0.01
QUANTILES = {"p50_ms": 0.50, "p90_ms": 0.90, "p95_ms": 0.95, "p99_ms": 0.99}


def new_sketch() -> DDSketch:
	return DDSketch(RELATIVE_ACCURACY)


def dumps(sketch: DDSketch) -> str:
	"""Protobuf (DDSketch's own format), zlib, base64: a few hundred bytes for an hour of one operation."""
	return base64.b64encode(zlib.compress(DDSketchProto.to_proto(sketch).SerializeToString(), 9)).decode()


def loads(text: str) -> DDSketch:
	message = DDSketchMessage()
	message.ParseFromString(zlib.decompress(base64.b64decode(text)))
	return DDSketchProto.from_proto(message)


@dataclass
class Summary:
	"""Everything an aggregate row holds, for one operation and period; merges with another exactly
	(counts, sums, extremes) or within the sketch's accuracy (percentiles)."""

	count: int = 0
	error_count: int = 0
	duration_min_ms: float = math.inf
	duration_max_ms: float = 0.0
	duration_sum_ms: float = 0.0
	query_sum: int = 0
	query_max: int = 0
	db_time_sum_ms: float = 0.0
	memory_max_mb: float = 0.0
	sketch: DDSketch = field(default_factory=new_sketch)

	def add(
		self, duration_ms: float, is_error: bool, queries: int, db_time_ms: float, memory_mb: float
	) -> None:
		self.count += 1
		self.error_count += is_error
		self.duration_min_ms = min(self.duration_min_ms, duration_ms)
		self.duration_max_ms = max(self.duration_max_ms, duration_ms)
		self.duration_sum_ms += duration_ms
		self.query_sum += queries
		self.query_max = max(self.query_max, queries)
		self.db_time_sum_ms += db_time_ms
		self.memory_max_mb = max(self.memory_max_mb, memory_mb)
		self.sketch.add(duration_ms)

	def merge(self, other: Summary) -> None:
		if not other.count:
			return
		self.count += other.count
		self.error_count += other.error_count
		self.duration_min_ms = min(self.duration_min_ms, other.duration_min_ms)
		self.duration_max_ms = max(self.duration_max_ms, other.duration_max_ms)
		self.duration_sum_ms += other.duration_sum_ms
		self.query_sum += other.query_sum
		self.query_max = max(self.query_max, other.query_max)
		self.db_time_sum_ms += other.db_time_sum_ms
		self.memory_max_mb = max(self.memory_max_mb, other.memory_max_mb)
		self.sketch.merge(other.sketch)

	def quantile(self, q: float) -> float:
		value = self.sketch.get_quantile_value(q) if self.count else None
		if value is None:
			return 0.0
		# the sketch's bucket midpoint may fall outside the exact extremes; keep it inside them
		return min(max(value, self.duration_min_ms), self.duration_max_ms)

	def as_values(self) -> dict:
		values = {
			"count": self.count,
			"error_count": self.error_count,
			"duration_min_ms": self.duration_min_ms if self.count else 0.0,
			"duration_max_ms": self.duration_max_ms,
			"duration_sum_ms": self.duration_sum_ms,
			"duration_mean_ms": self.duration_sum_ms / self.count if self.count else 0.0,
			"query_sum": self.query_sum,
			"query_mean": self.query_sum / self.count if self.count else 0.0,
			"query_max": self.query_max,
			"db_time_sum_ms": self.db_time_sum_ms,
			"memory_max_mb": self.memory_max_mb,
			"sketch": dumps(self.sketch),
		}
		values.update({column: self.quantile(q) for column, q in QUANTILES.items()})
		return values

	@classmethod
	def from_values(cls, values: dict) -> Summary:
		return cls(
			count=int(values["count"] or 0),
			error_count=int(values["error_count"] or 0),
			duration_min_ms=float(values["duration_min_ms"]) if values["count"] else math.inf,
			duration_max_ms=float(values["duration_max_ms"] or 0),
			duration_sum_ms=float(values["duration_sum_ms"] or 0),
			query_sum=int(values["query_sum"] or 0),
			query_max=int(values["query_max"] or 0),
			db_time_sum_ms=float(values["db_time_sum_ms"] or 0),
			memory_max_mb=float(values["memory_max_mb"] or 0),
			sketch=loads(values["sketch"]) if values.get("sketch") else new_sketch(),
		)
