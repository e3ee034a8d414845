"""The Prometheus/OpenMetrics exposition, written by `prometheus_client` from one snapshot.

`snapshot()` reads what a scrape exposes, in a fixed number of statements whatever the history: the
exposed counter rows (one), the hourly site-wide rows of the health window (one), the watermark (one),
the open regressions (one) and the latest database snapshot's name (one; a snapshot never changes,
so a process reads each one's figures once); job reports, the monitor's last sample, buffer and OTLP
figures come from Redis, table sizes from the retention job's last report, the configured levels from
the cached configuration. `ExportCollector` turns a snapshot into metric families (every series
labelled with the site), and `render()` renders them on a private registry with the format the
scraper asked for.

The counters are those the rollup folded: they lag the site by up to the rollup's delay (the hour
being filled, plus `aggregation_delay_minutes`); `vperf_aggregated_until_timestamp_seconds` says how far
they reach. Measurements not rolled up yet are left out, never counted twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
	CounterMetricFamily,
	GaugeMetricFamily,
	HistogramMetricFamily,
	Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from verenigingen_perf.utils.performance.config import LEVEL_PAIRS, flat_values
from verenigingen_perf.utils.performance.export import counters
from verenigingen_perf.utils.performance.schema import (
	ACKNOWLEDGED,
	DATABASE_SNAPSHOT,
	OPEN,
	OVERFLOW_OPERATION,
	REGRESSION,
)

PREFIX = "vperf"
OPERATION_LABELS = ("site", "type", "operation")


@dataclass
class Snapshot:
	"""Everything one scrape exposes (None: not measured or not readable now)."""

	site: str
	bounds_ms: tuple[float, ...]
	counters: list[counters.Counter] = field(default_factory=list)
	health_score: float | None = None
	components: list[dict[str, Any]] = field(default_factory=list)
	# job -> (finished at, failed, lag in seconds)
	jobs: dict[str, tuple[float | None, bool, float | None]] = field(default_factory=dict)
	buffered: int | None = None
	dropped: int | None = None
	unmeasured: int | None = None
	capture_errors: int | None = None
	otlp_backlog: int | None = None
	otlp_dropped: int | None = None
	otlp_exported: int | None = None
	aggregated_until: float | None = None
	# table -> (rows, bytes), as the retention job last measured them
	tables: dict[str, tuple[int, int]] = field(default_factory=dict)
	# setting -> value: every configured warning and critical level (config.LEVEL_PAIRS), so that alert
	# rules and dashboards compare against the site's own levels instead of numbers of their own
	thresholds: dict[str, float] = field(default_factory=dict)
	# the monitor's judged signals in its last sample: (signal, unit, value)
	monitor_signals: list[tuple[str, str, float]] = field(default_factory=list)
	# the latest database health snapshot of this backend: its cache hit ratio (None: it has none) and
	# when it was taken (None: no snapshot)
	database_cache_hit_ratio: float | None = None
	database_snapshot_at: float | None = None
	# (operation type, operation, metric) -> regressions open or acknowledged; an operation without a
	# series of its own is counted under the `other` operation of its type (bounded as the counters are)
	open_regressions: dict[tuple[str, str, str], int] = field(default_factory=dict)


class ExportCollector:
	"""A custom collector over one snapshot (prometheus_client's Collector protocol: `collect`)."""

	def __init__(self, snapshot: Snapshot):
		self.snapshot = snapshot

	def collect(self) -> Iterator[Metric]:
		s = self.snapshot
		yield from self._operations(s)
		yield from self._health(s)
		yield from self._jobs(s)
		yield from self._pipeline(s)
		yield from self._levels(s)
		yield from self._monitor(s)
		yield from self._database(s)
		yield from self._regressions(s)

	def _operations(self, s: Snapshot) -> Iterator[Metric]:
		families = {
			"count": CounterMetricFamily(
				f"{PREFIX}_operations",
				"Measured operations (requests: type api and page; background jobs: type job), rolled up",
				labels=OPERATION_LABELS,
			),
			"error_count": CounterMetricFamily(
				f"{PREFIX}_operation_errors",
				"Operations that failed on the site's side (HTTP 5xx, jobs that raised)",
				labels=OPERATION_LABELS,
			),
			"client_error_count": CounterMetricFamily(
				f"{PREFIX}_operation_client_errors",
				"Requests answered with an HTTP 4xx (the caller's error)",
				labels=OPERATION_LABELS,
			),
			"query_sum": CounterMetricFamily(
				f"{PREFIX}_operation_statements",
				"SQL statements the operations ran",
				labels=OPERATION_LABELS,
			),
		}
		durations = HistogramMetricFamily(
			f"{PREFIX}_operation_duration_seconds",
			"Wall time of the operations; buckets counted from the stored DDSketch (1% relative accuracy)",
			labels=OPERATION_LABELS,
		)
		for counter in sorted(s.counters, key=lambda c: c.key):
			labels = [s.site, counter.operation_type, counter.operation]
			for attribute, family in families.items():
				family.add_metric(labels, getattr(counter, attribute))
			durations.add_metric(
				labels, buckets=counters.histogram(counter, s.bounds_ms), sum_value=counter.duration_sum_s
			)
		yield from families.values()
		yield durations

	def _health(self, s: Snapshot) -> Iterator[Metric]:
		score = GaugeMetricFamily(
			f"{PREFIX}_health_score", "The health score (0-100; absent without data)", labels=["site"]
		)
		if s.health_score is not None:
			score.add_metric([s.site], s.health_score)
		yield score
		component_score = GaugeMetricFamily(
			f"{PREFIX}_health_component_score",
			"Each health component's score (0-100)",
			labels=["site", "component"],
		)
		component_value = GaugeMetricFamily(
			f"{PREFIX}_health_component_value",
			"Each health component's measured value, in its unit (label unit)",
			labels=["site", "component", "unit"],
		)
		for component in s.components:
			if component.get("score") is not None:
				component_score.add_metric([s.site, component["name"]], component["score"])
			if component.get("value") is not None:
				component_value.add_metric([s.site, component["name"], component["unit"]], component["value"])
		yield component_score
		yield component_value

	def _jobs(self, s: Snapshot) -> Iterator[Metric]:
		finished = GaugeMetricFamily(
			f"{PREFIX}_job_last_run_timestamp_seconds",
			"When the app's job last reported (Unix time); a success unless vperf_job_last_run_failed is 1",
			labels=["site", "job"],
		)
		failed = GaugeMetricFamily(
			f"{PREFIX}_job_last_run_failed", "1 if the job's last run failed", labels=["site", "job"]
		)
		lag = GaugeMetricFamily(
			f"{PREFIX}_job_lag_seconds",
			"Seconds the job is overdue against its schedule",
			labels=["site", "job"],
		)
		for job, (finished_at, has_failed, lag_s) in sorted(s.jobs.items()):
			if finished_at is not None:
				finished.add_metric([s.site, job], finished_at)
				failed.add_metric([s.site, job], 1 if has_failed else 0)
			if lag_s is not None:
				lag.add_metric([s.site, job], lag_s)
		yield finished
		yield failed
		yield lag

	def _pipeline(self, s: Snapshot) -> Iterator[Metric]:
		for name, help_text, value in (
			("buffered_measurements", "Measurements waiting in the Redis buffer", s.buffered),
			("otlp_backlog_spans", "Spans waiting for the OTLP endpoint", s.otlp_backlog),
			(
				"aggregated_until_timestamp_seconds",
				"The rollup's watermark: what the counters cover",
				s.aggregated_until,
			),
		):
			gauge = GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=["site"])
			if value is not None:
				gauge.add_metric([s.site], value)
			yield gauge
		for name, help_text, value in (
			("dropped_measurements", "Measurements dropped (buffer full, Redis unreachable)", s.dropped),
			("unmeasured_requests", "Requests refused before the app's hooks ran", s.unmeasured),
			("capture_errors", "The app's own failures", s.capture_errors),
			("otlp_exported_spans", "Spans the OTLP endpoint accepted", s.otlp_exported),
			("otlp_dropped_spans", "Spans dropped from a full OTLP backlog", s.otlp_dropped),
		):
			counter = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=["site"])
			if value is not None:
				counter.add_metric([s.site], value)
			yield counter
		rows = GaugeMetricFamily(
			f"{PREFIX}_table_rows", "Rows of the app's tables (last retention run)", labels=["site", "table"]
		)
		size = GaugeMetricFamily(
			f"{PREFIX}_table_bytes",
			"Bytes of the app's tables (last retention run)",
			labels=["site", "table"],
		)
		for table, (row_count, byte_count) in sorted(s.tables.items()):
			rows.add_metric([s.site, table], row_count)
			size.add_metric([s.site, table], byte_count)
		yield rows
		yield size

	def _levels(self, s: Snapshot) -> Iterator[Metric]:
		threshold = GaugeMetricFamily(
			f"{PREFIX}_threshold",
			"A configured warning or critical level, by its setting name (Performance Settings)",
			labels=["site", "setting"],
		)
		for setting, value in sorted(s.thresholds.items()):
			threshold.add_metric([s.site, setting], value)
		yield threshold

	def _monitor(self, s: Snapshot) -> Iterator[Metric]:
		signal = GaugeMetricFamily(
			f"{PREFIX}_monitor_signal_value",
			"Each signal of the monitor's last sample, in its unit (label unit); absent without a value",
			labels=["site", "signal", "unit"],
		)
		for name, unit, value in s.monitor_signals:
			signal.add_metric([s.site, name, unit], value)
		yield signal

	def _database(self, s: Snapshot) -> Iterator[Metric]:
		for name, help_text, value in (
			(
				"database_cache_hit_ratio",
				"The latest database health snapshot's cache hit ratio (absent when it has none)",
				s.database_cache_hit_ratio,
			),
			(
				"database_snapshot_timestamp_seconds",
				"When the latest database health snapshot was taken (Unix time)",
				s.database_snapshot_at,
			),
		):
			gauge = GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=["site"])
			if value is not None:
				gauge.add_metric([s.site], value)
			yield gauge

	def _regressions(self, s: Snapshot) -> Iterator[Metric]:
		regressions = GaugeMetricFamily(
			f"{PREFIX}_open_regressions",
			"Regressions open or acknowledged, per operation (those without a series of their own under"
			" the other operations of their type) and metric",
			labels=[*OPERATION_LABELS, "metric"],
		)
		for (operation_type, operation, metric), count in sorted(s.open_regressions.items()):
			regressions.add_metric([s.site, operation_type, operation, metric], count)
		yield regressions


