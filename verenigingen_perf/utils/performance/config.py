"""The environment-aware configuration: the one place every threshold, limit and retention comes from.

The first half is pure Python (dataclasses, environment defaults, validation) and needs no site.
The second half (`get_config`, `update_config`, caching) reads Performance Settings, the site config
and the process environment through Frappe, imported lazily.

Every numeric setting has a minimum and a maximum (docs/configuration.md lists them, generated from
this module by `bench vperf docs`): a value outside them is refused before anything is saved or cached,
so no setting can make a job overflow a date, a thread sleep for years or a number fail to serialise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import itertools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from verenigingen_perf.utils.performance.schema import SETTINGS as SETTINGS_DOCTYPE

ENVIRONMENTS = ("development", "staging", "production")
SITE_CONFIG_KEY = "verenigingen_perf_environment"
ENVIRONMENT_VARIABLE = "VERENIGINGEN_PERF_ENVIRONMENT"
CACHE_KEY = "effective_config"
# a batch analysis loads every member in one request: no configuration may raise it past this
BATCH_HARD_CAP = 50
# a Frappe doctype name: letters, digits, spaces, hyphens and underscores, at most 61 characters
_DOCTYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9 _-]{0,60}$")
# excluded path prefixes: how many, and how long each may be
_MAX_EXCLUDED_PATHS = 100
_MAX_PATH_CHARS = 200
# the exposition's size: operations with a series of their own, histogram bounds, and the longest
# bound (a week, as a job's duration levels)
_MAX_TOP_OPERATIONS = 1000
_MAX_BUCKETS = 50
_MAX_BUCKET_MS = 7 * 24 * 3_600_000
_MAX_URL_CHARS = 500
# the largest size (MB) a database health threshold may name: a petabyte
_MAX_DB_MB = 1_000_000_000


@dataclass(frozen=True)
class Level:
	"""A warning and a critical level for one measure."""

	warning: float
	critical: float


@dataclass(frozen=True)
class PerformanceThresholds:
	"""Levels per kind of operation: an API call, a page load and a background job do different
	amounts of work, so each is judged on its own levels."""

	# whitelisted methods and REST calls (`/api/...`)
	api_response_ms: Level
	api_queries: Level
	# desk and website pages (every other HTTP request)
	page_load_ms: Level
	page_queries: Level
	# background jobs (their statement counts grow with their work, so only their duration is judged)
	job_duration_ms: Level
	memory_mb: Level
	error_rate: Level
	# higher is better: a score below `warning` warns, below `critical` is critical
	health_score: Level
	job_lag_s: Level


@dataclass(frozen=True)
class DataRetentionConfig:
	detail_days: int
	hourly_days: int
	daily_days: int
	aggregation_delay_minutes: int
	delete_batch_size: int
	aggregation_page_size: int
	job_lock_timeout_s: int
	# a rollup run stops between two hours once it has run this long (the next run goes on): it is
	# scheduled every few minutes on the default queue, whose jobs Frappe stops after 300 s
	rollup_run_budget_s: int
	# a fold (one transaction) covers whole ingested hours holding at most this many detail rows (one
	# hour whatever it holds): a backlog is folded many hours at a time
	rollup_fold_rows: int


@dataclass(frozen=True)
class MonitoringConfig:
	enabled: bool
	sampling_rate: float
	capture_memory_peak: bool
	slow_query_ms: float
	buffer_max_entries: int
	drain_batch_size: int
	dashboard_cache_ttl_s: int
	excluded_paths: tuple[str, ...]
	context_max_chars: int
	flush_interval_ms: int
	config_refresh_s: int
	config_cache_ttl_s: int
	drain_claim_timeout_s: int
	max_operations_per_hour: int


@dataclass(frozen=True)
class MetaMonitoringConfig:
	"""Levels of the monitor's own signals (the monitoring watches itself, see monitoring.py)."""

	# age of the oldest measurement waiting in the buffer
	buffer_age_s: Level
	# share of the measurements the capture dropped (buffer full, Redis unreachable)
	loss_rate: Level
	capture_errors_per_min: Level
	# the app's own time per request (its hooks), p95
	capture_cost_us: Level
	# complete hours waiting for the rollup
	rollup_backlog_h: Level
	# days until the performance tables reach `storage_budget_mb` (higher is better)
	storage_days: Level
	# 0: no budget
	storage_budget_mb: int


