# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from typing import NoReturn

import frappe
from frappe import _
from frappe.model.document import Document

from verenigingen_perf.utils.performance import config, dashboard
from verenigingen_perf.utils.performance.export import otlp
from verenigingen_perf.utils.performance.messages import translated


class PerformanceSettings(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		aggregation_delay_minutes: DF.Int
		aggregation_page_size: DF.Int
		alert_group_interval_minutes: DF.Int
		alert_group_wait_s: DF.Int
		alert_repeat_interval_minutes: DF.Int
		alert_retry_base_s: DF.Int
		alert_webhook_refuse_private_addresses: DF.Check
		anomaly_min_history: DF.Int
		anomaly_min_samples: DF.Int
		anomaly_recent_hours: DF.Int
		anomaly_weeks: DF.Int
		anomaly_z: DF.Float
		api_queries_critical: DF.Float
		api_queries_warning: DF.Float
		api_response_critical_ms: DF.Float
		api_response_warning_ms: DF.Float
		baseline_min_samples: DF.Int
		baseline_window_days: DF.Int
		batch_max_members: DF.Int
		buffer_max_entries: DF.Int
		capture_memory_peak: DF.Check
		config_cache_ttl_s: DF.Int
		config_refresh_s: DF.Int
		context_max_chars: DF.Int
		daily_retention_days: DF.Int
		dashboard_cache_ttl_s: DF.Int
		db_cache_hit_critical: DF.Float
		db_cache_hit_warning: DF.Float
		db_cache_sample_s: DF.Float
		db_fragmentation_min_mb: DF.Float
		db_fragmentation_ratio: DF.Float
		db_growth_min_mb: DF.Float
		db_growth_ratio: DF.Float
		db_long_running_s: DF.Float
		db_max_statements: DF.Int
		db_max_tables: DF.Int
		db_min_executions: DF.Int
		db_scan_ratio: DF.Float
		db_snapshot_retention_days: DF.Int
		db_unused_index_min_hours: DF.Float
		db_unused_index_min_mb: DF.Float
		delete_batch_size: DF.Int
		desk_refresh_s: DF.Int
		desk_slow_rows: DF.Int
		desk_slow_rows_hours: DF.Int
		desk_trace_max_spans: DF.Int
		detail_retention_days: DF.Int
		detection_report_hours: DF.Int
		drain_batch_size: DF.Int
		drain_claim_timeout_s: DF.Int
		environment: DF.Literal["", "development", "staging", "production"]
		error_rate_critical: DF.Float
		error_rate_warning: DF.Float
		excluded_paths: DF.SmallText | None
		flush_interval_ms: DF.Int
		health_critical: DF.Float
		health_warning: DF.Float
		health_window_hours: DF.Int
		heartbeat_token: DF.Password | None
		hourly_retention_days: DF.Int
		job_duration_critical_ms: DF.Float
		job_duration_warning_ms: DF.Float
		job_lag_critical_s: DF.Float
		job_lag_warning_s: DF.Float
		job_lock_timeout_s: DF.Int
		max_operations_per_hour: DF.Int
		member_doctype: DF.Data | None
		memory_critical_mb: DF.Float
		memory_warning_mb: DF.Float
		metrics_token: DF.Password | None
		monitoring_enabled: DF.Check
		n_plus_one_min_repeats: DF.Int
		otlp_backlog_max: DF.Int
		otlp_batch_size: DF.Int
		otlp_enabled: DF.Check
		otlp_endpoint: DF.Data | None
		otlp_headers: DF.Password | None
		otlp_timeout_s: DF.Int
		overridden_settings: DF.SmallText | None
		page_load_critical_ms: DF.Float
		page_load_warning_ms: DF.Float
		page_queries_critical: DF.Float
		page_queries_warning: DF.Float
		prometheus_buckets_ms: DF.SmallText | None
		prometheus_top_operations: DF.Int
		regression_alpha: DF.Float
		regression_error_rate_min_rise: DF.Float
		regression_min_replicates: DF.Int
		regression_min_samples: DF.Int
		regression_resolve_hours: DF.Int
		regression_statements_min_rise: DF.Float
		regression_threshold: DF.Float
		regression_use_pinned_baseline: DF.Check
		regression_window_hours: DF.Int
		rollup_fold_rows: DF.Int
		rollup_run_budget_s: DF.Int
		sampling_rate: DF.Float
		slow_query_ms: DF.Float
		slowest_operations: DF.Int

	# end: auto-generated types
	def onload(self) -> None:
		"""The form shows every setting's value in effect, and each environment's defaults (the form
		script shows a setting's default beside it and follows a change of environment)."""
		in_effect = _values_in_effect()
		if in_effect is not None:
			for key, value in in_effect.items():
				self.set(key, config.field_value(config.SETTINGS[key], value))
		self.set_onload(
			"defaults",
			{
				environment: {
					key: config.field_value(setting, config.ENVIRONMENT_DEFAULTS[environment][key])
					for key, setting in config.SETTINGS.items()
				}
				for environment in config.ENVIRONMENTS
			},
		)

	def validate(self) -> None:
		try:
			environment, _source = config.detect_environment(
				self.environment, *config.environment_fallbacks()
			)
		except config.ConfigValidationError as e:
			_refuse(e.errors)
		before = self.get_doc_before_save()
		overrides, errors = config.overrides_from_fields(
			{key: self.get(key) for key in config.SETTINGS},
			config.parse_overridden(self.get(config.OVERRIDDEN_FIELD)),
			stored={key: before.get(key) for key in config.SETTINGS} if before else {},
			shown=_values_in_effect() or {},
			defaults=config.ENVIRONMENT_DEFAULTS[environment],
		)
		if errors:
			_refuse(errors)
		try:
			clean = config.validate_overrides(environment, overrides)
		except config.ConfigValidationError as e:
			_refuse(e.errors)
		if "member_doctype" in clean and (problem := config.validate_member_doctype(clean["member_doctype"])):
			_refuse([problem])
		headers = self.get("otlp_headers")
		if headers and set(headers) != {"*"}:
			try:
				otlp.parse_headers(headers)
			except ValueError as e:
				_refuse([e.args[0] if e.args and isinstance(e.args[0], str) else str(e)])
		# every field holds the value in effect, normalised ("0.50" and "0.5" are one value)
		in_effect = {**config.ENVIRONMENT_DEFAULTS[environment], **clean}
		for key, setting in config.SETTINGS.items():
			self.set(key, config.field_value(setting, in_effect[key]))
		self.set(config.OVERRIDDEN_FIELD, config.format_overridden(clean))
		self.flags.clean_overrides = clean

	def on_update(self) -> None:
		# both caches are replaced only once this save is committed (a rollback keeps the old ones)
		config.settings_saved_in_this_transaction(self.environment or None, self.flags.clean_overrides or {})
		# the cached dashboard was judged against the old thresholds
		frappe.db.after_commit.add(dashboard.clear_dashboard_cache)


def _values_in_effect() -> dict | None:
	"""Every setting's value in effect as stored now (None when the stored settings are unusable,
	e.g. the site config names an unknown environment)."""
	try:
		return config.flat_values(config.load_config())
	except config.ConfigValidationError:
		return None


def _refuse(errors: list[str]) -> NoReturn:
	frappe.throw(
		[translated(error, _) for error in errors],
		title=_("Invalid performance settings"),
		exc=frappe.ValidationError,
		as_list=True,
	)
