# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
from frappe.model.document import Document


class PerformanceAggregate(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		client_error_count: DF.Int
		count: DF.Int
		db_time_sum_ms: DF.Float
		duration_max_ms: DF.Float
		duration_mean_ms: DF.Float
		duration_min_ms: DF.Float
		duration_sum_ms: DF.Float
		error_count: DF.Int
		granularity: DF.Literal["hour", "day"]
		memory_max_mb: DF.Float
		operation: DF.Data
		operation_type: DF.Literal["api", "page", "job", "custom"]
		p50_ms: DF.Float
		p90_ms: DF.Float
		p95_ms: DF.Float
		p99_ms: DF.Float
		period_start: DF.Datetime
		query_max: DF.Int
		query_mean: DF.Float
		query_sum: DF.Int
		sketch: DF.LongText | None
	# end: auto-generated types
	"""An hourly or daily aggregate, written by the rollup job only.

	Its name is derived from (granularity, period start, operation), so the primary key makes that
	triple unique on every backend."""


def on_doctype_update() -> None:
	frappe.db.add_index("Performance Aggregate", ["granularity", "period_start"])
	frappe.db.add_index("Performance Aggregate", ["operation", "granularity", "period_start"])