def render(snapshot: Snapshot, accept: str | None) -> tuple[bytes, str]:
	"""The exposition in the format `accept` asks for (OpenMetrics or Prometheus text), and its
	content type, from a private registry holding only this snapshot's collector."""
	registry = CollectorRegistry(auto_describe=False)
	registry.register(ExportCollector(snapshot))
	encoder, content_type = choose_encoder(accept or "")
	return encoder(registry), content_type


def snapshot(config: Any) -> Snapshot:
	"""Read what a scrape exposes (see the module docstring for its statements)."""
	import frappe

	from verenigingen_perf.utils.performance import buffer, health, job_reports, monitoring, rollup, schedule
	from verenigingen_perf.utils.performance.dashboard import storage_figures
	from verenigingen_perf.utils.performance.export import counter_store, otlp
	from verenigingen_perf.utils.performance.timeutil import to_epoch

	now = frappe.utils.now_datetime()
	reports = job_reports.read()
	result = Snapshot(site=frappe.local.site, bounds_ms=config.export.prometheus_buckets_ms)
	result.counters = counter_store.exposed()
	rows = health.read_aggregates("hour", health.window_start(now, config.analysis.health_window_hours))
	report, _slowest = health.health_from_rows(rows, config, now, reports)
	result.health_score = report.score
	result.components = [
		{"name": c.name, "value": c.value, "unit": c.unit, "score": c.score} for c in report.components
	]
	epoch_now = time.time()
	for job, method in monitoring.JOBS.items():
		last = reports.by_job.get(job) or {}
		lag = schedule.job_lag_s(
			reports.finished_at(job), schedule.schedule_period_s(method) or 0.0, epoch_now
		)
		failed = str(last.get("status", "")).startswith("failed")
		result.jobs[job] = (reports.finished_at(job), failed, lag)
	state = buffer.state()
	result.buffered, result.dropped = state.buffered, state.dropped
	result.unmeasured, result.capture_errors = state.unmeasured_requests, state.capture_errors
	backlog = otlp.backlog_state()
	result.otlp_backlog, result.otlp_dropped, result.otlp_exported = backlog
	watermark = rollup.get_watermark()
	result.aggregated_until = to_epoch(watermark) if watermark else None
	for table in storage_figures(reports).get("tables") or []:
		result.tables[table["doctype"]] = (int(table["rows"]), int(table["bytes"]))
	result.thresholds = configured_levels(config)
	if last_sample := monitoring.latest(reports):
		result.monitor_signals = [
			(s.name, s.unit, float(s.value))
			for s in monitoring.signals(last_sample, config)
			if s.value is not None
		]
	result.database_snapshot_at, result.database_cache_hit_ratio = _latest_database_cache()
	members = {c.key for c in result.counters if c.operation != OVERFLOW_OPERATION}
	result.open_regressions = regressions_by_series(_open_regressions(), members)
	return result