@dataclass(frozen=True)
class AnalysisConfig:
	"""What the health check, the dashboard and the member analysis look at."""

	health_window_hours: int
	slowest_operations: int
	n_plus_one_min_repeats: int
	batch_max_members: int
	member_doctype: str


@dataclass(frozen=True)
class DetectionConfig:
	"""Baselines, regression detection and anomaly detection (see detection/)."""

	# rolling baselines: the days of hourly aggregates merged, and the fewest measurements a
	# baseline may rest on (below it an operation has no baseline: "insufficient data")
	baseline_window_days: int
	baseline_min_samples: int
	# regressions: the hours evaluated against the baseline, the fewest measurements in them, the
	# relative change a duration percentile must exceed, the significance level of every test, the
	# rise of statements per call and of the error rate (absolute) that counts, and the hours a
	# metric must stay within the threshold before its regression is resolved
	regression_window_hours: int
	regression_min_samples: int
	# duration percentiles are compared with the same hours of day on the baseline's days: the
	# fewest such days with data before that comparison replaces the whole baseline's
	regression_min_replicates: int
	regression_threshold: float
	regression_alpha: float
	regression_statements_min_rise: float
	regression_error_rate_min_rise: float
	regression_resolve_hours: int
	# compare against the latest pinned baseline (where an operation has one) instead of the rolling one
	regression_use_pinned_baseline: bool
	# anomalies: weeks of the same hour of the week, the fewest of them before falling back to the
	# recent hours, those recent hours, the modified z-score that flags, and the fewest requests in
	# an hour for its p95 and error rate to be judged
	anomaly_weeks: int
	anomaly_min_history: int
	anomaly_recent_hours: int
	anomaly_z: float
	anomaly_min_samples: int
	# the hours of anomalies the health check and the dashboard report
	detection_report_hours: int


@dataclass(frozen=True)
class AlertingConfig:
	"""Alert notifications (see alerts/)."""

	# a new group's first firing alerts wait this long for each other, then go out as one notification
	group_wait_s: int
	# after that a group is notified at most once per interval (its new and resolved alerts together)
	group_interval_minutes: int
	# a group that keeps firing with nothing new is notified again after this
	repeat_interval_minutes: int
	# a failed delivery is tried again after this, doubled at every further attempt
	retry_base_s: int
	# webhooks go to public addresses only (not loopback, link-local or private ones): on a server, a
	# webhook URL must not become a way into its own network
	webhook_refuse_private_addresses: bool


@dataclass(frozen=True)
class DeskConfig:
	"""What the desk pages show (see page/ and api/desk.py)."""

	# the dashboard page reloads its data this often (it is cached for `dashboard_cache_ttl_s`)
	refresh_s: int
	# the operation view lists this many of the operation's slowest detail rows of the last hours
	slow_rows: int
	slow_rows_hours: int
	# the trace view shows at most this many spans of one trace
	trace_max_spans: int


@dataclass(frozen=True)
class ExportConfig:
	"""Handing the measurements to outside engines (see export/): the Prometheus exposition and the
	OpenTelemetry span export."""

	# operations with a series of their own (the busiest since the counters began); the rest are
	# exposed together as `(other operations)`
	prometheus_top_operations: int
	# the duration histogram's upper bounds (ms, ascending)
	prometheus_buckets_ms: tuple[float, ...]
	# finished spans to an OTLP/HTTP endpoint (off by default)
	otlp_enabled: bool
	otlp_endpoint: str
	# one export request's time limit (the exporter's own retries stay within it)
	otlp_timeout_s: int
	# spans per export request
	otlp_batch_size: int
	# spans waiting for the endpoint at most (the oldest are dropped, counted, past it)
	otlp_backlog_max: int


