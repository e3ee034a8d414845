# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceRollupState(Document):
	"""Read-only in the desk; the rollup and retention jobs write its values directly."""
