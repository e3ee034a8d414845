# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
from frappe import _
from frappe.model.document import Document

from verenigingen_perf.utils.performance import config, dashboard
from verenigingen_perf.utils.performance.export import otlp


class PerformanceSettings(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		aggregation_delay_minutes: DF.Data | None
		aggregation_page_size: DF.Data | None
		alert_group_interval_minutes: DF.Data | None
		alert_group_wait_s: DF.Data | None
		alert_repeat_interval_minutes: DF.Data | None
		alert_retry_base_s: DF.Data | None
		alert_webhook_refuse_private_addresses: DF.Literal["", "Yes", "No"]
		anomaly_min_history: DF.Data | None
		anomaly_min_samples: DF.Data | None
		anomaly_recent_hours: DF.Data | None
		anomaly_weeks: DF.Data | None
		anomaly_z: DF.Data | None
		api_queries_critical: DF.Data | None
		api_queries_warning: DF.Data | None
		api_response_critical_ms: DF.Data | None
		api_response_warning_ms: DF.Data | None
		baseline_min_samples: DF.Data | None
		baseline_window_days: DF.Data | None
		batch_max_members: DF.Data | None
		buffer_max_entries: DF.Data | None
		capture_memory_peak: DF.Literal["", "Yes", "No"]
		config_cache_ttl_s: DF.Data | None
		config_refresh_s: DF.Data | None
		context_max_chars: DF.Data | None
		daily_retention_days: DF.Data | None
		dashboard_cache_ttl_s: DF.Data | None
		db_cache_hit_critical: DF.Data | None
		db_cache_hit_warning: DF.Data | None
		db_cache_sample_s: DF.Data | None
		db_fragmentation_min_mb: DF.Data | None
		db_fragmentation_ratio: DF.Data | None
		db_growth_min_mb: DF.Data | None
		db_growth_ratio: DF.Data | None
		db_long_running_s: DF.Data | None
		db_max_statements: DF.Data | None
		db_max_tables: DF.Data | None
		db_min_executions: DF.Data | None
		db_scan_ratio: DF.Data | None
		db_snapshot_retention_days: DF.Data | None
		db_unused_index_min_hours: DF.Data | None
		db_unused_index_min_mb: DF.Data | None
		delete_batch_size: DF.Data | None
		desk_refresh_s: DF.Data | None
		desk_slow_rows: DF.Data | None
		desk_slow_rows_hours: DF.Data | None
		desk_trace_max_spans: DF.Data | None
		detail_retention_days: DF.Data | None
		detection_report_hours: DF.Data | None
		drain_batch_size: DF.Data | None
		drain_claim_timeout_s: DF.Data | None
		environment: DF.Literal["", "development", "staging", "production"]
		error_rate_critical: DF.Data | None
		error_rate_warning: DF.Data | None
		excluded_paths: DF.SmallText | None
		flush_interval_ms: DF.Data | None
		health_critical: DF.Data | None
		health_warning: DF.Data | None
		health_window_hours: DF.Data | None
		heartbeat_token: DF.Password | None
		hourly_retention_days: DF.Data | None
		job_duration_critical_ms: DF.Data | None
		job_duration_warning_ms: DF.Data | None
		job_lag_critical_s: DF.Data | None
		job_lag_warning_s: DF.Data | None
		job_lock_timeout_s: DF.Data | None
		max_operations_per_hour: DF.Data | None
		member_doctype: DF.Data | None
		memory_critical_mb: DF.Data | None
		memory_warning_mb: DF.Data | None
		metrics_token: DF.Password | None
		monitoring_enabled: DF.Literal["", "Yes", "No"]
		n_plus_one_min_repeats: DF.Data | None
		otlp_backlog_max: DF.Data | None
		otlp_batch_size: DF.Data | None
		otlp_enabled: DF.Literal["", "Yes", "No"]
		otlp_endpoint: DF.Data | None
		otlp_headers: DF.Password | None
		otlp_timeout_s: DF.Data | None
		page_load_critical_ms: DF.Data | None
		page_load_warning_ms: DF.Data | None
		page_queries_critical: DF.Data | None
		page_queries_warning: DF.Data | None
		prometheus_buckets_ms: DF.SmallText | None
		prometheus_top_operations: DF.Data | None
		regression_alpha: DF.Data | None
		regression_error_rate_min_rise: DF.Data | None
		regression_min_replicates: DF.Data | None
		regression_min_samples: DF.Data | None
		regression_resolve_hours: DF.Data | None
		regression_statements_min_rise: DF.Data | None
		regression_threshold: DF.Data | None
		regression_use_pinned_baseline: DF.Literal["", "Yes", "No"]
		regression_window_hours: DF.Data | None
		rollup_fold_rows: DF.Data | None
		rollup_run_budget_s: DF.Data | None
		sampling_rate: DF.Data | None
		slow_query_ms: DF.Data | None
		slowest_operations: DF.Data | None

	# end: auto-generated types
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
		headers = self.get("otlp_headers")
		if headers and set(headers) != {"*"}:
			try:
				otlp.parse_headers(headers)
			except ValueError as e:
				frappe.throw(str(e), title=_("Invalid performance settings"), exc=frappe.ValidationError)
		# store the normalised form, so "0.50" and "0.5" are one value
		for key in config.SETTINGS:
			self.set(key, config.to_field_value(config.SETTINGS[key], clean.get(key)))
		self.flags.clean_overrides = clean

	def on_update(self) -> None:
		# both caches are replaced only once this save is committed (a rollback keeps the old ones)
		config.settings_saved_in_this_transaction(self.environment or None, self.flags.clean_overrides or {})
		# the cached dashboard was judged against the old thresholds
		frappe.db.after_commit.add(dashboard.clear_dashboard_cache)
