"""The export's pure parts: monotonic counters and the top-N split, histogram buckets from sketches,
the exposition (checked by promtool), OTLP ids and spans, and the export settings. No site needed."""

import random
import shutil
import subprocess
import sys

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.export import counters, otlp, prometheus
from verenigingen_perf.utils.performance.sketch import RELATIVE_ACCURACY, Summary

OTHER = "(other operations)"
BOUNDS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)


def summary(durations, errors=0, statements=1) -> Summary:
	s = Summary()
	s.add_many(
		list(durations), errors, [statements] * len(durations), [0.0] * len(durations), [0.0] * len(durations)
	)
	return s


def series(table: dict) -> dict:
	"""What a scrape would see: the exposed rows' figures."""
	return {
		key: (
			c.count,
			c.error_count,
			c.query_sum,
			c.duration_sum_s,
			tuple(n for _le, n in counters.histogram(c, BOUNDS)),
		)
		for key, c in table.items()
		if c.exposed
	}


fold_plan = st.lists(
	st.tuples(
		st.integers(min_value=1, max_value=6),  # top N of this fold (a setting may change)
		st.dictionaries(
			st.sampled_from([f"op{i}" for i in range(12)] + [OTHER]),
			st.lists(st.floats(min_value=0.0, max_value=5000.0), min_size=1, max_size=20),
			max_size=8,
		),
	),
	min_size=1,
	max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(plan=fold_plan)
def test_no_series_ever_falls_and_every_measurement_is_counted_once(plan):
	"""Whatever the traffic and however operations enter and leave the top N: every exposed series
	only grows (also one that leaves and comes back), at most N operations have their own series,
	and the exposed counts add up to every measurement folded."""
	table: dict = {}
	seen: dict = {}
	folded_total = 0
	for top, traffic in plan:
		folded = {("api", op): summary(durations) for op, durations in traffic.items()}
		folded_total += sum(len(d) for d in traffic.values())
		# the store hands fold() every exposed row and the folded operations' rows
		counters.fold(table, folded, top, OTHER)
		now = series(table)
		for key, figures in now.items():
			if key in seen:
				for before, after in zip(seen[key][:4], figures[:4], strict=True):
					assert after >= before, (key, seen[key], figures)
				assert all(a >= b for a, b in zip(figures[4], seen[key][4], strict=True))
			seen[key] = figures
		# a row that stopped being exposed is frozen, not lowered
		for key, figures in seen.items():
			assert table[key].count >= figures[0]
		own = {c.operation for c in table.values() if c.exposed and c.operation != OTHER}
		assert len(own) <= top
		assert sum(c.count for c in table.values()) == folded_total


def test_ten_thousand_operations_make_at_most_n_plus_one_operation_series():
	table: dict = {}
	rng = random.Random(7)
	for _hour in range(3):
		folded = {("api", f"junk/{rng.randrange(10**9)}"): summary([1.0]) for _ in range(10_000)}
		folded[("api", "busy")] = summary([2.0] * 50)
		counters.fold(table, folded, 20, OTHER)
	exposed = {c.operation for c in table.values() if c.exposed}
	assert len(exposed) <= 21 and "busy" in exposed and OTHER in exposed


def test_a_busier_operation_takes_the_place_of_the_least_busy_and_nothing_falls():
	table: dict = {}
	counters.fold(table, {("api", "a"): summary([1.0] * 10), ("api", "b"): summary([1.0] * 5)}, 2, OTHER)
	assert {c.operation for c in table.values() if c.exposed} == {"a", "b"}
	counters.fold(table, {("api", "c"): summary([1.0] * 3)}, 2, OTHER)
	# not busier than b: counted under other
	assert table[("api", OTHER)].count == 3 and not table[("api", "c")].exposed
	counters.fold(table, {("api", "c"): summary([1.0] * 4)}, 2, OTHER)
	# 7 measured in all, more than b's 5: c gets a series from now on (its earlier 3 stay in other)
	assert table[("api", "c")].exposed and table[("api", "c")].count == 4
	assert not table[("api", "b")].exposed and table[("api", "b")].count == 5
	assert table[("api", OTHER)].count == 3
	counters.fold(table, {("api", "b"): summary([1.0] * 10)}, 2, OTHER)
	# b is back (15 measured): its series resumes from its frozen 5
	assert table[("api", "b")].exposed and table[("api", "b")].count == 15


def test_ties_keep_the_operations_that_have_a_series():
	table: dict = {}
	counters.fold(table, {("api", "a"): summary([1.0] * 5)}, 1, OTHER)
	counters.fold(table, {("api", "b"): summary([1.0] * 5)}, 1, OTHER)
	assert table[("api", "a")].exposed and not table[("api", "b")].exposed


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=20_000.0), min_size=1, max_size=400))
def test_histogram_buckets_count_the_values_within_the_sketch_resolution(durations):
	counter = counters.Counter("api", "x")
	counter.add(summary(durations))
	buckets = counters.histogram(counter, BOUNDS)
	assert buckets[-1] == ("+Inf", len(durations))
	values = [n for _le, n in buckets]
	assert values == sorted(values)
	for (le, n), bound in zip(buckets, BOUNDS, strict=False):
		assert float(le) == bound / 1000
		surely_below = sum(1 for d in durations if d <= bound * (1 - 2 * RELATIVE_ACCURACY))
		maybe_below = sum(1 for d in durations if d <= bound * (1 + 2 * RELATIVE_ACCURACY))
		assert surely_below <= n <= maybe_below, (bound, n)


