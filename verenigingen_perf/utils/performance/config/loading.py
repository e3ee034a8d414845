"""The site's configuration through Frappe: Performance Settings, the site config and the process
environment, cached in Redis for every worker and replaced when a save commits."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from verenigingen_perf.utils.performance.config.defaults import ENVIRONMENT_DEFAULTS
from verenigingen_perf.utils.performance.config.form import (
	OVERRIDDEN_FIELD,
	equals_default,
	format_overridden,
	parse_overridden,
)
from verenigingen_perf.utils.performance.config.model import ConfigValidationError, PerformanceConfig
from verenigingen_perf.utils.performance.config.parsers import is_blank
from verenigingen_perf.utils.performance.config.table import SETTINGS
from verenigingen_perf.utils.performance.config.validation import (
	build_config,
	config_from_dict,
	detect_environment,
	validate_overrides,
)
from verenigingen_perf.utils.performance.messages import _
from verenigingen_perf.utils.performance.schema import SETTINGS as SETTINGS_DOCTYPE

SITE_CONFIG_KEY = "verenigingen_perf_environment"
ENVIRONMENT_VARIABLE = "VERENIGINGEN_PERF_ENVIRONMENT"
CACHE_KEY = "effective_config"


# --- the site's configuration (Frappe) -----------------------------------------------------------


def read_stored_settings() -> tuple[str | None, dict[str, Any]]:
	"""Performance Settings as stored: (environment, overrides), without defaults applied."""
	import frappe

	stored = frappe.db.get_singles_dict(SETTINGS_DOCTYPE)
	if OVERRIDDEN_FIELD in stored:
		keys = parse_overridden(stored[OVERRIDDEN_FIELD])
	else:
		# saved before the fields were typed (the typed_settings patch not run yet): a blank field
		# followed the environment, anything else overrode it
		keys = set(SETTINGS)
	overrides = {key: stored.get(key) for key in SETTINGS if key in keys and not is_blank(stored.get(key))}
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
		return _("member_doctype: the doctype {doctype} does not exist on this site", doctype=repr(doctype))
	for flag, what in (
		("issingle", _("a Single")),
		("istable", _("a child table")),
		("is_virtual", _("virtual")),
	):
		if row.get(flag):
			return _(
				"member_doctype: {doctype} is {what}; members are records of a plain doctype",
				doctype=repr(doctype),
				what=what,
			)
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


def clear_config_cache() -> None:
	import redis

	from verenigingen_perf.utils.performance.redis_store import key, redis_client

	with contextlib.suppress(redis.exceptions.RedisError):
		redis_client().delete(key(CACHE_KEY))


def update_config(values: Mapping[str, Any], environment: str | None = None) -> PerformanceConfig:
	"""Validate and persist overrides (a blank value clears one); nothing changes if any rule is broken.

	A value equal to the environment's default is no override: the setting follows the environment.
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
	overridden = parse_overridden(doc.get(OVERRIDDEN_FIELD))
	defaults = _defaults_of(doc.environment or None)
	for key, value in values.items():
		release = is_blank(value) or (
			defaults is not None and equals_default(SETTINGS[key], value, defaults[key])
		)
		doc.set(key, None if release else value)
		overridden.discard(key)
		if not release:
			overridden.add(key)
	doc.set(OVERRIDDEN_FIELD, format_overridden(overridden))
	doc.save()
	return load_config()


def _defaults_of(settings_environment: str | None) -> Mapping[str, Any] | None:
	"""The defaults of the environment in effect (None when it cannot be told: the save then names
	the problem)."""
	try:
		environment, _source = detect_environment(settings_environment, *environment_fallbacks())
	except ConfigValidationError:
		return None
	return ENVIRONMENT_DEFAULTS[environment]


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