@dataclass(frozen=True)
class DatabaseHealthConfig:
	"""The database health snapshot (see database/): what flags a table, a statement, an index or the
	cache, and how much a snapshot keeps."""

	# a table is fragmented when its free space is at least this share of its size and this many MB
	fragmentation_ratio: float
	fragmentation_min_mb: float
	# a statement executed at least `min_executions` times that examines at least `scan_ratio` rows
	# per row it returns is a candidate for an index
	scan_ratio: float
	min_executions: int
	# the buffer pool hit ratio between two readings (higher is better)
	cache_hit: Level
	# a compare flags a table that grew by this share and by at least this many MB
	growth_ratio: float
	growth_min_mb: float
	# an index is recommended for removal when unused for at least these hours and this large
	unused_index_min_hours: float
	unused_index_min_mb: float
	# statements running at least this long are listed as long-running
	long_running_s: float
	# an on-demand snapshot reads the status counters twice, this far apart
	cache_sample_s: float
	# what a snapshot keeps: days (pinned snapshots stay), statements and tables at most
	snapshot_retention_days: int
	max_statements: int
	max_tables: int


@dataclass(frozen=True)
class PerformanceConfig:
	environment: str
	environment_source: str
	thresholds: PerformanceThresholds
	retention: DataRetentionConfig
	monitoring: MonitoringConfig
	meta: MetaMonitoringConfig
	analysis: AnalysisConfig
	detection: DetectionConfig
	alerting: AlertingConfig
	desk: DeskConfig
	export: ExportConfig
	database: DatabaseHealthConfig
	overrides: dict[str, Any] = field(default_factory=dict)

	def as_dict(self) -> dict[str, Any]:
		return dataclasses.asdict(self)


class ConfigValidationError(ValueError):
	"""Raised with every violated rule; each message names the field and the rule."""

	def __init__(self, errors: list[str]):
		self.errors = errors
		super().__init__("; ".join(errors))


# --- the settings a site may override ------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
	"""One overridable setting: its flat key (the Performance Settings fieldname), where it lands and
	the range it must lie in (numbers only)."""

	key: str
	section: str
	path: tuple[str, ...]
	kind: type
	minimum: float | None = 0
	maximum: float | None = None
	strictly_positive: bool = False
	# a parser of its own (a list of numbers, a URL), for a setting no plain kind describes
	parse: Any = None


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
			parse=lambda setting, value: _coerce_bounds(setting, value),
		),
		_s("otlp_enabled", "export", "otlp_enabled", kind=bool),
		_s("otlp_endpoint", "export", "otlp_endpoint", kind=str, parse=lambda s, v: _coerce_url(s, v)),
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


# --- pure functions ------------------------------------------------------------------------------


def _is_blank(value: Any) -> bool:
	return value is None or (isinstance(value, str) and not value.strip())


def _short(value: Any) -> str:
	"""A value as an error message shows it: never a 300-digit number or a page of text."""
	text = repr(value)
	return text if len(text) <= 60 else text[:57] + "..."


def coerce(setting: Setting, value: Any) -> Any:
	"""Convert a raw value (from the desk, JSON or the API) to the setting's type, or raise ValueError."""
	if setting.parse is not None:
		return setting.parse(setting, value)
	if setting.kind is tuple:
		return _coerce_paths(setting, value)
	if setting.kind is str:
		if not isinstance(value, str) or not _DOCTYPE_NAME.match(value.strip()):
			raise ValueError(
				f"{setting.key}: must be a doctype name (a letter, then letters, digits, spaces, '-' or '_',"
				f" at most 61 characters), got {_short(value)}"
			)
		return value.strip()
	if setting.kind is bool:
		if isinstance(value, bool):
			return value
		if isinstance(value, int | float) and value in (0, 1):
			return bool(value)
		if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false", "yes", "no"):
			return value.strip().lower() in ("1", "true", "yes")
		raise ValueError(f"{setting.key}: must be a boolean (true/false, 1/0), got {_short(value)}")
	if isinstance(value, bool):
		raise ValueError(f"{setting.key}: must be a number, got a boolean")
	try:
		number = float(value.strip()) if isinstance(value, str) else float(value)
	except (TypeError, ValueError, OverflowError):
		raise ValueError(f"{setting.key}: must be a number, got {_short(value)}") from None
	if not math.isfinite(number):
		raise ValueError(f"{setting.key}: must be a finite number, got {_short(value)}")
	if setting.kind is int:
		if not number.is_integer():
			raise ValueError(f"{setting.key}: must be a whole number, got {_short(value)}")
		return int(number)
	return number


