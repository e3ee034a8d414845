# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceAlert(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		acknowledged_at: DF.Datetime | None
		acknowledged_by: DF.Link | None
		fingerprint: DF.Data | None
		fired_at: DF.Datetime | None
		inhibited: DF.Check
		instance: DF.Data | None
		labels: DF.Code | None
		last_evaluated: DF.Datetime | None
		last_notified_at: DF.Datetime | None
		note: DF.SmallText | None
		notified_state: DF.Data | None
		open_key: DF.Data | None
		resolved_at: DF.Datetime | None
		rule: DF.Link | None
		severity: DF.Literal["warning", "critical"]
		silenced: DF.Check
		started_at: DF.Datetime | None
		state: DF.Literal["pending", "firing", "resolved"]
		summary: DF.Data | None
		value: DF.Float
	# end: auto-generated types
	"""An alert, written by the evaluation job only (alerts/evaluate.py); `open_key` (its fingerprint
	while not resolved) is unique, so two evaluations at once never open a second record."""
