"""Each environment's defaults: what a site gets for every setting it does not override."""

from __future__ import annotations

from typing import Any

ENVIRONMENTS = ("development", "staging", "production")

# static files, health probes and the desk's realtime polling are not worth a row each
_EXCLUDED_PATHS = (
	"/assets/",
	"/files/",
	"/private/files/",
	"/socket.io/",
	"/favicon.ico",
	"/api/method/ping",
	"/api/method/frappe.realtime.",
	"/website_script.js",
	"/api/method/verenigingen_perf.api.monitoring.heartbeat",
	# a Prometheus scraping every 15 s is no work of the site's
	"/api/method/verenigingen_perf.api.export.metrics",
)

_CAPTURE_DEFAULTS = {
	"excluded_paths": _EXCLUDED_PATHS,
	"context_max_chars": 1000,
	"flush_interval_ms": 200,
	"config_refresh_s": 5,
	"config_cache_ttl_s": 300,
	"drain_claim_timeout_s": 300,
	"max_operations_per_hour": 500,
}

_META_DEFAULTS = {
	"storage_days_warning": 30,
	"storage_days_critical": 7,
	# no budget unless the site sets one: the signal then has no figure
	"storage_budget_mb": 0,
}

_ANALYSIS_DEFAULTS = {
	"health_window_hours": 1,
	"slowest_operations": 5,
	"batch_max_members": 10,
	"member_doctype": "Member",
}

# Detection: the seed's rolling week; 100 measurements before a percentile means anything; a 3-hour
# window finds a +20% regression of a 200-requests-an-hour operation within it; a 10% threshold (5%
# before) because a busy operation's p50 moves 8-10% on a deploy's small change plus a week's drift,
# chosen on the hard generator's seeds 1-2 (benchmarks/detection.py) and reported on other seeds and
# on the simple generator; three days of the window's hours before they replace the whole baseline;
# alpha 0.001 per test; the modified z-score's usual 3.5 (Iglewicz and Hoaglin) on four weeks of history
_DETECTION_DEFAULTS = {
	"baseline_window_days": 7,
	"baseline_min_samples": 100,
	"regression_window_hours": 3,
	"regression_min_samples": 30,
	"regression_min_replicates": 3,
	"regression_threshold": 0.10,
	"regression_alpha": 0.001,
	"regression_statements_min_rise": 0.5,
	"regression_error_rate_min_rise": 0.01,
	"regression_resolve_hours": 6,
	"regression_use_pinned_baseline": False,
	"anomaly_weeks": 4,
	"anomaly_min_history": 3,
	"anomaly_recent_hours": 24,
	"anomaly_z": 3.5,
	"anomaly_min_samples": 20,
	"detection_report_hours": 24,
	# Alertmanager's own defaults: 30 s of group wait, 5 minutes of group interval, 4 hours between
	# repeats; retries from 30 s, doubling
	"alert_group_wait_s": 30,
	"alert_group_interval_minutes": 5,
	"alert_repeat_interval_minutes": 240,
	"alert_retry_base_s": 30,
	"alert_webhook_refuse_private_addresses": True,
}

# the page refreshes as often as its data may change (the dashboard cache's lifetime at the most);
# twenty slow rows fit a screen; a day of detail rows, read through the (operation, started_at) index;
# a request with its blocks and jobs rarely has more than a few dozen spans, 500 bound a pathological one
_DESK_DEFAULTS = {
	"desk_refresh_s": 60,
	"desk_slow_rows": 20,
	"desk_slow_rows_hours": 24,
	"desk_trace_max_spans": 500,
}

# The exposition: 100 operations (a Frappe site's busy endpoints; a flood of junk names stays in one
# `other` series), bounds from a fast API call to a long job; OTLP off until an endpoint is set, the
# OTLP exporter's own 10 s timeout and the SDK batch processor's 512 spans per export
_EXPORT_DEFAULTS = {
	"prometheus_top_operations": 100,
	"prometheus_buckets_ms": (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000),
	"otlp_enabled": False,
	"otlp_endpoint": "",
	"otlp_timeout_s": 10,
	"otlp_batch_size": 512,
	"otlp_backlog_max": 100_000,
}

