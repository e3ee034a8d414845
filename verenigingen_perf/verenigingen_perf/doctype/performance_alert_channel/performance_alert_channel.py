# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceAlertChannel(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		channel_name: DF.Data
		channel_type: DF.Literal["desk", "email", "webhook"]
		enabled: DF.Check
		max_attempts: DF.Int
		recipients: DF.SmallText | None
		role: DF.Link | None
		secret: DF.Password | None
		timeout_s: DF.Int
		url: DF.Data | None
		webhook_format: DF.Literal["generic", "slack", "pagerduty"]
	# end: auto-generated types
	"""A notification channel; checked on save (alerts/store.py)."""

	def validate(self) -> None:
		from verenigingen_perf.utils.performance.alerts import store

		store.validate_channel_document(self)
