"""Measurements and aggregates of version 0.2 get this version's operation types and statuses.

0.2 had one type, `request`, for every HTTP request and counted every HTTP error as an error. Now a
request is an `api` call or a `page` load, an HTTP 4xx is a `client_error`, and an aggregate row is
identified by its type as well (its name changes). Old aggregates cannot tell 4xx from 5xx any
more; their client error count stays 0. Overrides saved under renamed settings move too."""

import frappe

from verenigingen_perf.utils.performance import operations, rollup
from verenigingen_perf.utils.performance.config import RENAMED_SETTINGS
from verenigingen_perf.utils.performance.schema import (
	AGGREGATE,
	ALL_OPERATIONS,
	API,
	JOB,
	METRIC,
	PAGE,
	SETTINGS,
)
from verenigingen_perf.utils.performance.sketch import Summary
from verenigingen_perf.utils.performance.timeutil import as_datetime

CHUNK = 1000


def execute() -> None:
	for old, new in RENAMED_SETTINGS.items():
		frappe.db.sql("update `tabSingles` set field=%s where doctype=%s and field=%s", (new, SETTINGS, old))
	known = _types_of_detail_rows()
	frappe.db.sql(
		f"update `tab{METRIC}` set status='client_error' where status='error' and http_status between 400 and 499"
	)
	for operation in [op for op, kind in known.items() if kind == "request"]:
		kind = PAGE if operations.is_page_name(operation) else API
		frappe.db.sql(
			f"update `tab{METRIC}` set operation_type=%s where operation_type='request' and operation=%s",
			(kind, operation),
		)
		known[operation] = kind
	frappe.db.commit()
	_retype_aggregates(known)
	rollup.backfill_site_wide()


def _types_of_detail_rows() -> dict[str, str]:
	return dict(frappe.db.sql(f"select operation, max(operation_type) from `tab{METRIC}` group by operation"))


def _type_of(operation: str, known: dict[str, str]) -> str:
	kind = known.get(operation)
	if kind in (API, PAGE, JOB, "custom"):
		return kind
	if operations.is_page_name(operation):
		return PAGE
	# a dotted path with no detail row left: whitelisted methods outnumber jobs
	return API


def _retype_aggregates(known: dict[str, str]) -> None:
	# the site-wide rows of 0.2 merged every type; they are rebuilt per type by the backfill
	frappe.db.sql(
		f"delete from `tab{AGGREGATE}` where operation=%s and (operation_type is null or operation_type='')",
		(ALL_OPERATIONS,),
	)
	while rows := frappe.get_all(
		AGGREGATE,
		filters={"operation_type": ("is", "not set")},
		fields=["name", *rollup.AGGREGATE_COLUMNS],
		limit=CHUNK,
	):
		for granularity in ("hour", "day"):
			summaries = {
				(
					_type_of(row.operation, known),
					row.operation,
					as_datetime(row.period_start),
				): Summary.from_values(row)
				for row in rows
				if row.granularity == granularity
			}
			frappe.db.delete(
				AGGREGATE, {"name": ("in", [r.name for r in rows if r.granularity == granularity])}
			)
			rollup.merge_into_aggregates(granularity, summaries)
		frappe.db.commit()