def configured_levels(config: Any) -> dict[str, float]:
	"""Every warning and critical level of the configuration, by its setting name."""
	values = flat_values(config)
	return {
		setting: float(values[setting])
		for warning, critical, _ in LEVEL_PAIRS
		for setting in (warning, critical)
	}


def regressions_by_series(
	rows: list[tuple[str, str, str, int]], members: set[counters.Key]
) -> dict[tuple[str, str, str], int]:
	"""Regression counts per (type, operation, metric) where an operation that has no series of its
	own is counted under the other operations of its type: the labels stay as bounded as the
	counters' (at most N + 1 operations per type, times the regression metrics)."""
	counts: dict[tuple[str, str, str], int] = {}
	for operation_type, operation, metric, count in rows:
		if (operation_type, operation) not in members:
			operation = OVERFLOW_OPERATION
		key = (operation_type, operation, metric)
		counts[key] = counts.get(key, 0) + int(count)
	return counts


# site -> (the latest database snapshot's name, its cache hit ratio): a snapshot never changes once
# taken, so a process reads each one's figures once, not at every scrape
_database_cache_ratios: dict[str, tuple[str, float | None]] = {}


def _latest_database_cache() -> tuple[float | None, float | None]:
	"""When the latest database snapshot of this backend was taken, and its cache hit ratio as the
	alert rules read it (one statement; the snapshot itself is read once per process). The summary
	column cannot say "no ratio": Frappe stores an unset Float as 0, which would read as a cache that
	missed every read."""
	import frappe

	from verenigingen_perf.utils.performance import internal_errors
	from verenigingen_perf.utils.performance.database import snapshot as database_snapshot
	from verenigingen_perf.utils.performance.timeutil import as_datetime, to_epoch

	rows = frappe.db.sql(
		f"select name, taken_at from `tab{DATABASE_SNAPSHOT}` where db_type=%s order by taken_at desc limit 1",
		(frappe.db.db_type,),
	)
	if not rows:
		return None, None
	name, taken_at = rows[0]
	known = _database_cache_ratios.get(frappe.local.site)
	if known is None or known[0] != name:
		try:
			ratio = (database_snapshot.read(name).get("cache") or {}).get("ratio")
		except (ValueError, frappe.DoesNotExistError) as error:
			# a snapshot stored unreadable (or deleted meanwhile) leaves its ratio out, not the scrape
			internal_errors.report("metrics: latest database snapshot", error, may_raise=False)
			ratio = None
		known = _database_cache_ratios[frappe.local.site] = (name, None if ratio is None else float(ratio))
	return to_epoch(as_datetime(taken_at)), known[1]


def _open_regressions() -> list[tuple[str, str, str, int]]:
	"""Regressions open or acknowledged (those the shipped rule "New regression" alerts on), counted
	per (type, operation, metric) in one statement."""
	import frappe

	return [
		tuple(row)
		for row in frappe.db.sql(
			f"select operation_type, operation, metric, count(*) from `tab{REGRESSION}`"
			" where status in (%s, %s) group by operation_type, operation, metric",
			(OPEN, ACKNOWLEDGED),
		)
	]
