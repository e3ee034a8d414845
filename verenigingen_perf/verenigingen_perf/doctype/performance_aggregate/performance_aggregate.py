# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
from frappe.model.document import Document


class PerformanceAggregate(Document):
	"""An hourly or daily aggregate, written by the rollup job only.

	Its name is derived from (granularity, period start, operation), so the primary key makes that
	triple unique on every backend."""


def on_doctype_update() -> None:
	frappe.db.add_index("Performance Aggregate", ["granularity", "period_start"])
	frappe.db.add_index("Performance Aggregate", ["operation", "granularity", "period_start"])