def _coerce_paths(setting: Setting, value: Any) -> tuple[str, ...]:
	"""A list of path prefixes: a list, or text with one prefix per line."""
	items = value.splitlines() if isinstance(value, str) else value
	if not isinstance(items, list | tuple):
		raise ValueError(f"{setting.key}: must be a list of path prefixes, got {_short(value)}")
	paths = []
	for item in items:
		if not isinstance(item, str):
			raise ValueError(f"{setting.key}: every entry must be a path prefix, got {_short(item)}")
		if item.strip():
			prefix = item.strip()
			if not prefix.startswith("/"):
				raise ValueError(f"{setting.key}: path prefixes start with '/', got {_short(prefix)}")
			if len(prefix) > _MAX_PATH_CHARS:
				raise ValueError(
					f"{setting.key}: a path prefix has at most {_MAX_PATH_CHARS} characters, got {len(prefix)}"
				)
			paths.append(prefix)
	unique = tuple(dict.fromkeys(paths))
	if len(unique) > _MAX_EXCLUDED_PATHS:
		raise ValueError(
			f"{setting.key}: at most {_MAX_EXCLUDED_PATHS} path prefixes, got {len(unique)} distinct ones"
		)
	return unique


def _coerce_bounds(setting: Setting, value: Any) -> tuple[float, ...]:
	"""Histogram bounds: a list of numbers, or text with numbers separated by commas or lines;
	strictly ascending, each above 0 and at most a week."""
	items = re.split(r"[,\s]+", value.strip()) if isinstance(value, str) else value
	if not isinstance(items, list | tuple):
		raise ValueError(f"{setting.key}: must be a list of numbers (ms), got {_short(value)}")
	bounds_ms = []
	for item in items:
		if isinstance(item, str) and not item.strip():
			continue
		if isinstance(item, bool):
			raise ValueError(f"{setting.key}: every bound must be a number, got {_short(item)}")
		try:
			number = float(item)
		except (TypeError, ValueError, OverflowError):
			raise ValueError(f"{setting.key}: every bound must be a number, got {_short(item)}") from None
		if not math.isfinite(number) or not 0 < number <= _MAX_BUCKET_MS:
			raise ValueError(
				f"{setting.key}: every bound must be above 0 and at most {_MAX_BUCKET_MS:g} ms, got {_short(item)}"
			)
		bounds_ms.append(number)
	if not bounds_ms or len(bounds_ms) > _MAX_BUCKETS:
		raise ValueError(f"{setting.key}: 1 to {_MAX_BUCKETS} bounds, got {len(bounds_ms)}")
	if any(b <= a for a, b in itertools.pairwise(bounds_ms)):
		raise ValueError(f"{setting.key}: the bounds must be strictly ascending, got {_short(value)}")
	return tuple(bounds_ms)


def _coerce_url(setting: Setting, value: Any) -> str:
	"""An http(s) URL without credentials in it (they belong in the OTLP headers, a password field)."""
	from urllib.parse import urlsplit

	text = value.strip() if isinstance(value, str) else None
	if not text or len(text) > _MAX_URL_CHARS or any(ord(c) < 33 for c in text):
		raise ValueError(
			f"{setting.key}: must be an http(s) URL of at most {_MAX_URL_CHARS} characters without spaces, "
			f"got {_short(value)}"
		)
	try:
		parts = urlsplit(text)
		_port = parts.port
	except ValueError:
		raise ValueError(f"{setting.key}: not a valid URL, got {_short(value)}") from None
	if parts.scheme not in ("http", "https") or not parts.hostname:
		raise ValueError(
			f"{setting.key}: must be an http:// or https:// URL with a host, got {_short(value)}"
		)
	if parts.username or parts.password:
		raise ValueError(f"{setting.key}: must not carry credentials; put them in the OTLP headers")
	return text


