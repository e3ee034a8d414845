"""The configuration's values: one frozen dataclass per concern, and what describes one setting."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


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
