"""The settings a site may override: each one's flat key (its Performance Settings field), where it
lands in the configuration and the range it must lie in, and the rules across settings."""

from __future__ import annotations

from typing import Any

from verenigingen_perf.utils.performance.config.model import Setting
from verenigingen_perf.utils.performance.config.parsers import parse_bounds, parse_url

# a batch analysis loads every member in one request: no configuration may raise it past this
BATCH_HARD_CAP = 50
# the exposition's size: operations with a series of their own
_MAX_TOP_OPERATIONS = 1000
# the largest size (MB) a database health threshold may name: a petabyte
_MAX_DB_MB = 1_000_000_000


def _s(key: str, section: str, *path: str, kind: type = float, **rules: Any) -> Setting:
	return Setting(key, section, tuple(path), kind, **rules)


_HOUR_MS = 3_600_000
_WEEK_S = 7 * 86_400
_DAY_S = 86_400


def _level(
	prefix: str, suffix: str, name: str, maximum: float, section: str = "thresholds", **rules: Any
) -> tuple[Setting, Setting]:
	return (
		_s(f"{prefix}_warning{suffix}", section, name, "warning", maximum=maximum, **rules),
		_s(f"{prefix}_critical{suffix}", section, name, "critical", maximum=maximum, **rules),
	)


