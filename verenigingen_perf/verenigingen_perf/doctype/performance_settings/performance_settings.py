# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
from frappe import _
from frappe.model.document import Document

from verenigingen_perf.utils.performance import config, dashboard


class PerformanceSettings(Document):
	def validate(self) -> None:
		overrides = {key: self.get(key) for key in config.SETTINGS}
		try:
			environment, _source = config.detect_environment(
				self.environment, *config.environment_fallbacks()
			)
			clean = config.validate_overrides(environment, overrides)
		except config.ConfigValidationError as e:
			frappe.throw(
				e.errors, title=_("Invalid performance settings"), exc=frappe.ValidationError, as_list=True
			)
		if "member_doctype" in clean and (problem := config.validate_member_doctype(clean["member_doctype"])):
			frappe.throw(problem, title=_("Invalid performance settings"), exc=frappe.ValidationError)
		# store the normalised form, so "0.50" and "0.5" are one value
		for key in config.SETTINGS:
			self.set(key, config.to_field_value(config.SETTINGS[key], clean.get(key)))
		self.flags.clean_overrides = clean

	def on_update(self) -> None:
		# both caches are replaced only once this save is committed (a rollback keeps the old ones)
		config.settings_saved_in_this_transaction(self.environment or None, self.flags.clean_overrides or {})
		# the cached dashboard was judged against the old thresholds
		frappe.db.after_commit.add(dashboard.clear_dashboard_cache)
