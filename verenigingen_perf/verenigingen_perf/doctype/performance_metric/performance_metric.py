# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
from frappe.model.document import Document


class PerformanceMetric(Document):
	"""A detail row, bulk-inserted by the buffer drain; no role may create or edit one in the desk."""

	@staticmethod
	def clear_old_logs(days: int = 7) -> int:
		"""Frappe's Log Settings convention. Deliberately not in `default_log_clearing_doctypes`: the
		app's retention job owns the schedule; this only ever deletes rows already aggregated."""
		from verenigingen_perf.utils.performance.retention import clear_old_detail_rows

		return clear_old_detail_rows(days)


def on_doctype_update() -> None:
	# the rollups and the retention job read by operation over a time range
	frappe.db.add_index("Performance Metric", ["operation", "started_at"])
	# the rollup reads by ingestion time (creation), the retention job deletes by it
	if not frappe.db.get_column_index("tabPerformance Metric", "creation", unique=False):
		frappe.db.add_index("Performance Metric", ["creation"])