SETTINGS: dict[str, Setting] = {
	s.key: s
	for s in (
		*_level("api_response", "_ms", "api_response_ms", _HOUR_MS, strictly_positive=True),
		*_level("api_queries", "", "api_queries", 1_000_000, strictly_positive=True),
		*_level("page_load", "_ms", "page_load_ms", _HOUR_MS, strictly_positive=True),
		*_level("page_queries", "", "page_queries", 1_000_000, strictly_positive=True),
		*_level("job_duration", "_ms", "job_duration_ms", 7 * 24 * _HOUR_MS, strictly_positive=True),
		*_level("memory", "_mb", "memory_mb", 1_048_576, strictly_positive=True),
		*_level("error_rate", "", "error_rate", 1),
		*_level("health", "", "health_score", 100),
		*_level("job_lag", "_s", "job_lag_s", _WEEK_S, strictly_positive=True),
		*_level("buffer_age", "_s", "buffer_age_s", _DAY_S, "meta", strictly_positive=True),
		*_level("loss_rate", "", "loss_rate", 1, "meta"),
		*_level(
			"capture_errors", "_per_min", "capture_errors_per_min", 1_000_000, "meta", strictly_positive=True
		),
		*_level("capture_cost", "_us", "capture_cost_us", 1_000_000, "meta", strictly_positive=True),
		*_level("rollup_backlog", "_h", "rollup_backlog_h", 24 * 365, "meta", strictly_positive=True),
		*_level("storage_days", "", "storage_days", 3650, "meta", strictly_positive=True),
		_s("storage_budget_mb", "meta", "storage_budget_mb", kind=int, maximum=100_000_000),
		_s("detail_retention_days", "retention", "detail_days", kind=int, minimum=1, maximum=3650),
		_s("hourly_retention_days", "retention", "hourly_days", kind=int, minimum=1, maximum=3650),
		_s("daily_retention_days", "retention", "daily_days", kind=int, minimum=1, maximum=7300),
		_s("aggregation_delay_minutes", "retention", "aggregation_delay_minutes", kind=int, maximum=1440),
		_s("delete_batch_size", "retention", "delete_batch_size", kind=int, minimum=1, maximum=100_000),
		_s(
			"aggregation_page_size",
			"retention",
			"aggregation_page_size",
			kind=int,
			minimum=100,
			maximum=1_000_000,
		),
		_s("job_lock_timeout_s", "retention", "job_lock_timeout_s", kind=int, minimum=60, maximum=_DAY_S),
		_s("rollup_run_budget_s", "retention", "rollup_run_budget_s", kind=int, minimum=1, maximum=_DAY_S),
		_s("rollup_fold_rows", "retention", "rollup_fold_rows", kind=int, minimum=1, maximum=10_000_000),
		_s("monitoring_enabled", "monitoring", "enabled", kind=bool),
		_s("sampling_rate", "monitoring", "sampling_rate", maximum=1),
		_s("capture_memory_peak", "monitoring", "capture_memory_peak", kind=bool),
		_s("slow_query_ms", "monitoring", "slow_query_ms", strictly_positive=True, maximum=_HOUR_MS),
		_s(
			"buffer_max_entries",
			"monitoring",
			"buffer_max_entries",
			kind=int,
			minimum=1,
			maximum=10_000_000,
		),
		_s("drain_batch_size", "monitoring", "drain_batch_size", kind=int, minimum=1, maximum=100_000),
		_s("dashboard_cache_ttl_s", "monitoring", "dashboard_cache_ttl_s", kind=int, maximum=_DAY_S),
		_s("excluded_paths", "monitoring", "excluded_paths", kind=tuple),
		# a detail row's context column holds 65,535 bytes, four per character at most
		_s("context_max_chars", "monitoring", "context_max_chars", kind=int, minimum=64, maximum=16_000),
		_s("flush_interval_ms", "monitoring", "flush_interval_ms", kind=int, minimum=10, maximum=60_000),
		_s("config_refresh_s", "monitoring", "config_refresh_s", kind=int, minimum=1, maximum=3600),
		_s("config_cache_ttl_s", "monitoring", "config_cache_ttl_s", kind=int, minimum=10, maximum=_DAY_S),
		_s(
			"drain_claim_timeout_s",
			"monitoring",
			"drain_claim_timeout_s",
			kind=int,
			minimum=10,
			maximum=_DAY_S,
		),
		_s(
			"max_operations_per_hour",
			"monitoring",
			"max_operations_per_hour",
			kind=int,
			minimum=10,
			maximum=100_000,
		),
		_s("health_window_hours", "analysis", "health_window_hours", kind=int, minimum=1, maximum=168),
		_s("slowest_operations", "analysis", "slowest_operations", kind=int, minimum=1, maximum=100),
		_s(
			"n_plus_one_min_repeats",
			"analysis",
			"n_plus_one_min_repeats",
			kind=int,
			minimum=2,
			maximum=10_000,
		),
		_s(
			"batch_max_members",
			"analysis",
			"batch_max_members",
			kind=int,
			minimum=1,
			maximum=BATCH_HARD_CAP,
		),
		_s("member_doctype", "analysis", "member_doctype", kind=str),
		_s("baseline_window_days", "detection", "baseline_window_days", kind=int, minimum=1, maximum=90),
		_s(
			"baseline_min_samples",
			"detection",
			"baseline_min_samples",
			kind=int,
			minimum=1,
			maximum=1_000_000_000,
		),
		_s(
			"regression_window_hours",
			"detection",
			"regression_window_hours",
			kind=int,
			minimum=1,
			maximum=168,
		),
		_s(
			"regression_min_samples",
			"detection",
			"regression_min_samples",
			kind=int,
			minimum=1,
			maximum=1_000_000_000,
		),
		_s(
			"regression_min_replicates",
			"detection",
			"regression_min_replicates",
			kind=int,
			minimum=2,
			maximum=90,
		),
		_s("regression_threshold", "detection", "regression_threshold", strictly_positive=True, maximum=100),
		_s("regression_alpha", "detection", "regression_alpha", strictly_positive=True, maximum=0.5),
		_s(
			"regression_statements_min_rise",
			"detection",
			"regression_statements_min_rise",
			strictly_positive=True,
			maximum=1_000_000,
		),
		_s(
			"regression_error_rate_min_rise",
			"detection",
			"regression_error_rate_min_rise",
			strictly_positive=True,
			maximum=1,
		),
		_s(
			"regression_resolve_hours",
			"detection",
			"regression_resolve_hours",
			kind=int,
			minimum=1,
			maximum=720,
		),
		_s("regression_use_pinned_baseline", "detection", "regression_use_pinned_baseline", kind=bool),
		_s("anomaly_weeks", "detection", "anomaly_weeks", kind=int, minimum=1, maximum=52),
		_s("anomaly_min_history", "detection", "anomaly_min_history", kind=int, minimum=2, maximum=52),
		_s("anomaly_recent_hours", "detection", "anomaly_recent_hours", kind=int, minimum=3, maximum=336),
		_s("anomaly_z", "detection", "anomaly_z", strictly_positive=True, maximum=1000),
		_s("anomaly_min_samples", "detection", "anomaly_min_samples", kind=int, minimum=1, maximum=1_000_000),
		_s("detection_report_hours", "detection", "detection_report_hours", kind=int, minimum=1, maximum=720),
		_s("alert_group_wait_s", "alerting", "group_wait_s", kind=int, maximum=3600),
		_s(
			"alert_group_interval_minutes",
			"alerting",
			"group_interval_minutes",
			kind=int,
			minimum=1,
			maximum=1440,
		),
		_s(
			"alert_repeat_interval_minutes",
			"alerting",
			"repeat_interval_minutes",
			kind=int,
			minimum=1,
			maximum=10_080,
		),
		_s("alert_retry_base_s", "alerting", "retry_base_s", kind=int, minimum=1, maximum=3600),
		_s(
			"alert_webhook_refuse_private_addresses",
			"alerting",
			"webhook_refuse_private_addresses",
			kind=bool,
		),
		_s("desk_refresh_s", "desk", "refresh_s", kind=int, minimum=5, maximum=3600),
		_s("desk_slow_rows", "desk", "slow_rows", kind=int, minimum=1, maximum=200),
		_s("desk_slow_rows_hours", "desk", "slow_rows_hours", kind=int, minimum=1, maximum=168),
		_s("desk_trace_max_spans", "desk", "trace_max_spans", kind=int, minimum=10, maximum=5000),
		_s(
			"prometheus_top_operations",
			"export",
			"prometheus_top_operations",
			kind=int,
			minimum=1,
			maximum=_MAX_TOP_OPERATIONS,
		),
		_s(
			"prometheus_buckets_ms",
			"export",
			"prometheus_buckets_ms",
			kind=tuple,
			parse=parse_bounds,
		),
		_s("otlp_enabled", "export", "otlp_enabled", kind=bool),
		_s("otlp_endpoint", "export", "otlp_endpoint", kind=str, parse=parse_url),
		_s("otlp_timeout_s", "export", "otlp_timeout_s", kind=int, minimum=1, maximum=300),
		_s("otlp_batch_size", "export", "otlp_batch_size", kind=int, minimum=1, maximum=10_000),
		_s("otlp_backlog_max", "export", "otlp_backlog_max", kind=int, minimum=1, maximum=10_000_000),
		_s("db_fragmentation_ratio", "database", "fragmentation_ratio", maximum=1),
		_s("db_fragmentation_min_mb", "database", "fragmentation_min_mb", maximum=_MAX_DB_MB),
		_s("db_scan_ratio", "database", "scan_ratio", strictly_positive=True, maximum=1_000_000_000),
		_s("db_min_executions", "database", "min_executions", kind=int, minimum=1, maximum=1_000_000_000),
		*_level("db_cache_hit", "", "cache_hit", 1, "database"),
		_s("db_growth_ratio", "database", "growth_ratio", strictly_positive=True, maximum=1_000_000),
		_s("db_growth_min_mb", "database", "growth_min_mb", maximum=_MAX_DB_MB),
		_s("db_unused_index_min_hours", "database", "unused_index_min_hours", maximum=24 * 3650),
		_s("db_unused_index_min_mb", "database", "unused_index_min_mb", maximum=_MAX_DB_MB),
		_s("db_long_running_s", "database", "long_running_s", strictly_positive=True, maximum=_DAY_S),
		_s("db_cache_sample_s", "database", "cache_sample_s", minimum=0.1, maximum=30),
		_s(
			"db_snapshot_retention_days",
			"database",
			"snapshot_retention_days",
			kind=int,
			minimum=1,
			maximum=3650,
		),
		_s("db_max_statements", "database", "max_statements", kind=int, minimum=1, maximum=5000),
		_s("db_max_tables", "database", "max_tables", kind=int, minimum=1, maximum=20_000),
	)
}