# Database health: a table with a fifth of its size free and at least 100 MB free is worth rebuilding
# (OPTIMIZE copies the table); a statement reading a hundred rows per row it returns on a site's
# tables of thousands of rows is scanning; the buffer pool of a server that holds its working set
# serves 99% of reads from memory (below 95% most reads wait for the disk); a table that grew by
# half and by 100 MB in a compare is worth a look; an index unused for a week and at least 1 MB
# weighs on every write for nothing; snapshots kept as long as hourly aggregates
_DATABASE_DEFAULTS = {
	"db_fragmentation_ratio": 0.2,
	"db_fragmentation_min_mb": 100,
	"db_scan_ratio": 100,
	"db_cache_hit_warning": 0.99,
	"db_cache_hit_critical": 0.95,
	"db_growth_ratio": 0.5,
	"db_growth_min_mb": 100,
	"db_unused_index_min_hours": 168,
	"db_unused_index_min_mb": 1,
	"db_cache_sample_s": 1,
	"db_snapshot_retention_days": 90,
	"db_max_statements": 200,
	"db_max_tables": 1000,
}

_RETENTION_DEFAULTS = {
	"detail_retention_days": 7,
	"hourly_retention_days": 90,
	"daily_retention_days": 730,
	"aggregation_delay_minutes": 5,
	"delete_batch_size": 5000,
	"aggregation_page_size": 10000,
	"job_lock_timeout_s": 3600,
	"rollup_run_budget_s": 200,
	"rollup_fold_rows": 50_000,
}

