# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceMonitorSample(Document):
	"""One minute of the monitor's own signals, written by the drain job only (monitoring.py)."""
