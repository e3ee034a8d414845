"""Unit tests of the configuration: no site, no Frappe."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import verenigingen_perf
from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.config import (
	ENVIRONMENT_DEFAULTS,
	ENVIRONMENTS,
	SETTINGS,
	ConfigValidationError,
	build_config,
	detect_environment,
	validate_overrides,
)


def test_production_defaults_are_the_strict_ones():
	c = build_config("production", "default")
	assert c.thresholds.api_response_ms.warning == 400
	assert c.thresholds.api_response_ms.critical == 1500
	assert c.thresholds.api_queries.warning == 40
	assert c.thresholds.memory_mb.warning == 100
	assert c.thresholds.health_score.warning == 90
	assert c.thresholds.health_score.critical == 85
	assert c.monitoring.sampling_rate == 1.0


@pytest.mark.parametrize(
	("environment", "sampling"), [("development", 0.1), ("staging", 0.5), ("production", 1.0)]
)
def test_sampling_per_environment(environment, sampling):
	assert build_config(environment, "default").monitoring.sampling_rate == sampling


def test_retention_defaults():
	for environment in ENVIRONMENTS:
		r = build_config(environment, "default").retention
		assert (r.detail_days, r.hourly_days, r.daily_days) == (7, 90, 730)


@pytest.mark.parametrize(
	"key",
	[
		"api_response_warning_ms",
		"api_queries_warning",
		"page_load_warning_ms",
		"page_queries_warning",
		"job_duration_warning_ms",
		"memory_warning_mb",
		"error_rate_warning",
	],
)
def test_environments_go_from_lenient_to_strict(key):
	dev, staging, prod = (ENVIRONMENT_DEFAULTS[e][key] for e in ("development", "staging", "production"))
	assert dev > staging > prod


def test_health_thresholds_get_stricter():
	dev, staging, prod = (
		ENVIRONMENT_DEFAULTS[e]["health_warning"] for e in ("development", "staging", "production")
	)
	assert dev < staging < prod


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_environment_default_is_valid_and_complete(environment):
	assert set(ENVIRONMENT_DEFAULTS[environment]) == set(SETTINGS)
	assert config.check_consistency(ENVIRONMENT_DEFAULTS[environment]) == []


@pytest.mark.parametrize(
	("settings_value", "site_value", "env_value", "developer_mode", "expected"),
	[
		("staging", "development", "production", True, ("staging", "performance_settings")),
		(None, "development", "staging", False, ("development", "site_config")),
		("", None, "staging", True, ("staging", "environment_variable")),
		(None, None, None, True, ("development", "developer_mode")),
		(None, None, "  ", False, ("production", "default")),
		(None, " Staging ", None, False, ("staging", "site_config")),
	],
)
def test_detection_order(settings_value, site_value, env_value, developer_mode, expected):
	assert detect_environment(settings_value, site_value, env_value, developer_mode) == expected


def test_detection_rejects_an_unknown_environment_naming_the_source():
	with pytest.raises(ConfigValidationError) as e:
		detect_environment(None, "prod", None, False)
	assert "site_config" in str(e.value)
	assert "prod" in str(e.value)


@pytest.mark.parametrize(
	("overrides", "field", "rule"),
	[
		({"api_response_warning_ms": 3000}, "api_response_warning_ms", "below the critical"),
		(
			{"api_queries_warning": 10, "api_queries_critical": 10},
			"api_queries_warning",
			"below the critical",
		),
		({"page_load_warning_ms": 9000}, "page_load_warning_ms", "below the critical"),
		({"daily_retention_days": 1_000_000}, "daily_retention_days", "between 1 and 7300"),
		({"detail_retention_days": 1e308}, "detail_retention_days", "between 1 and 3650"),
		({"buffer_max_entries": 1e20}, "buffer_max_entries", "between 1 and 1e+07"),
		({"aggregation_delay_minutes": 1e10}, "aggregation_delay_minutes", "between 0 and 1440"),
		({"flush_interval_ms": 1e13}, "flush_interval_ms", "between 10 and 60000"),
		({"context_max_chars": 70_000}, "context_max_chars", "between 64 and 16000"),
		({"max_operations_per_hour": 5}, "max_operations_per_hour", "at least 10"),
		({"excluded_paths": ["/x"] * 2 + [f"/p{i}" for i in range(101)]}, "excluded_paths", "at most 100"),
		({"excluded_paths": "/" + "a" * 300}, "excluded_paths", "at most 200 characters"),
		({"sampling_rate": "9" * 400}, "sampling_rate", "finite"),
		({"sampling_rate": 10**400}, "sampling_rate", "must be a number"),
		({"health_warning": 80}, "health_warning", "above the critical"),
		({"sampling_rate": 1.5}, "sampling_rate", "between 0 and 1"),
		({"sampling_rate": -0.1}, "sampling_rate", "negative"),
		({"detail_retention_days": 0}, "detail_retention_days", "at least 1"),
		({"hourly_retention_days": 3}, "hourly_retention_days", "at least as long"),
		({"daily_retention_days": 30}, "daily_retention_days", "at least as long"),
		({"delete_batch_size": -5}, "delete_batch_size", "at least 1"),
		({"memory_warning_mb": "lots"}, "memory_warning_mb", "must be a number"),
		({"delete_batch_size": 2.5}, "delete_batch_size", "whole number"),
		({"slow_query_ms": float("nan")}, "slow_query_ms", "finite"),
		({"monitoring_enabled": "maybe"}, "monitoring_enabled", "boolean"),
		({"no_such_setting": 1}, "no_such_setting", "unknown setting"),
		({"api_response_warning_ms": True}, "api_response_warning_ms", "must be a number"),
		({"error_rate_critical": 2}, "error_rate_critical", "between 0 and 1"),
	],
)
def test_validation_names_field_and_rule(overrides, field, rule):
	with pytest.raises(ConfigValidationError) as e:
		validate_overrides("production", overrides)
	assert any(message.startswith(f"{field}:") and rule in message for message in e.value.errors), (
		e.value.errors
	)


def test_blank_values_mean_no_override():
	assert validate_overrides("production", {"sampling_rate": "", "api_queries_warning": None}) == {}


def test_overrides_are_coerced_and_applied():
	c = build_config(
		"production",
		"performance_settings",
		{"sampling_rate": "0.25", "delete_batch_size": "1000", "monitoring_enabled": "No"},
	)
	assert c.monitoring.sampling_rate == 0.25
	assert c.retention.delete_batch_size == 1000
	assert c.monitoring.enabled is False
	assert c.overrides == {"sampling_rate": 0.25, "delete_batch_size": 1000, "monitoring_enabled": False}


def test_round_trip_through_a_dict():
	c = build_config("staging", "site_config", {"api_queries_warning": 7})
	assert config.config_from_dict(c.as_dict()) == c


def test_flat_values_cover_every_setting():
	values = config.flat_values(build_config("development", "default"))
	assert set(values) == set(SETTINGS)
	assert values["sampling_rate"] == 0.1


# --- property-based -------------------------------------------------------------------------------

raw_values = st.one_of(
	st.none(),
	st.booleans(),
	st.integers(min_value=-(10**6), max_value=10**6),
	st.floats(allow_nan=True, allow_infinity=True),
	st.text(max_size=8),
	st.sampled_from(["0", "1", "0.5", "yes", "No", "-1", "1e3", "abc", " "]),
)
override_maps = st.dictionaries(
	st.one_of(st.sampled_from(sorted(SETTINGS)), st.text(min_size=1, max_size=6)), raw_values, max_size=6
)


@settings(max_examples=400, deadline=None)
@given(environment=st.sampled_from(ENVIRONMENTS), overrides=override_maps)
def test_validator_accepts_only_consistent_configs_and_names_fields(environment, overrides):
	try:
		clean = validate_overrides(environment, overrides)
	except ConfigValidationError as e:
		assert e.errors
		for message in e.errors:
			assert any(message.startswith(f"{key}:") for key in [*overrides, *SETTINGS]), message
		return
	values = {**ENVIRONMENT_DEFAULTS[environment], **clean}
	assert config.check_consistency(values) == []
	c = build_config(environment, "default", overrides)
	assert 0 <= c.monitoring.sampling_rate <= 1
	assert 1 <= c.retention.detail_days <= c.retention.hourly_days <= c.retention.daily_days
	assert c.thresholds.health_score.warning > c.thresholds.health_score.critical
	for level in (c.thresholds.api_response_ms, c.thresholds.api_queries, c.thresholds.memory_mb):
		assert 0 < level.warning < level.critical
		assert math.isfinite(level.warning)
	for key, value in config.flat_values(c).items():
		low, high = config.bounds(SETTINGS[key])
		if high is not None:
			assert low <= value <= high, key


def test_every_numeric_setting_has_an_upper_bound_and_the_settings_form_has_every_setting():
	import json
	from pathlib import Path

	for setting in SETTINGS.values():
		if setting.kind in (int, float):
			assert setting.maximum is not None, setting.key
	form = (
		Path(verenigingen_perf.__file__).parent
		/ "verenigingen_perf/doctype/performance_settings/performance_settings.json"
	)
	fields = {f["fieldname"] for f in json.loads(form.read_text())["fields"]}
	assert set(SETTINGS) <= fields
	assert not set(config.RENAMED_SETTINGS) & fields


@settings(max_examples=200, deadline=None)
@given(
	warning=st.floats(min_value=0.001, max_value=1e6),
	gap=st.floats(min_value=0.001, max_value=1e6),
)
def test_any_ordered_pair_is_accepted_and_a_reversed_one_rejected(warning, gap):
	critical = warning + gap
	if critical <= warning:  # float rounding swallowed the gap
		return
	ok = {"api_response_warning_ms": warning, "api_response_critical_ms": critical}
	assert validate_overrides("production", ok) == ok
	reversed_pair = {"api_response_warning_ms": critical, "api_response_critical_ms": warning}
	with pytest.raises(ConfigValidationError):
		validate_overrides("production", reversed_pair)


def test_the_configuration_reference_documents_every_setting_with_its_bounds():
	from pathlib import Path

	reference = (Path(verenigingen_perf.__file__).parents[1] / "docs" / "configuration.md").read_text()
	for key, setting in SETTINGS.items():
		row = next((line for line in reference.splitlines() if line.startswith(f"| `{key}` |")), None)
		assert row is not None, key
		_low, high = config.bounds(setting)
		if high is not None:
			assert f"to {high:,g} |" in row, (key, row)
