# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceAlertRule(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		from verenigingen_perf.verenigingen_perf.doctype.performance_alert_rule_channel.performance_alert_rule_channel import (
			PerformanceAlertRuleChannel,
		)

		channels: DF.TableMultiSelect[PerformanceAlertRuleChannel]
		comparison: DF.Literal[">", ">=", "<", "<=", "level"]
		description: DF.SmallText | None
		enabled: DF.Check
		for_minutes: DF.Int
		group_by: DF.Data | None
		group_interval_minutes: DF.Int
		group_wait_s: DF.Int
		labels: DF.SmallText | None
		level: DF.Literal["warning", "critical"]
		metric: DF.Data | None
		operation: DF.Data | None
		repeat_interval_minutes: DF.Int
		rule_name: DF.Data
		severity: DF.Literal["warning", "critical"]
		source: DF.Literal["health", "operation", "monitor", "regressions", "anomalies", "database"]
		threshold: DF.Float
		window_minutes: DF.Int
	# end: auto-generated types
	"""An alert rule; its fields are checked by the same validation as a YAML import (alerts/rules.py)."""

	def validate(self) -> None:
		from verenigingen_perf.utils.performance.alerts import store

		store.validate_rule_document(self)
