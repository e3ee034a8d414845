# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceRollupState(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		detected_until: DF.Datetime | None
		last_detection: DF.Code | None
		last_drain: DF.Code | None
		last_monitor: DF.Code | None
		last_retention: DF.Code | None
		last_rollup: DF.Code | None
		watermark: DF.Datetime | None
	# end: auto-generated types
	"""Read-only in the desk; the rollup and retention jobs write its values directly."""