def _check_range(setting: Setting, value: Any) -> str | None:
	if setting.kind in (bool, tuple, str):
		return None
	if setting.minimum is not None and value < setting.minimum:
		if setting.minimum == 0:
			return f"{setting.key}: must not be negative, got {value}"
		return f"{setting.key}: must be at least {setting.minimum:g}, got {value}"
	if setting.strictly_positive and value <= 0:
		return f"{setting.key}: must be greater than 0, got {value}"
	if setting.maximum is not None and value > setting.maximum:
		return (
			f"{setting.key}: must be between {setting.minimum or 0:g} and {setting.maximum:g}, got {value:g}"
		)
	return None


def bounds(setting: Setting) -> tuple[float | None, float | None]:
	"""The documented range of a numeric setting (None for booleans, lists and names)."""
	if setting.kind in (bool, tuple, str):
		return None, None
	return setting.minimum, setting.maximum


def clean_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
	"""Coerce raw overrides; blank values drop the override. Returns (clean values, errors)."""
	clean: dict[str, Any] = {}
	errors: list[str] = []
	for key, raw in overrides.items():
		setting = SETTINGS.get(key)
		if setting is None:
			errors.append(f"{str(key)[:60]}: unknown setting (known: {', '.join(sorted(SETTINGS))})")
			continue
		if _is_blank(raw):
			continue
		try:
			value = coerce(setting, raw)
		except ValueError as e:
			errors.append(str(e))
			continue
		if problem := _check_range(setting, value):
			errors.append(problem)
			continue
		clean[key] = value
	return clean, errors


def check_consistency(values: Mapping[str, Any]) -> list[str]:
	"""Rules across settings, on the merged (defaults plus overrides) values."""
	errors = []
	for warning_key, critical_key, higher_is_better in LEVEL_PAIRS:
		warning, critical = values[warning_key], values[critical_key]
		if higher_is_better and warning <= critical:
			errors.append(
				f"{warning_key}: the warning level ({warning}) must be above the critical level "
				f"{critical_key} ({critical}), since a higher score is better"
			)
		elif not higher_is_better and warning >= critical:
			errors.append(
				f"{warning_key}: the warning level ({warning}) must be below the critical level "
				f"{critical_key} ({critical})"
			)
	for shorter_key, longer_key in RETENTION_ORDER:
		if values[longer_key] < values[shorter_key]:
			errors.append(
				f"{longer_key}: aggregates must be kept at least as long as the data they summarise "
				f"({longer_key} {values[longer_key]} < {shorter_key} {values[shorter_key]})"
			)
	for key, days in (
		("baseline_window_days", values["baseline_window_days"]),
		("anomaly_weeks", values["anomaly_weeks"] * 7),
	):
		if days > values["hourly_retention_days"]:
			errors.append(
				f"{key}: detection reads {days} days of hourly aggregates, but hourly_retention_days keeps "
				f"only {values['hourly_retention_days']}"
			)
	if values["otlp_enabled"] and not values["otlp_endpoint"]:
		errors.append("otlp_enabled: the OTLP export needs otlp_endpoint (the collector's /v1/traces URL)")
	if values["otlp_enabled"] and not otlp_installed():
		errors.append(
			"otlp_enabled: the OTLP export needs the app's `otlp` extra "
			"(pip install 'verenigingen_perf[otlp]': opentelemetry-sdk and its OTLP/HTTP exporter)"
		)
	if values["regression_min_replicates"] > values["baseline_window_days"]:
		errors.append(
			f"regression_min_replicates: must not exceed baseline_window_days "
			f"({values['regression_min_replicates']} > {values['baseline_window_days']}): the baseline "
			"holds one replicate of the window's hours per day"
		)
	if values["anomaly_min_history"] > values["anomaly_weeks"]:
		errors.append(
			f"anomaly_min_history: must not exceed anomaly_weeks ({values['anomaly_min_history']} > "
			f"{values['anomaly_weeks']}): that many weeks of history can never be there"
		)
	return errors


# the module the span export sends with: there only with the app's `otlp` extra
OTLP_EXPORTER_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def otlp_installed() -> bool:
	"""Whether the OTLP span exporter can be imported (not merely some `opentelemetry` package)."""
	try:
		return importlib.util.find_spec(OTLP_EXPORTER_MODULE) is not None
	except ImportError:
		# a parent package is missing (or marked not importable)
		return False


