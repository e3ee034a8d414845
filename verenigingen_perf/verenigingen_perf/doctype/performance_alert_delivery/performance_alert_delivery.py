# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceAlertDelivery(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		alerts: DF.SmallText | None
		attempt: DF.Int
		channel: DF.Link | None
		claim: DF.Data | None
		error: DF.SmallText | None
		next_attempt_at: DF.Datetime | None
		notification: DF.Data | None
		notification_status: DF.Literal["firing", "resolved"]
		payload: DF.LongText | None
		response_code: DF.Int
		sent_at: DF.Datetime | None
		status: DF.Literal["queued", "sent", "failed", "gave up"]
	# end: auto-generated types
	"""One delivery attempt, written by the delivery jobs only (alerts/delivery.py)."""
