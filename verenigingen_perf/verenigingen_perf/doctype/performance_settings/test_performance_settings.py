# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt
"""Performance Settings saves valid overrides, rejects bad ones without change, and clears the cache."""

import frappe
import pytest

from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.redis_store import key, redis_client


@pytest.fixture
def settings(default_settings):
	"""Performance Settings with no overrides, restored after the test."""
	return frappe.get_single("Performance Settings")


def cached_config() -> bytes | None:
	return redis_client().get(key(config.CACHE_KEY))


def stored() -> dict:
	return frappe.db.get_singles_dict("Performance Settings")


def test_valid_values_are_saved_normalised_and_take_effect(settings):
	settings.environment = "staging"
	settings.sampling_rate = "0.250"
	settings.queries_warning = "7"
	settings.monitoring_enabled = "No"
	settings.save()
	assert stored()["sampling_rate"] == "0.25"
	effective = config.get_config()
	assert effective.environment == "staging"
	assert effective.environment_source == "performance_settings"
	assert effective.monitoring.sampling_rate == 0.25
	assert effective.thresholds.queries_per_operation.warning == 7
	assert effective.monitoring.enabled is False


@pytest.mark.parametrize(
	("field", "value", "rule"),
	[
		("sampling_rate", "1.5", "between 0 and 1"),
		("api_response_warning_ms", "20", "below the critical"),
		("health_warning", "80", "above the critical"),
		("detail_retention_days", "0", "at least 1"),
		("hourly_retention_days", "3", "at least as long"),
		("memory_warning_mb", "-1", "negative"),
		("queries_critical", "many", "must be a number"),
	],
)
def test_bad_values_are_rejected_without_change(settings, field, value, rule):
	settings.sampling_rate = "0.5"
	settings.save()
	frappe.db.commit()
	before = stored()
	doc = frappe.get_single("Performance Settings")
	doc.set(field, value)
	with pytest.raises(frappe.ValidationError) as e:
		doc.save()
	assert field in str(e.value) and rule in str(e.value)
	frappe.db.rollback()
	assert stored() == before


def test_saving_clears_the_cached_configuration(settings):
	first = config.get_config()
	assert cached_config() is not None
	settings.sampling_rate = "0.75" if first.monitoring.sampling_rate != 0.75 else "0.5"
	settings.save()
	assert cached_config() is None
	assert config.get_config().monitoring.sampling_rate == float(settings.sampling_rate)


def test_clear_cache_drops_the_configuration(settings):
	config.get_config()
	frappe.clear_cache()
	assert cached_config() is None


def test_site_config_and_environment_variable_are_consulted(settings, monkeypatch):
	monkeypatch.setitem(frappe.conf, config.SITE_CONFIG_KEY, "development")
	monkeypatch.setenv(config.ENVIRONMENT_VARIABLE, "staging")
	assert config.load_config().environment_source == "site_config"
	monkeypatch.delitem(frappe.conf, config.SITE_CONFIG_KEY)
	loaded = config.load_config()
	assert (loaded.environment, loaded.environment_source) == ("staging", "environment_variable")
