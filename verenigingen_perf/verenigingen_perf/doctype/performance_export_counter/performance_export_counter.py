# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceExportCounter(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		client_error_count: DF.Float
		count: DF.Float
		duration_sum_s: DF.Float
		error_count: DF.Float
		exposed: DF.Check
		operation: DF.Data
		operation_type: DF.Literal["api", "page", "job", "custom"]
		query_sum: DF.Float
		sketch: DF.LongText | None
		total_count: DF.Float
	# end: auto-generated types
	"""One operation's cumulative counters for the Prometheus exposition, written by the rollup only
	(export/counter_store.py); named after (operation type, operation)."""
