# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt
"""Performance Settings saves valid overrides, rejects bad ones without change, and clears the cache."""

import json

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
	settings.api_queries_warning = "7"
	settings.monitoring_enabled = "No"
	settings.save()
	assert stored()["sampling_rate"] == "0.25"
	effective = config.get_config()
	assert effective.environment == "staging"
	assert effective.environment_source == "performance_settings"
	assert effective.monitoring.sampling_rate == 0.25
	assert effective.thresholds.api_queries.warning == 7
	assert effective.monitoring.enabled is False


@pytest.mark.parametrize(
	("field", "value", "rule"),
	[
		("sampling_rate", "1.5", "between 0 and 1"),
		("api_response_warning_ms", "3000", "below the critical"),
		("health_warning", "80", "above the critical"),
		("detail_retention_days", "0", "at least 1"),
		("hourly_retention_days", "3", "at least as long"),
		("memory_warning_mb", "-1", "negative"),
		("api_queries_critical", "many", "must be a number"),
		("daily_retention_days", "1000000", "between 1 and 7300"),
		("member_doctype", "Has Role", "child table"),
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


def cached_sampling_rate() -> float | None:
	raw = cached_config()
	return None if raw is None else json.loads(raw)["monitoring"]["sampling_rate"]


def test_the_shared_cache_takes_a_save_only_when_it_is_committed(settings):
	first = config.get_config()
	assert cached_sampling_rate() == first.monitoring.sampling_rate
	new = "0.75" if first.monitoring.sampling_rate != 0.75 else "0.5"
	settings.sampling_rate = new
	settings.save()
	# uncommitted: this transaction sees its own save, nobody caches it
	assert config.get_config().monitoring.sampling_rate == float(new)
	assert cached_sampling_rate() in (None, first.monitoring.sampling_rate)
	frappe.db.rollback()
	assert config.get_config().monitoring.sampling_rate == first.monitoring.sampling_rate
	assert cached_sampling_rate() in (None, first.monitoring.sampling_rate)
	doc = frappe.get_single("Performance Settings")
	doc.sampling_rate = new
	doc.save()
	frappe.db.commit()
	assert cached_sampling_rate() == float(new)
	assert 0 < redis_client().ttl(key(config.CACHE_KEY)) <= first.monitoring.config_cache_ttl_s


def read_in_another_worker() -> None:
	"""get_config in a thread with its own site connection, as another worker would."""
	import threading

	errors = []
	site, sites_path = frappe.local.site, frappe.local.sites_path

	def worker():
		try:
			frappe.init(site=site, sites_path=sites_path, force=True)
			frappe.connect()
			config.get_config()
		except Exception as e:
			errors.append(e)
		finally:
			frappe.destroy()

	thread = threading.Thread(target=worker)
	thread.start()
	thread.join(timeout=60)
	assert not errors, errors


def test_a_reader_racing_a_save_cannot_keep_the_old_values(settings):
	"""A worker that reads the old values while a save is uncommitted (and caches them, since no
	entry is there) is overwritten by the save's commit: the new values always win."""
	old = config.get_config().monitoring.sampling_rate
	new = "0.25" if old != 0.25 else "0.35"
	settings.sampling_rate = new
	settings.save()
	redis_client().delete(key(config.CACHE_KEY))
	read_in_another_worker()
	assert cached_sampling_rate() == old
	frappe.db.commit()
	assert cached_sampling_rate() == float(new)
	assert config.get_config().monitoring.sampling_rate == float(new)


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


def test_a_desk_save_of_the_form_as_shown_overrides_nothing(settings):
	"""The desk loads the form with every field showing the value in effect; saving it untouched keeps
	the site on its environment, and a changed field alone becomes an override."""
	doc = frappe.get_single("Performance Settings")
	doc.run_method("onload")
	in_effect = config.flat_values(config.get_config())
	assert doc.buffer_max_entries == in_effect["buffer_max_entries"]
	assert doc.monitoring_enabled == (1 if in_effect["monitoring_enabled"] else 0)
	defaults = doc.get_onload()["defaults"]
	assert set(defaults) == set(config.ENVIRONMENTS)
	doc.save()
	assert config.read_stored_settings()[1] == {}
	assert config.get_config().overrides == {}

	doc = frappe.get_single("Performance Settings")
	doc.run_method("onload")
	doc.buffer_max_entries = in_effect["buffer_max_entries"] + 1
	doc.save()
	assert config.read_stored_settings()[1] == {
		"buffer_max_entries": str(in_effect["buffer_max_entries"] + 1)
	}
	assert config.get_config().overrides == {"buffer_max_entries": in_effect["buffer_max_entries"] + 1}


def test_a_setting_follows_a_change_of_environment_unless_overridden(settings):
	config.update_config({"buffer_max_entries": "1234"}, environment="production")
	doc = frappe.get_single("Performance Settings")
	doc.environment = "development"
	doc.save()
	development = config.ENVIRONMENT_DEFAULTS["development"]
	effective = config.flat_values(config.get_config())
	assert effective["buffer_max_entries"] == 1234
	for name in ("sampling_rate", "api_queries_warning", "monitoring_enabled", "excluded_paths"):
		assert effective[name] == development[name], name
	assert frappe.get_single("Performance Settings").sampling_rate == development["sampling_rate"]


LEGACY = {
	"sampling_rate": "0.250",
	"buffer_max_entries": "777",
	"monitoring_enabled": "No",
	"capture_memory_peak": "Yes",
	"excluded_paths": "/assets/\n/legacy/",
	"prometheus_buckets_ms": "5\n50\n500",
	"otlp_endpoint": "https://otel.example.org/v1/traces",
	"member_doctype": "User",
	# pinned at what production's default is now: still overrides (an environment change keeps them)
	"alert_webhook_refuse_private_addresses": "Yes",
	"drain_batch_size": str(config.ENVIRONMENT_DEFAULTS["production"]["drain_batch_size"]),
}


def test_the_typed_settings_patch_keeps_every_stored_override(settings):
	"""Settings stored before the fields were typed (text fields, "Yes"/"No", no overridden list) read
	the same after the patch; the patch run again changes nothing."""
	from verenigingen_perf.patches.v0_4 import typed_settings

	for field in (*config.SETTINGS, config.OVERRIDDEN_FIELD):
		frappe.db.sql("delete from `tabSingles` where doctype='Performance Settings' and field=%s", (field,))
	for field, value in LEGACY.items():
		frappe.db.sql(
			"insert into `tabSingles` (doctype, field, value) values ('Performance Settings', %s, %s)",
			(field, value),
		)
	# a field the old form saved blank followed the environment
	frappe.db.sql(
		"insert into `tabSingles` (doctype, field, value) values ('Performance Settings', 'api_queries_warning', '')"
	)
	config.clear_config_cache()
	before = config.validate_overrides("production", config.read_stored_settings()[1])
	assert set(before) == set(LEGACY)
	assert before["monitoring_enabled"] is False and before["capture_memory_peak"] is True

	typed_settings.execute()
	after = config.read_stored_settings()[1]
	assert config.validate_overrides("production", after) == before
	assert config.parse_overridden(stored()[config.OVERRIDDEN_FIELD]) == set(LEGACY)
	doc = frappe.get_single("Performance Settings")
	assert (doc.monitoring_enabled, doc.capture_memory_peak) == (0, 1)
	once = stored()
	typed_settings.execute()
	assert stored() == once

	# the desk's next save of the form as shown keeps them all
	doc.run_method("onload")
	doc.environment = "production"
	doc.save()
	assert config.validate_overrides("production", config.read_stored_settings()[1]) == before
