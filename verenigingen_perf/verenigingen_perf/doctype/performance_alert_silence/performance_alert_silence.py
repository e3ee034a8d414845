# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceAlertSilence(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		ends_at: DF.Datetime
		matchers: DF.SmallText
		reason: DF.Data
		starts_at: DF.Datetime
	# end: auto-generated types
	"""A silence; checked on save (alerts/store.py)."""

	def validate(self) -> None:
		from verenigingen_perf.utils.performance.alerts import store

		store.validate_silence_document(self)