NASTY = ['quote " back \\ slash', "new\nline", "café ü 🚀", "GET /api/resource/Member/{name}", OTHER]


def snapshot() -> prometheus.Snapshot:
	table: dict = {}
	folded = {
		(kind, name): summary([1.0 + i, 40.0, 900.0], errors=1, statements=3)
		for i, name in enumerate(NASTY)
		for kind in ("api", "job")
	}
	counters.fold(table, folded, 100, OTHER)
	return prometheus.Snapshot(
		site="site1.example",
		bounds_ms=BOUNDS,
		counters=list(table.values()),
		health_score=93.5,
		components=[{"name": "api_response_p95", "value": 42.0, "unit": "ms", "score": 97.0}],
		jobs={"drain": (1.7e9, False, 0.0), "rollup": (None, False, None)},
		buffered=3,
		dropped=1,
		unmeasured=0,
		capture_errors=0,
		otlp_backlog=0,
		otlp_dropped=0,
		otlp_exported=7,
		aggregated_until=1.7e9,
		tables={"Performance Metric": (10, 4096)},
		thresholds={"health_critical": 50.0, "loss_rate_warning": 0.05},
		monitor_signals=[("loss_rate", "ratio", 0.25), ("capture_cost", "µs", 310.0)],
		database_cache_hit_ratio=0.93,
		database_snapshot_at=1.7e9,
		open_regressions={("api", NASTY[0], "duration_p95"): 1, ("api", OTHER, "error_rate"): 2},
	)


@pytest.mark.parametrize("accept", [None, "application/openmetrics-text; version=1.0.0"])
def test_the_exposition_carries_the_site_on_every_series_and_escapes_every_name(accept):
	body, content_type = prometheus.render(snapshot(), accept)
	text = body.decode()
	assert ("openmetrics" in content_type) == bool(accept)
	if accept:
		from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse
	else:
		parse = text_string_to_metric_families
	families = {f.name: f for f in parse(text)}
	samples = [s for f in families.values() for s in f.samples]
	assert samples and all(s.labels.get("site") == "site1.example" for s in samples)
	operations = {s.labels["operation"] for s in families["vperf_operations"].samples}
	assert operations == set(NASTY)
	count = next(
		s.value
		for s in families["vperf_operation_duration_seconds"].samples
		if s.name == "vperf_operation_duration_seconds_count"
		and s.labels["operation"] == NASTY[0]
		and s.labels["type"] == "job"
	)
	assert count == 3


