# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
from frappe.model.document import Document


class PerformanceBaseline(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		baseline_kind: DF.Literal["rolling", "pinned"]
		computed_at: DF.Datetime | None
		count_dispersion: DF.Float
		count_dispersion_per_level: DF.Float
		error_dispersion: DF.Float
		error_dispersion_per_level: DF.Float
		error_count: DF.Int
		error_rate: DF.Float
		error_rate_sd: DF.Float
		hours_with_data: DF.Int
		memory_max_mb: DF.Float
		operation: DF.Data
		operation_type: DF.Literal["api", "page", "job", "custom"]
		p50_day_spread: DF.Float
		p50_ms: DF.Float
		p95_day_spread: DF.Float
		p95_dispersion: DF.Float
		p95_dispersion_per_level: DF.Float
		p95_ms: DF.Float
		p99_day_spread: DF.Float
		p99_ms: DF.Float
		period_end: DF.Datetime | None
		period_start: DF.Datetime | None
		pin_name: DF.Data | None
		sample_count: DF.Int
		sketch: DF.LongText | None
		statements_mean: DF.Float
		statements_sd: DF.Float
		status: DF.Literal["ok", "insufficient data"]
	# end: auto-generated types
	"""An operation's baseline, written by the detection job (rolling) or by pin_baseline (pinned);
	named after (kind, pin, operation type, operation), so one row exists per baseline."""


def on_doctype_update() -> None:
	frappe.db.add_index("Performance Baseline", ["baseline_kind", "pin_name", "operation"])
