"""What it costs, measured, to open one member record in the desk, and what to do about it.

`measure_member_performance` loads the record with the desk's own form loader
(`frappe.desk.form.load.getdoc`: the document, its child tables, onload, the form's side information
and the titles of the records its links show) while recording every SQL statement. The load runs
inside a savepoint that is rolled back, so measuring writes nothing (the desk would log the view).
A first, unmeasured load warms the schema and permission caches, so the figures are those of a user
opening the form on a running site; the measured load then starts from empty per-request caches (the
value cache of `get_value` and the request's copy of cached values are emptied explicitly, whatever a
rollback does to them), as a new request does.

Statement shapes (see statements.py): a statement with its literals and parameters replaced by `?`.
A shape repeated at least `n_plus_one_min_repeats` times is an N+1 pattern.

The shape and judging functions are pure Python; the measuring ones use Frappe.
"""

from __future__ import annotations

import math
import re
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from verenigingen_perf.utils.performance.config import PerformanceConfig
from verenigingen_perf.utils.performance.levels import CRITICAL, HEALTHY, WARNING, value_level
from verenigingen_perf.utils.performance.statements import (
	ShapeFigures,
	group_shapes,
	recorded_statements,
	statement_shape,
)

_LEVEL_ORDER = {HEALTHY: 0, WARNING: 1, CRITICAL: 2}


class MemberAnalysisError(ValueError):
	"""A member analysis cannot run: the message names the argument and the problem."""


# --- pure ------------------------------------------------------------------------------------------


@dataclass
class Recommendation:
	kind: str
	level: str
	shape: str | None
	measured: float
	threshold: float
	advice: str


@dataclass
class MemberMeasurement:
	doctype: str
	member: str
	statements: int
	sql_ms: float
	wall_ms: float
	memory_peak_kb: float
	child_rows: int
	link_values: int
	shapes: list[ShapeFigures]
	repeated_shapes: list[ShapeFigures]
	recommendations: list[Recommendation] = field(default_factory=list)
	level: str = HEALTHY

	def as_dict(self) -> dict[str, Any]:
		return asdict(self)


def judge(measurement: MemberMeasurement, config: PerformanceConfig) -> MemberMeasurement:
	"""Recommendations from the measured figures and the configured thresholds; the overall level."""
	thresholds = config.thresholds
	repeats = config.analysis.n_plus_one_min_repeats
	recommendations = [
		Recommendation(
			"n_plus_one",
			WARNING,
			repeated.shape,
			repeated.count,
			repeats,
			f"This statement ran {repeated.count} times while loading one {measurement.doctype} "
			f"(an N+1 pattern; reported from {repeats} repeats): fetch the rows in one query, for "
			"example frappe.get_all with a 'name in' filter, or stop showing them per row.",
		)
		for repeated in measurement.repeated_shapes
	]
	slow_ms = config.monitoring.slow_query_ms
	recommendations += [
		Recommendation(
			"slow_statement",
			WARNING,
			figures.shape,
			figures.max_ms,
			slow_ms,
			f"One run of this statement took {figures.max_ms:.1f} ms (slow from {slow_ms:g} ms): look at "
			"its plan (EXPLAIN) and the indexes it can use.",
		)
		for figures in measurement.shapes
		if figures.max_ms > slow_ms
	]
	most_frequent = measurement.shapes[0].shape if measurement.shapes else None
	slowest = max(measurement.shapes, key=lambda f: f.total_ms).shape if measurement.shapes else None
	for kind, value, level, shape, advice in (
		(
			"statement_count",
			measurement.statements,
			thresholds.api_queries,
			most_frequent,
			"Loading the record runs {value:g} statements (warning at {threshold:g}); the most frequent "
			"shape is the first to batch.",
		),
		(
			"load_time",
			measurement.wall_ms,
			thresholds.api_response_ms,
			slowest,
			"Loading the record takes {value:.1f} ms (warning at {threshold:g} ms); this shape takes "
			"the most SQL time.",
		),
		(
			"memory",
			measurement.memory_peak_kb / 1024,
			thresholds.memory_mb,
			None,
			"Loading the record allocates {value:.1f} MB at its peak (warning at {threshold:g} MB).",
		),
	):
		judged = value_level(value, level)
		if judged != HEALTHY:
			recommendations.append(
				Recommendation(
					kind,
					judged,
					shape,
					round(value, 3),
					level.warning,
					advice.format(value=value, threshold=level.warning),
				)
			)
	measurement.recommendations = recommendations
	measurement.level = max((r.level for r in recommendations), key=_LEVEL_ORDER.__getitem__, default=HEALTHY)
	return measurement


# --- measuring (Frappe) ------------------------------------------------------------------------------


@contextmanager
def rolled_back() -> Iterator[None]:
	"""Run the block in a savepoint that is always rolled back, and keep the response untouched."""
	import frappe

	savepoint = f"vperf_measure_{frappe.generate_hash(length=8)}"
	response = frappe.local.response
	frappe.local.response = frappe._dict({"docs": []})
	frappe.db.savepoint(savepoint)
	try:
		yield
	finally:
		frappe.db.rollback(save_point=savepoint)
		frappe.local.response = response


def check_member(doctype: str, member: str) -> None:
	"""A clear error for a member that is not there (the caller has checked the doctype and the
	permission to read it)."""
	import frappe

	if not frappe.db.exists(doctype, member):
		raise MemberAnalysisError(f"member_name: no {doctype} named {member!r}")


