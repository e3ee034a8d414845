# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
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
				"<br>".join(e.errors), title="Invalid performance settings", exc=frappe.ValidationError
			)
		# store the normalised form, so "0.50" and "0.5" are one value
		for key in config.SETTINGS:
			self.set(key, config.to_field_value(config.SETTINGS[key], clean.get(key)))

	def on_update(self) -> None:
		config.clear_config_cache()
		# the cached dashboard was judged against the old thresholds
		dashboard.clear_dashboard_cache()
