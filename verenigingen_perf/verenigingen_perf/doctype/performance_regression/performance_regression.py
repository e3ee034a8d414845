# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceRegression(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		acknowledged_at: DF.Datetime | None
		acknowledged_by: DF.Link | None
		after_value: DF.Float
		back_within_since: DF.Datetime | None
		baseline_kind: DF.Literal["rolling", "pinned"]
		baseline_period_end: DF.Datetime | None
		baseline_period_start: DF.Datetime | None
		baseline_pin: DF.Data | None
		baseline_samples: DF.Int
		before_value: DF.Float
		change_value: DF.Float
		first_detected: DF.Datetime | None
		folded_anomalies: DF.Int
		last_confirmed: DF.Datetime | None
		level_value: DF.Float
		metric: DF.Literal["duration_p50", "duration_p95", "duration_p99", "statements", "error_rate"]
		note: DF.SmallText | None
		open_key: DF.Data | None
		operation: DF.Data
		operation_type: DF.Literal["api", "page", "job", "custom"]
		p_value: DF.Float
		resolved_at: DF.Datetime | None
		status: DF.Literal["open", "acknowledged", "resolved"]
		superseded_by: DF.Link | None
		test_statistic: DF.Float
		window_samples: DF.Int
	# end: auto-generated types
	"""A regression found by the detection job (detection/regressions.py); `open_key` is unique while
	the record is open or acknowledged, so two evaluations can never open a second one."""
