"""Unit tests of how Performance Settings' typed fields hold the configuration: which settings a save
overrides, whoever loaded the form, and what the fields show. No site, no Frappe."""

from typing import Any

import pytest

from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.config import (
	ENVIRONMENT_DEFAULTS,
	SETTINGS,
	field_type,
	field_value,
	format_overridden,
	overrides_from_fields,
	parse_overridden,
)

PRODUCTION = ENVIRONMENT_DEFAULTS["production"]


def fields_showing(values: dict[str, Any]) -> dict[str, Any]:
	"""The form's fields as the desk shows them: every setting's value in effect, as its field holds it."""
	return {key: field_value(SETTINGS[key], values[key]) for key in SETTINGS}


def save(
	fields: dict[str, Any],
	overridden: set[str] = frozenset(),
	stored: dict[str, Any] | None = None,
	shown: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
	in_effect = fields_showing(PRODUCTION)
	return overrides_from_fields(
		fields,
		set(overridden),
		stored=in_effect if stored is None else stored,
		shown=in_effect if shown is None else shown,
		defaults=PRODUCTION,
	)


def test_every_setting_has_a_typed_field():
	types = {key: field_type(setting) for key, setting in SETTINGS.items()}
	assert types["sampling_rate"] == "Float"
	assert types["buffer_max_entries"] == "Int"
	assert types["monitoring_enabled"] == "Check"
	assert types["excluded_paths"] == "Small Text"
	assert types["member_doctype"] == "Data"
	assert set(types.values()) == {"Int", "Float", "Check", "Small Text", "Data"}


def test_field_values_are_what_the_field_holds():
	assert field_value(SETTINGS["monitoring_enabled"], True) == 1
	assert field_value(SETTINGS["capture_memory_peak"], False) == 0
	assert field_value(SETTINGS["prometheus_buckets_ms"], (5, 10.5)) == "5\n10.5"
	assert field_value(SETTINGS["excluded_paths"], ("/a/", "/b")) == "/a/\n/b"
	assert field_value(SETTINGS["buffer_max_entries"], 7) == 7
	assert field_value(SETTINGS["sampling_rate"], None) is None
	# every default of every environment reads back as itself
	for defaults in ENVIRONMENT_DEFAULTS.values():
		for key, setting in SETTINGS.items():
			shown = field_value(setting, defaults[key])
			if shown not in (None, ""):
				assert config.coerce(setting, shown) == defaults[key], key


def test_the_overridden_list_holds_known_keys_only_and_is_bounded():
	assert parse_overridden("sampling_rate\n  buffer_max_entries \nnot_a_setting\n") == {
		"sampling_rate",
		"buffer_max_entries",
	}
	assert parse_overridden(None) == set()
	assert parse_overridden(42) == set()
	assert parse_overridden("sampling_rate\n" * 100_000) == set()
	# written in the table's order, one per line, whatever order it was given in
	assert format_overridden(["buffer_max_entries", "sampling_rate", "nope"]) == "\n".join(
		key for key in SETTINGS if key in {"buffer_max_entries", "sampling_rate"}
	)


def test_an_untouched_form_overrides_nothing_whoever_loaded_it():
	in_effect = fields_showing(PRODUCTION)
	# the desk: the fields show the values in effect
	assert save(in_effect) == ({}, [])
	# code: a fresh install's fields are blank
	assert save({}, stored={}) == ({}, [])
	# code, after the environment changed: the fields hold what the old environment put there
	development = fields_showing(ENVIRONMENT_DEFAULTS["development"])
	assert save(development, stored=development, shown=in_effect) == ({}, [])


def test_a_changed_field_overrides_and_a_cleared_one_or_the_default_follows_the_environment():
	fields = fields_showing(PRODUCTION) | {"sampling_rate": 0.25, "monitoring_enabled": 0}
	assert save(fields) == ({"sampling_rate": 0.25, "monitoring_enabled": False}, [])
	overridden = {"sampling_rate", "monitoring_enabled"}
	stored = fields
	# saved again untouched: both stay overridden
	assert save(fields, overridden, stored=stored, shown=stored)[0] == {
		"sampling_rate": 0.25,
		"monitoring_enabled": False,
	}
	# cleared, and set back to the environment's default: both follow the environment again
	back = fields | {"sampling_rate": None, "monitoring_enabled": 1}
	assert save(back, overridden, stored=stored, shown=stored) == ({}, [])


def test_another_environment_s_default_is_an_override_here():
	"""Only this environment's default is "no override": another environment's default is a value."""
	development = ENVIRONMENT_DEFAULTS["development"]
	key = next(k for k in SETTINGS if SETTINGS[k].kind is int and development[k] != PRODUCTION[k])
	fields = fields_showing(PRODUCTION) | {key: development[key]}
	clean, errors = save(fields)
	assert (clean, errors) == ({key: development[key]}, [])


def test_bad_values_are_refused_only_where_the_save_touches_them():
	in_effect = fields_showing(PRODUCTION)
	clean, errors = save(in_effect | {"sampling_rate": 1.5, "buffer_max_entries": "many"})
	assert clean == {}
	assert any("sampling_rate" in e and "between 0 and 1" in e for e in errors), errors
	assert any("buffer_max_entries" in e for e in errors), errors
	# a stored value that has become unusable is not held against a save that does not touch it
	stored = in_effect | {"buffer_max_entries": "many"}
	assert save(stored, stored=stored) == ({}, [])


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_each_setting_can_be_overridden_and_released(key):
	setting = SETTINGS[key]
	default = PRODUCTION[key]
	other = {
		int: lambda d: (d or 0) + 1,
		float: lambda d: (d or 0) / 2 if d else 0.5,
		bool: lambda d: not d,
		tuple: lambda d: d[:1] if d else ("/x/",),
		str: lambda d: "Contact" if d != "Contact" else "Member",
	}[setting.kind](default)
	if key == "otlp_endpoint":
		other = "https://otel.example.org/v1/traces"
	fields = fields_showing(PRODUCTION) | {key: field_value(setting, other)}
	assert save(fields) == ({key: config.coerce(setting, field_value(setting, other))}, [])
	released = fields | {key: field_value(setting, default)}
	assert save(released, {key}, stored=fields, shown=fields) == ({}, [])


def test_an_untouched_override_equal_to_the_default_stays_until_it_is_changed_or_cleared():
	"""A pin that equals this environment's default (set before the fields were typed, or made in
	another environment) survives a save that does not touch it; a change releases it."""
	fields = fields_showing(PRODUCTION)
	pinned = {"monitoring_enabled", "drain_batch_size"}
	assert save(fields, pinned, stored=fields, shown=fields) == (
		{"monitoring_enabled": True, "drain_batch_size": PRODUCTION["drain_batch_size"]},
		[],
	)
	changed = fields | {"monitoring_enabled": 0, "drain_batch_size": None}
	assert save(changed, pinned, stored=fields, shown=fields) == ({"monitoring_enabled": False}, [])
	assert config.equals_default(
		SETTINGS["drain_batch_size"], str(PRODUCTION["drain_batch_size"]), PRODUCTION["drain_batch_size"]
	)
	assert not config.equals_default(SETTINGS["otlp_endpoint"], "https://x.example/", "")