def test_the_exposition_carries_the_levels_monitor_signals_database_cache_and_open_regressions():
	body, _type = prometheus.render(snapshot(), None)
	families = {f.name: f for f in text_string_to_metric_families(body.decode())}

	def values(name: str, *labels: str) -> dict:
		return {tuple(s.labels[k] for k in labels): s.value for s in families[name].samples}

	assert values("vperf_threshold", "setting") == {("health_critical",): 50.0, ("loss_rate_warning",): 0.05}
	assert values("vperf_monitor_signal_value", "signal", "unit") == {
		("loss_rate", "ratio"): 0.25,
		("capture_cost", "µs"): 310.0,
	}
	assert values("vperf_database_cache_hit_ratio", "site") == {("site1.example",): 0.93}
	assert values("vperf_database_snapshot_timestamp_seconds", "site") == {("site1.example",): 1.7e9}
	assert values("vperf_open_regressions", "type", "operation", "metric") == {
		("api", NASTY[0], "duration_p95"): 1,
		("api", OTHER, "error_rate"): 2,
	}
	# without a database snapshot (or a ratio), a monitor sample or a regression: no sample, no zero
	empty = prometheus.Snapshot(site="s", bounds_ms=BOUNDS)
	body, _type = prometheus.render(empty, None)
	names = {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}
	assert not names & {
		"vperf_monitor_signal_value",
		"vperf_database_cache_hit_ratio",
		"vperf_database_snapshot_timestamp_seconds",
		"vperf_open_regressions",
	}


def test_the_exposed_levels_are_every_configured_level_with_the_site_s_own_values():
	built = config.build_config("production", "default", {"health_critical": 42, "loss_rate_warning": 0.005})
	levels = prometheus.configured_levels(built)
	assert set(levels) == {key for warning, critical, _ in config.LEVEL_PAIRS for key in (warning, critical)}
	assert levels["health_critical"] == 42 and levels["loss_rate_warning"] == 0.005
	assert levels["job_lag_warning_s"] == built.thresholds.job_lag_s.warning
	assert levels["db_cache_hit_warning"] == built.database.cache_hit.warning


def test_open_regressions_of_operations_without_a_series_are_counted_under_the_other_operations():
	members = {("api", "busy"), ("job", "nightly")}
	rows = [
		("api", "busy", "duration_p95", 1),
		("api", "rare", "duration_p95", 1),
		("api", "rarer", "duration_p95", 1),
		("job", "rare", "error_rate", 1),
	]
	assert prometheus.regressions_by_series(rows, members) == {
		("api", "busy", "duration_p95"): 1,
		("api", OTHER, "duration_p95"): 2,
		("job", OTHER, "error_rate"): 1,
	}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) not installed")
def test_promtool_accepts_the_exposition():
	body, _type = prometheus.render(snapshot(), None)
	result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60)
	assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_otlp_ids_are_deterministic_non_zero_and_keep_the_parent_link():
	trace = "18a2b3c4d5e6f70812345678"
	assert otlp.trace_id(trace) == int(trace, 16)
	assert otlp.trace_id("not hex at all") == otlp.trace_id("not hex at all") != 0
	assert otlp.trace_id("0" * 24) != 0
	assert 0 < otlp.span_id("18a2b3c4d5e6f708aaaaaaaa") < 2**64
	assert otlp.span_id("x") == otlp.span_id("x") != otlp.span_id("y")


@pytest.mark.skipif(
	not config.otlp_installed(), reason="the OTLP export is not installed (pip install -e '.[otlp]')"
)
def test_a_backlog_record_becomes_a_readable_span_with_its_parent():
	from opentelemetry.sdk.resources import Resource
	from opentelemetry.trace import SpanKind, StatusCode

	values = {
		"name": "18a2b3c4d5e6f708aaaaaaaa",
		"trace_id": "18a2b3c4d5e6f70812345678",
		"parent_span": "18a2b3c4d5e6f708bbbbbbbb",
		"operation": "app.probe_job",
		"operation_type": "job",
		"duration_ms": 12.5,
		"status": "error",
		"http_status": 0,
		"query_count": 4,
		"db_time_ms": 1.5,
		"user": "someone@example.com",
		"context": {"member": "secret"},
	}
	record = otlp.span_record(values, 1_700_000_000_000_000_000)
	assert b"someone@example.com" not in record and b"secret" not in record
	span = otlp.build_span(record, Resource({"service.name": "site1"}))
	assert span.name == "app.probe_job" and span.kind is SpanKind.CONSUMER
	assert span.context.trace_id == int(values["trace_id"], 16)
	assert span.context.span_id == otlp.span_id(values["name"])
	assert span.parent.span_id == otlp.span_id(values["parent_span"])
	assert span.status.status_code is StatusCode.ERROR
	assert span.attributes["vperf.statements"] == 4
	assert span.end_time - span.start_time == 12_500_000
	root = otlp.build_span(otlp.span_record({**values, "parent_span": None, "status": "ok"}, 1), Resource({}))
	assert root.parent is None and root.status.status_code is StatusCode.UNSET


