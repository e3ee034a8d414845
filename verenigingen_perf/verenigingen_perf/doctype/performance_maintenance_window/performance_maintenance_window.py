# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceMaintenanceWindow(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		cron: DF.Data
		duration_minutes: DF.Int
		enabled: DF.Check
		matchers: DF.SmallText
		reason: DF.Data | None
		window_name: DF.Data
	# end: auto-generated types
	"""A recurring maintenance window; checked on save (alerts/store.py)."""

	def validate(self) -> None:
		from verenigingen_perf.utils.performance.alerts import store

		store.validate_window_document(self)