def validate_overrides(environment: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
	"""Return the clean overrides, or raise ConfigValidationError listing every broken rule."""
	if environment not in ENVIRONMENTS:
		raise ConfigValidationError(
			[f"environment: must be one of {', '.join(ENVIRONMENTS)}, got {_short(environment)}"]
		)
	clean, errors = clean_overrides(overrides)
	if not errors:
		errors = check_consistency({**ENVIRONMENT_DEFAULTS[environment], **clean})
	if errors:
		raise ConfigValidationError(errors)
	return clean


def build_config(
	environment: str, environment_source: str, overrides: Mapping[str, Any] | None = None
) -> PerformanceConfig:
	"""The effective configuration: the environment's defaults with validated overrides on top."""
	clean = validate_overrides(environment, overrides or {})
	values = {**ENVIRONMENT_DEFAULTS[environment], **clean}
	sections: dict[str, dict[str, Any]] = {
		"thresholds": {},
		"retention": {},
		"monitoring": {},
		"meta": {},
		"analysis": {},
		"detection": {},
		"alerting": {},
		"desk": {},
		"export": {},
		"database": {},
	}
	for key, setting in SETTINGS.items():
		target = sections[setting.section]
		*parents, leaf = setting.path
		for parent in parents:
			target = target.setdefault(parent, {})
		target[leaf] = setting.kind(values[key])
	thresholds = {name: Level(**level) for name, level in sections["thresholds"].items()}
	meta = {name: Level(**v) if isinstance(v, dict) else v for name, v in sections["meta"].items()}
	database = {name: Level(**v) if isinstance(v, dict) else v for name, v in sections["database"].items()}
	return PerformanceConfig(
		environment=environment,
		environment_source=environment_source,
		thresholds=PerformanceThresholds(**thresholds),
		retention=DataRetentionConfig(**sections["retention"]),
		monitoring=MonitoringConfig(**sections["monitoring"]),
		meta=MetaMonitoringConfig(**meta),
		analysis=AnalysisConfig(**sections["analysis"]),
		detection=DetectionConfig(**sections["detection"]),
		alerting=AlertingConfig(**sections["alerting"]),
		desk=DeskConfig(**sections["desk"]),
		export=ExportConfig(**sections["export"]),
		database=DatabaseHealthConfig(**database),
		overrides=clean,
	)


def detect_environment(
	settings_value: str | None,
	site_config_value: str | None,
	environment_variable: str | None,
	developer_mode: bool,
) -> tuple[str, str]:
	"""Which environment applies, and which source decided, in the documented order."""
	for source, value in (
		("performance_settings", settings_value),
		("site_config", site_config_value),
		("environment_variable", environment_variable),
	):
		if not _is_blank(value):
			name = str(value).strip().lower()
			if name not in ENVIRONMENTS:
				raise ConfigValidationError(
					[f"environment ({source}): must be one of {', '.join(ENVIRONMENTS)}, got {_short(value)}"]
				)
			return name, source
	if developer_mode:
		return "development", "developer_mode"
	return "production", "default"


# --- the site's configuration (Frappe) -----------------------------------------------------------


def read_stored_settings() -> tuple[str | None, dict[str, Any]]:
	"""Performance Settings as stored: (environment, overrides), without defaults applied."""
	import frappe

	stored = frappe.db.get_singles_dict(SETTINGS_DOCTYPE)
	overrides = {key: stored.get(key) for key in SETTINGS if not _is_blank(stored.get(key))}
	return stored.get("environment") or None, overrides


def environment_fallbacks() -> tuple[str | None, str | None, bool]:
	"""The sources consulted after Performance Settings: site config, environment variable, developer_mode."""
	import frappe

	return (
		frappe.conf.get(SITE_CONFIG_KEY),
		os.environ.get(ENVIRONMENT_VARIABLE),
		bool(frappe.conf.get("developer_mode")),
	)


def load_config() -> PerformanceConfig:
	"""Build the effective configuration from the site, uncached."""
	settings_environment, overrides = read_stored_settings()
	environment, source = detect_environment(settings_environment, *environment_fallbacks())
	return build_config(environment, source, overrides)


def validate_member_doctype(doctype: str) -> str | None:
	"""Why `doctype` cannot hold members on this site (None when it can): it must exist and be a
	plain, stored doctype, not a Single, a child table or a virtual doctype."""
	import frappe

	row = frappe.db.get_value("DocType", doctype, ["issingle", "istable", "is_virtual"], as_dict=True)
	if row is None:
		return f"member_doctype: the doctype {doctype!r} does not exist on this site"
	for flag, what in (("issingle", "a Single"), ("istable", "a child table"), ("is_virtual", "virtual")):
		if row.get(flag):
			return f"member_doctype: {doctype!r} is {what}; members are records of a plain doctype"
	return None


# --- the shared cache ----------------------------------------------------------------------------
#
# Readers cache the configuration only when nothing of it is left uncommitted in their transaction,
# and only where no entry is (SET NX); a save replaces the entry after its commit (SET). A reader
# whose snapshot predates the commit therefore cannot overwrite the new entry, and every entry
# expires after `config_cache_ttl_s`, which bounds the life of anything cached in a rare race.

_PENDING_FLAG = "verenigingen_perf_settings_pending"


def get_config() -> PerformanceConfig:
	"""The effective configuration, cached in Redis so every worker shares it; a save replaces it.

	Read with a plain client: Frappe's cache helpers also keep a per-request copy, which a
	long-lived process (a console, the scheduler) would otherwise keep seeing after a save."""
	import json

	import redis

	from verenigingen_perf.utils.performance.redis_store import key, redis_client

	if settings_pending():
		# this transaction saved the settings: it sees its own save, and nobody caches it yet
		return load_config()
	try:
		cached = redis_client().get(key(CACHE_KEY))
	except redis.exceptions.RedisError:
		return load_config()
	if cached is not None:
		with contextlib.suppress(KeyError, TypeError, ValueError):
			return config_from_dict(json.loads(cached))
	# nothing cached, or cached by an older version of the app
	config = load_config()
	_store(config, only_if_absent=True)
	return config


def _store(config: PerformanceConfig, only_if_absent: bool) -> None:
	import json

	import redis

	from verenigingen_perf.utils.performance.redis_store import key, redis_client

	with contextlib.suppress(redis.exceptions.RedisError):
		redis_client().set(
			key(CACHE_KEY),
			json.dumps(config.as_dict()),
			ex=config.monitoring.config_cache_ttl_s,
			nx=only_if_absent,
		)


def settings_pending() -> bool:
	"""True while this transaction has saved Performance Settings and not committed yet."""
	import frappe

	return bool(frappe.flags.get(_PENDING_FLAG))


def settings_saved_in_this_transaction(environment: str | None, overrides: Mapping[str, Any]) -> None:
	"""Called when Performance Settings is saved with these (validated) values: the cached
	configuration is replaced with them once the transaction commits (never before, so no worker can
	cache values that may still roll back)."""
	import frappe

	already_pending = settings_pending()
	frappe.flags[_PENDING_FLAG] = (environment, dict(overrides))
	if not already_pending:
		frappe.db.after_commit.add(_settings_committed)
		frappe.db.after_rollback.add(_settings_rolled_back)


def _settings_committed() -> None:
	import frappe

	environment, overrides = frappe.flags.get(_PENDING_FLAG) or (None, {})
	frappe.flags[_PENDING_FLAG] = None
	try:
		detected, source = detect_environment(environment, *environment_fallbacks())
		committed = build_config(detected, source, overrides)
	except ConfigValidationError:
		# the environment's other sources changed meanwhile: the next reader loads it afresh
		clear_config_cache()
		return
	_store(committed, only_if_absent=False)


def _settings_rolled_back() -> None:
	import frappe

	frappe.flags[_PENDING_FLAG] = None


def config_from_dict(data: Mapping[str, Any]) -> PerformanceConfig:
	return PerformanceConfig(
		environment=data["environment"],
		environment_source=data["environment_source"],
		thresholds=PerformanceThresholds(
			**{name: Level(**level) for name, level in data["thresholds"].items()}
		),
		retention=DataRetentionConfig(**data["retention"]),
		monitoring=MonitoringConfig(
			**{**data["monitoring"], "excluded_paths": tuple(data["monitoring"]["excluded_paths"])}
		),
		meta=MetaMonitoringConfig(
			**{name: Level(**v) if isinstance(v, dict) else v for name, v in data["meta"].items()}
		),
		analysis=AnalysisConfig(**data["analysis"]),
		detection=DetectionConfig(**data["detection"]),
		alerting=AlertingConfig(**data["alerting"]),
		desk=DeskConfig(**data["desk"]),
		export=ExportConfig(
			**{
				**data["export"],
				"prometheus_buckets_ms": tuple(data["export"]["prometheus_buckets_ms"]),
			}
		),
		database=DatabaseHealthConfig(
			**{name: Level(**v) if isinstance(v, dict) else v for name, v in data["database"].items()}
		),
		overrides={
			key: tuple(value) if SETTINGS[key].kind is tuple else value
			for key, value in (data.get("overrides") or {}).items()
		},
	)


def clear_config_cache() -> None:
	import redis

	from verenigingen_perf.utils.performance.redis_store import key, redis_client

	with contextlib.suppress(redis.exceptions.RedisError):
		redis_client().delete(key(CACHE_KEY))


def flat_values(config: PerformanceConfig) -> dict[str, Any]:
	"""The effective value of every setting under its flat key."""
	data = config.as_dict()
	values = {}
	for key, setting in SETTINGS.items():
		node: Any = data[setting.section]
		for part in setting.path:
			node = node[part]
		values[key] = node
	return values


def describe(config: PerformanceConfig) -> dict[str, Any]:
	"""What the API and the demo print: environment, its source, effective values, what is overridden."""
	return {
		"environment": config.environment,
		"environment_source": config.environment_source,
		"values": flat_values(config),
		"overrides": dict(config.overrides),
		"config": config.as_dict(),
	}


def to_field_value(setting: Setting, value: Any) -> str:
	"""How a clean override is stored in its Performance Settings field (blank: no override)."""
	if value is None:
		return ""
	if setting.kind is bool:
		return "Yes" if value else "No"
	if setting.kind is tuple:
		return "\n".join(f"{item:g}" if isinstance(item, float | int) else item for item in value)
	return str(value)


def update_config(values: Mapping[str, Any], environment: str | None = None) -> PerformanceConfig:
	"""Validate and persist overrides (a blank value clears one); nothing changes if any rule is broken.

	`environment` sets the explicit environment ("" clears it); None leaves it as it is. Returns the
	configuration as saved (the shared cache takes it when the caller's transaction commits)."""
	import frappe

	unknown = [key for key in values if key not in SETTINGS]
	if unknown:
		raise ConfigValidationError(
			[f"{str(key)[:60]}: unknown setting (known: {', '.join(sorted(SETTINGS))})" for key in unknown]
		)
	doc = frappe.get_single(SETTINGS_DOCTYPE)
	if environment is not None:
		doc.environment = environment
	for key, value in values.items():
		doc.set(key, value)
	doc.save()
	return load_config()


def reset_overrides() -> PerformanceConfig:
	"""Back to the detected environment's defaults: no explicit environment, no overrides."""
	return update_config(dict.fromkeys(SETTINGS, ""), environment="")


def validation_report(values: Mapping[str, Any], environment: str | None = None) -> dict[str, Any]:
	"""Check proposed overrides against the stored ones without saving anything."""
	settings_environment, stored = read_stored_settings()
	if environment is not None:
		settings_environment = environment or None
	merged = {**stored, **values}
	try:
		env, _source = detect_environment(settings_environment, *environment_fallbacks())
		clean = validate_overrides(env, merged)
	except ConfigValidationError as e:
		return {"valid": False, "errors": e.errors}
	if "member_doctype" in clean and (problem := validate_member_doctype(clean["member_doctype"])):
		return {"valid": False, "errors": [problem]}
	return {"valid": True, "errors": [], "environment": env, "overrides": clean}