# Production levels are set from what a healthy real Frappe v15 site measured (see docs/configuration.md,
# "Where the production levels come from": API p95 42 ms and 13 statements a call, page loads p95
# 55 ms and 14 statements): a healthy site sits well inside its warning levels, a site ten times
# slower than that warns.
ENVIRONMENT_DEFAULTS: dict[str, dict[str, Any]] = {
	"development": {
		"api_response_warning_ms": 2000,
		"api_response_critical_ms": 8000,
		"api_queries_warning": 200,
		"api_queries_critical": 500,
		"page_load_warning_ms": 5000,
		"page_load_critical_ms": 15000,
		"page_queries_warning": 500,
		"page_queries_critical": 1000,
		"job_duration_warning_ms": 600_000,
		"job_duration_critical_ms": 1_800_000,
		"memory_warning_mb": 500,
		"memory_critical_mb": 1000,
		"error_rate_warning": 0.10,
		"error_rate_critical": 0.25,
		"health_warning": 70,
		"health_critical": 50,
		"job_lag_warning_s": 900,
		"job_lag_critical_s": 3600,
		"buffer_age_warning_s": 600,
		"buffer_age_critical_s": 1800,
		"loss_rate_warning": 0.05,
		"loss_rate_critical": 0.2,
		"capture_errors_warning_per_min": 5,
		"capture_errors_critical_per_min": 50,
		"capture_cost_warning_us": 2000,
		"capture_cost_critical_us": 10000,
		"rollup_backlog_warning_h": 6,
		"rollup_backlog_critical_h": 24,
		**_META_DEFAULTS,
		**_RETENTION_DEFAULTS,
		"monitoring_enabled": True,
		"sampling_rate": 0.10,
		"capture_memory_peak": True,
		"slow_query_ms": 200,
		"buffer_max_entries": 10000,
		"drain_batch_size": 5000,
		"dashboard_cache_ttl_s": 30,
		**_CAPTURE_DEFAULTS,
		**_ANALYSIS_DEFAULTS,
		**_DETECTION_DEFAULTS,
		**_DESK_DEFAULTS,
		**_EXPORT_DEFAULTS,
		**_DATABASE_DEFAULTS,
		"db_min_executions": 10,
		"db_long_running_s": 60,
		"n_plus_one_min_repeats": 3,
	},
	"staging": {
		"api_response_warning_ms": 800,
		"api_response_critical_ms": 3000,
		"api_queries_warning": 60,
		"api_queries_critical": 150,
		"page_load_warning_ms": 1500,
		"page_load_critical_ms": 5000,
		"page_queries_warning": 100,
		"page_queries_critical": 250,
		"job_duration_warning_ms": 300_000,
		"job_duration_critical_ms": 1_200_000,
		"memory_warning_mb": 250,
		"memory_critical_mb": 500,
		"error_rate_warning": 0.05,
		"error_rate_critical": 0.10,
		"health_warning": 80,
		"health_critical": 70,
		"job_lag_warning_s": 600,
		"job_lag_critical_s": 1800,
		"buffer_age_warning_s": 300,
		"buffer_age_critical_s": 900,
		"loss_rate_warning": 0.01,
		"loss_rate_critical": 0.05,
		"capture_errors_warning_per_min": 1,
		"capture_errors_critical_per_min": 10,
		"capture_cost_warning_us": 500,
		"capture_cost_critical_us": 2000,
		"rollup_backlog_warning_h": 3,
		"rollup_backlog_critical_h": 12,
		**_META_DEFAULTS,
		**_RETENTION_DEFAULTS,
		"monitoring_enabled": True,
		"sampling_rate": 0.50,
		"capture_memory_peak": False,
		"slow_query_ms": 100,
		"buffer_max_entries": 50000,
		"drain_batch_size": 5000,
		"dashboard_cache_ttl_s": 60,
		**_CAPTURE_DEFAULTS,
		**_ANALYSIS_DEFAULTS,
		**_DETECTION_DEFAULTS,
		**_DESK_DEFAULTS,
		**_EXPORT_DEFAULTS,
		**_DATABASE_DEFAULTS,
		"db_min_executions": 50,
		"db_long_running_s": 30,
		"n_plus_one_min_repeats": 5,
	},
	"production": {
		"api_response_warning_ms": 400,
		"api_response_critical_ms": 1500,
		"api_queries_warning": 40,
		"api_queries_critical": 100,
		"page_load_warning_ms": 800,
		"page_load_critical_ms": 3000,
		"page_queries_warning": 60,
		"page_queries_critical": 150,
		"job_duration_warning_ms": 120_000,
		"job_duration_critical_ms": 600_000,
		"memory_warning_mb": 100,
		"memory_critical_mb": 200,
		"error_rate_warning": 0.01,
		"error_rate_critical": 0.05,
		"health_warning": 90,
		"health_critical": 85,
		"job_lag_warning_s": 300,
		"job_lag_critical_s": 900,
		"buffer_age_warning_s": 180,
		"buffer_age_critical_s": 600,
		"loss_rate_warning": 0.001,
		"loss_rate_critical": 0.01,
		"capture_errors_warning_per_min": 0.5,
		"capture_errors_critical_per_min": 5,
		"capture_cost_warning_us": 300,
		"capture_cost_critical_us": 1000,
		"rollup_backlog_warning_h": 2,
		"rollup_backlog_critical_h": 6,
		**_META_DEFAULTS,
		**_RETENTION_DEFAULTS,
		"monitoring_enabled": True,
		"sampling_rate": 1.0,
		"capture_memory_peak": False,
		"slow_query_ms": 50,
		"buffer_max_entries": 100000,
		"drain_batch_size": 10000,
		"dashboard_cache_ttl_s": 60,
		**_CAPTURE_DEFAULTS,
		**_ANALYSIS_DEFAULTS,
		**_DETECTION_DEFAULTS,
		**_DESK_DEFAULTS,
		**_EXPORT_DEFAULTS,
		**_DATABASE_DEFAULTS,
		"db_min_executions": 100,
		"db_long_running_s": 10,
		"n_plus_one_min_repeats": 5,
	},
}