# (warning key, critical key, True when a higher value is better)
HIGHER_IS_BETTER = ("health", "storage_days", "db_cache_hit")
LEVEL_PAIRS: tuple[tuple[str, str, bool], ...] = tuple(
	(f"{prefix}_warning{suffix}", f"{prefix}_critical{suffix}", prefix in HIGHER_IS_BETTER)
	for prefix, suffix in (
		("api_response", "_ms"),
		("api_queries", ""),
		("page_load", "_ms"),
		("page_queries", ""),
		("job_duration", "_ms"),
		("memory", "_mb"),
		("error_rate", ""),
		("health", ""),
		("job_lag", "_s"),
		("buffer_age", "_s"),
		("loss_rate", ""),
		("capture_errors", "_per_min"),
		("capture_cost", "_us"),
		("rollup_backlog", "_h"),
		("storage_days", ""),
		("db_cache_hit", ""),
	)
)

# (shorter key, longer key): the second must keep data at least as long as the first
RETENTION_ORDER: tuple[tuple[str, str], ...] = (
	("detail_retention_days", "hourly_retention_days"),
	("hourly_retention_days", "daily_retention_days"),
)

# settings renamed since an earlier release: old Performance Settings field -> new one
RENAMED_SETTINGS = {"queries_warning": "api_queries_warning", "queries_critical": "api_queries_critical"}
