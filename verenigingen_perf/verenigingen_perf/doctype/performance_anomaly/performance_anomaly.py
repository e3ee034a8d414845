# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
from frappe.model.document import Document


class PerformanceAnomaly(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		detected_at: DF.Datetime | None
		direction: DF.Literal["high", "low"]
		expected: DF.Float
		history: DF.Literal["same hour of the week", "recent hours"]
		history_size: DF.Int
		metric: DF.Literal["count", "error_rate", "p95_ms"]
		operation: DF.Data
		operation_type: DF.Literal["api", "page", "job", "custom"]
		period_start: DF.Datetime | None
		samples: DF.Int
		score: DF.Float
		value: DF.Float
	# end: auto-generated types
	"""An anomalous hour found by the detection job; named after (operation type, operation, metric,
	hour), so an hour is recorded once however often it is evaluated."""


def on_doctype_update() -> None:
	frappe.db.add_index("Performance Anomaly", ["period_start", "operation"])
