"""One trace as the desk's trace view shows it: its spans (the request, the blocks measured inside it,
the jobs it enqueued and their own blocks) as a tree, each with its start offset for a waterfall.

A trace is read from the detail rows in one statement through the `trace_id` index. Spans still in the
buffer appear after the next drain; spans older than the detail retention are gone (the aggregates
keep no traces).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import frappe

from verenigingen_perf.utils.performance.schema import METRIC
from verenigingen_perf.utils.performance.timeutil import as_datetime, format_datetime

SPAN_FIELDS = [
	"name",
	"parent_span",
	"operation",
	"operation_type",
	"started_at",
	"duration_ms",
	"query_count",
	"db_time_ms",
	"status",
	"http_status",
	"error",
]


@dataclass(frozen=True)
class WaterfallSpan:
	span_id: str
	parent_span: str | None
	depth: int
	operation: str
	operation_type: str
	started_at: str
	offset_ms: float
	duration_ms: float
	query_count: int
	db_time_ms: float
	status: str
	http_status: int | None
	error: str | None
	# its parent is not among the trace's rows (not drained yet, sampled out, or deleted)
	orphan: bool


def waterfall(rows: Sequence[Mapping[str, Any]]) -> list[WaterfallSpan]:
	"""Depth-first, children by start time, each span after its parent; a span whose parent is
	missing is a root of its own, marked as an orphan. Pure: rows as the detail table holds them."""
	if not rows:
		return []
	started = {row["name"]: as_datetime(row["started_at"]) for row in rows}
	trace_start = min(started.values())
	children: dict[str | None, list[Mapping[str, Any]]] = defaultdict(list)
	for row in rows:
		parent = row.get("parent_span") or None
		children[parent if parent in started else None].append(row)
	for siblings in children.values():
		siblings.sort(key=lambda r: (started[r["name"]], r["name"]))

	ordered: list[WaterfallSpan] = []
	stack = [(row, 0) for row in reversed(children[None])]
	while stack:
		row, depth = stack.pop()
		parent = row.get("parent_span") or None
		ordered.append(
			WaterfallSpan(
				span_id=row["name"],
				parent_span=parent,
				depth=depth,
				operation=row["operation"],
				operation_type=row["operation_type"],
				started_at=format_datetime(started[row["name"]]),
				offset_ms=round((started[row["name"]] - trace_start).total_seconds() * 1000, 3),
				duration_ms=float(row["duration_ms"] or 0),
				query_count=int(row["query_count"] or 0),
				db_time_ms=float(row["db_time_ms"] or 0),
				status=row["status"],
				http_status=int(row["http_status"]) if row.get("http_status") else None,
				error=row.get("error") or None,
				orphan=parent is not None and parent not in started,
			)
		)
		stack.extend((child, depth + 1) for child in reversed(children[row["name"]]))
	return ordered


def trace_view(trace_id: str, max_spans: int, now: datetime | None = None) -> dict[str, Any]:
	rows = frappe.get_all(
		METRIC,
		filters={"trace_id": trace_id},
		fields=SPAN_FIELDS,
		order_by="started_at asc, name asc",
		limit=max_spans + 1,
	)
	truncated = len(rows) > max_spans
	spans = waterfall(rows[:max_spans])
	end_ms = max((s.offset_ms + s.duration_ms for s in spans), default=0.0)
	return {
		"trace_id": trace_id,
		"found": bool(spans),
		"spans": [asdict(s) for s in spans],
		"span_count": len(spans),
		"truncated": truncated,
		"max_spans": max_spans,
		"started_at": spans[0].started_at if spans else None,
		"total_ms": round(end_ms, 3),
		"statements": sum(s.query_count for s in spans),
		"generated_at": format_datetime(now or frappe.utils.now_datetime()),
	}