def as_a_new_request() -> None:
	"""Empty the per-request caches a new request starts without: the value cache of `get_value`
	(which holds the titles of linked records) and the request's copy of values cached in Redis."""
	import frappe

	frappe.db.value_cache.clear()
	local_cache = getattr(frappe.local, "cache", None)
	if isinstance(local_cache, dict):
		local_cache.clear()


def _load_like_desk(doctype: str, member: str) -> Any:
	from frappe.desk.form.load import getdoc

	getdoc(doctype, member)
	import frappe

	docs = frappe.local.response.get("docs") or []
	return docs[0] if docs else None


def _count_children_and_links(doc: Any) -> tuple[int, int]:
	children = doc.get_all_children() if doc is not None else []
	links = 0
	for row in (doc, *children) if doc is not None else ():
		meta = row.meta
		links += sum(1 for df in meta.get_link_fields() if row.get(df.fieldname))
	return len(children), links


def measure_member_performance(
	member_name: str, config: PerformanceConfig, doctype: str | None = None
) -> MemberMeasurement:
	"""Load the member as the desk does, measured; nothing is written."""
	doctype = doctype or config.analysis.member_doctype
	check_member(doctype, member_name)
	with rolled_back():
		_load_like_desk(doctype, member_name)
	with rolled_back():
		as_a_new_request()
		with recorded_statements() as statements:
			started = time.perf_counter()
			doc = _load_like_desk(doctype, member_name)
			wall_ms = (time.perf_counter() - started) * 1000
	child_rows, link_values = _count_children_and_links(doc)
	memory_peak_kb = _allocation_peak_kb(doctype, member_name)
	shapes = group_shapes(statements)
	measurement = MemberMeasurement(
		doctype=doctype,
		member=member_name,
		statements=len(statements),
		sql_ms=round(sum(seconds for _q, seconds in statements) * 1000, 3),
		wall_ms=round(wall_ms, 3),
		memory_peak_kb=round(memory_peak_kb, 1),
		child_rows=child_rows,
		link_values=link_values,
		shapes=shapes,
		repeated_shapes=repeated_shapes(shapes, config),
	)
	return judge(measurement, config)


def repeated_shapes(shapes: list[ShapeFigures], config: PerformanceConfig) -> list[ShapeFigures]:
	"""The shapes run at least `n_plus_one_min_repeats` times while loading one record: N+1 patterns."""
	return [shape for shape in shapes if shape.count >= config.analysis.n_plus_one_min_repeats]


def _allocation_peak_kb(doctype: str, member: str) -> float:
	"""The peak of Python allocations during one more load (tracing slows it, so it is not timed)."""
	started_here = not tracemalloc.is_tracing()
	if started_here:
		tracemalloc.start()
	try:
		with rolled_back():
			as_a_new_request()
			baseline = tracemalloc.get_traced_memory()[0]
			tracemalloc.reset_peak()
			_load_like_desk(doctype, member)
		return max(0, tracemalloc.get_traced_memory()[1] - baseline) / 1024
	finally:
		if started_here:
			tracemalloc.stop()


# --- batches ---------------------------------------------------------------------------------------


def nearest_rank(values: list[float], q: float) -> float | None:
	"""The exact q-quantile of a small list (nearest rank)."""
	if not values:
		return None
	ordered = sorted(values)
	# rounded first, so that 0.95 * 20 is rank 19, not 20
	rank = max(1, math.ceil(round(q * len(ordered), 9)))
	return ordered[min(rank, len(ordered)) - 1]


def analyse_batch(
	member_names: list[str],
	config: PerformanceConfig,
	can_read: Callable[[str, str], bool],
	doctype: str | None = None,
) -> dict[str, Any]:
	"""Measure each member; a member that cannot be measured is a failure with its reason."""
	doctype = doctype or config.analysis.member_doctype
	results: list[dict[str, Any]] = []
	failures: list[dict[str, Any]] = []
	for name in member_names:
		# a missing member and one the caller may not read fail alike: no answer tells which exist
		if not can_read(doctype, name):
			failures.append({"member": name, "reason": not_readable_reason(doctype, name)})
			continue
		try:
			results.append(measure_member_performance(name, config, doctype).as_dict())
		except MemberAnalysisError as e:
			# the reason without the argument name: the member is named beside it
			failures.append({"member": name, "reason": str(e).split(": ", 1)[-1]})
	return {
		"doctype": doctype,
		"results": results,
		"failures": failures,
		"summary": batch_summary(results, failures),
	}


def not_readable_reason(doctype: str, member: str) -> str:
	from frappe import _

	return _("no {0} named {1} that you may read").format(doctype, repr(member))


def batch_summary(results: list[dict[str, Any]], failures: list[dict[str, Any]]) -> dict[str, Any]:
	statements = [float(r["statements"]) for r in results]
	times = [float(r["wall_ms"]) for r in results]
	attempted = len(results) + len(failures)
	levels = {HEALTHY: 0, WARNING: 0, CRITICAL: 0}
	for r in results:
		levels[r["level"]] += 1
	return {
		"requested": attempted,
		"succeeded": len(results),
		"failed": len(failures),
		"success_rate": round(len(results) / attempted, 4) if attempted else None,
		"statements_mean": round(sum(statements) / len(statements), 3) if statements else None,
		"statements_p95": nearest_rank(statements, 0.95),
		"wall_ms_mean": round(sum(times) / len(times), 3) if times else None,
		"wall_ms_p95": nearest_rank(times, 0.95),
		"levels": levels,
	}