def test_otlp_headers_are_parsed_and_errors_never_show_a_value():
	assert otlp.parse_headers("Authorization=Bearer abc, x-team = t1\n") == {
		"authorization": "Bearer abc",
		"x-team": "t1",
	}
	for bad, rule in (
		("no-equals-sign-secret", "name=value"),
		("bad name=secret", "name=value"),
		("x=sec\x01ret", "control characters"),
		(",".join(f"h{i}=v" for i in range(21)), "at most 20"),
	):
		with pytest.raises(ValueError, match=rule) as error:
			otlp.parse_headers(bad)
		assert "secret" not in str(error.value) and str(error.value).startswith("otlp_headers:")


@pytest.mark.parametrize(
	("values", "rule"),
	[
		({"prometheus_buckets_ms": "10, 5"}, "strictly ascending"),
		({"prometheus_buckets_ms": "0, 5"}, "above 0"),
		({"prometheus_buckets_ms": ", ".join(str(i) for i in range(1, 52))}, "1 to 50 bounds"),
		({"prometheus_buckets_ms": [1, "x"]}, "must be a number"),
		({"prometheus_top_operations": 1001}, "between 1 and 1000"),
		({"otlp_endpoint": "ftp://collector"}, "http:// or https://"),
		({"otlp_endpoint": "http://user:pw@collector/v1/traces"}, "credentials"),
		({"otlp_endpoint": "http://collector/" + "a" * 600}, "at most 500"),
		({"otlp_enabled": True}, "needs otlp_endpoint"),
		({"otlp_timeout_s": 0}, "at least 1"),
		({"otlp_backlog_max": 10**8}, "between 1 and 1e+07"),
	],
)
def test_export_settings_are_bounded_and_errors_name_the_field(values, rule):
	with pytest.raises(config.ConfigValidationError) as error:
		config.validate_overrides("production", values)
	assert any(next(iter(values)) in e and rule in e for e in error.value.errors), error.value.errors


@pytest.mark.skipif(
	not config.otlp_installed(), reason="the OTLP export is not installed (pip install -e '.[otlp]')"
)
def test_export_settings_round_trip_through_the_cache():
	built = config.build_config(
		"production",
		"default",
		{
			"prometheus_buckets_ms": "1\n2.5\n10",
			"otlp_enabled": "yes",
			"otlp_endpoint": "https://c:4318/v1/traces",
		},
	)
	assert built.export.prometheus_buckets_ms == (1.0, 2.5, 10.0) and built.export.otlp_enabled
	assert config.config_from_dict(orjson.loads(orjson.dumps(built.as_dict()))) == built
	field = config.field_value(config.SETTINGS["prometheus_buckets_ms"], built.export.prometheus_buckets_ms)
	assert config.coerce(config.SETTINGS["prometheus_buckets_ms"], field) == (1.0, 2.5, 10.0)


def test_the_otlp_export_is_refused_without_its_extra_installed(monkeypatch):
	values = {"otlp_enabled": True, "otlp_endpoint": "https://c:4318/v1/traces"}
	if config.otlp_installed():
		assert config.build_config("production", "default", values).export.otlp_enabled
	# a None entry in sys.modules is how Python marks a module as not importable
	monkeypatch.setitem(sys.modules, "opentelemetry", None)
	monkeypatch.setitem(sys.modules, config.OTLP_EXPORTER_MODULE, None)
	with pytest.raises(config.ConfigValidationError) as error:
		config.validate_overrides("production", values)
	assert any(e.startswith("otlp_enabled") and "`otlp` extra" in e for e in error.value.errors)
