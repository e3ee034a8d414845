"""The Performance Export Counter rows: folded into by the rollup, read by the exposition.

Two statements per folded hour (the exposed rows with those of the hour's operations, then one
upsert; more only past a thousand operations in one fold), and one per scrape, whatever the history."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import frappe

from verenigingen_perf.utils.performance.bulk import BulkWrite
from verenigingen_perf.utils.performance.config import PerformanceConfig
from verenigingen_perf.utils.performance.export import counters
from verenigingen_perf.utils.performance.schema import EXPORT_COUNTER, OVERFLOW_OPERATION
from verenigingen_perf.utils.performance.sketch import StoredSketchMerger, Summary

COLUMNS = (
	"operation_type",
	"operation",
	"exposed",
	"total_count",
	"count",
	"error_count",
	"client_error_count",
	"duration_sum_s",
	"query_sum",
	"sketch",
)
# names per statement: keeps a statement's parameters well inside SQLite's limit
_CHUNK = 1000


def counter_name(operation_type: str, operation: str) -> str:
	"""Deterministic, so the primary key keeps one row per (type, operation)."""
	return hashlib.sha1(f"{operation_type}\x1f{operation}".encode()).hexdigest()[:20]


def fold(summaries: Mapping[tuple[str, str, object], Summary], top: int) -> int:
	"""Add a fold's summaries (keyed by type, operation and started hour; the site-wide rows left
	out) to the counters, inside the caller's transaction. Returns the rows written."""
	folded = counters.merge_by_operation(((t, op), s) for (t, op, _hour), s in summaries.items())
	if not folded:
		return 0
	stored = _read(where_names=[counter_name(*key) for key in folded])
	changed = counters.fold(stored, folded, top, OVERFLOW_OPERATION)
	_upsert(list(changed.values()))
	return len(changed)


def fold_into_counters(
	summaries: Mapping[tuple[str, str, object], Summary], config: PerformanceConfig
) -> int:
	"""A rollup sink (hooks.py `vperf_rollup_sinks`): `fold` with the configured top operations."""
	return fold(summaries, config.export.prometheus_top_operations)


def exposed() -> list[counters.Counter]:
	"""Every row that has a series (one statement)."""
	return list(_read(where_names=[]).values())


def _read(where_names: list[str]) -> dict[counters.Key, counters.Counter]:
	columns = ", ".join(f"`{c}`" for c in COLUMNS)
	rows: list = []
	chunks = [where_names[i : i + _CHUNK] for i in range(0, len(where_names), _CHUNK)] or [[]]
	for number, chunk in enumerate(chunks):
		# the exposed rows come with the first chunk only
		conditions = ["exposed = 1"] if number == 0 else []
		if chunk:
			conditions.append(f"name in ({', '.join(['%s'] * len(chunk))})")
		rows += frappe.db.sql(
			f"select {columns} from `tab{EXPORT_COUNTER}` where {' or '.join(conditions)}", chunk
		)
	result = {}
	for (
		operation_type,
		operation,
		is_exposed,
		total,
		count,
		errors,
		client_errors,
		duration,
		queries,
		sketch,
	) in rows:
		bins = StoredSketchMerger()
		bins.add(sketch or None)
		counter = counters.Counter(
			operation_type=operation_type,
			operation=operation,
			exposed=bool(is_exposed),
			total_count=int(total or 0),
			count=int(count or 0),
			error_count=int(errors or 0),
			client_error_count=int(client_errors or 0),
			duration_sum_s=float(duration or 0),
			query_sum=int(queries or 0),
			bins=bins,
		)
		# a collation may equate names that differ: only the exact name is this row
		result.setdefault(counter.key, counter)
	return result


# a counter already stored gets its new figures (its creation and owner stay as first written)
_COUNTER_ROWS = BulkWrite(
	EXPORT_COUNTER,
	(
		("operation_type", "text"),
		("operation", "text"),
		("exposed", "integer"),
		("total_count", "float"),
		("count", "float"),
		("error_count", "float"),
		("client_error_count", "float"),
		("duration_sum_s", "float"),
		("query_sum", "float"),
		("sketch", "long text"),
	),
	update=COLUMNS,
)


def _upsert(rows: list[counters.Counter]) -> None:
	now = frappe.utils.now()
	_COUNTER_ROWS.write(
		[
			(
				counter_name(*c.key),
				now,
				c.operation_type,
				c.operation,
				int(c.exposed),
				c.total_count,
				c.count,
				c.error_count,
				c.client_error_count,
				c.duration_sum_s,
				c.query_sum,
				c.bins.dumps(),
			)
			for c in rows
		]
	)
