# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
from frappe.model.document import Document


class PerformanceMetric(Document):
	"""A detail row, bulk-inserted by the buffer drain; no role may create or edit one in the desk."""


def on_doctype_update() -> None:
	# the rollups and the retention job read by operation over a time range
	frappe.db.add_index("Performance Metric", ["operation", "started_at"])
