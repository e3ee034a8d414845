"""The environment-aware configuration: the one place every threshold, limit and retention comes from.

The first half is pure Python (dataclasses, environment defaults, validation) and needs no site.
The second half (`get_config`, `update_config`, caching) reads Performance Settings, the site config
and the process environment through Frappe, imported lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENVIRONMENTS = ("development", "staging", "production")
SITE_CONFIG_KEY = "verenigingen_perf_environment"
ENVIRONMENT_VARIABLE = "VERENIGINGEN_PERF_ENVIRONMENT"
SETTINGS_DOCTYPE = "Performance Settings"
CACHE_KEY = "effective_config"
# a batch analysis loads every member in one request: no configuration may raise it past this
BATCH_HARD_CAP = 50
# a Frappe doctype name: letters, digits, spaces, hyphens and underscores, at most 61 characters
_DOCTYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9 _-]{0,60}$")


@dataclass(frozen=True)
class Level:
	"""A warning and a critical level for one measure."""

	warning: float
	critical: float


@dataclass(frozen=True)
class PerformanceThresholds:
	api_response_ms: Level
	queries_per_operation: Level
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
	drain_claim_timeout_s: int


@dataclass(frozen=True)
class AnalysisConfig:
	"""What the health check, the dashboard and the member analysis look at."""

	health_window_hours: int
	slowest_operations: int
	n_plus_one_min_repeats: int
	batch_max_members: int
	member_doctype: str


@dataclass(frozen=True)
class PerformanceConfig:
	environment: str
	environment_source: str
	thresholds: PerformanceThresholds
	retention: DataRetentionConfig
	monitoring: MonitoringConfig
	analysis: AnalysisConfig
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
	"""One overridable setting: its flat key (the Performance Settings fieldname) and where it lands."""

	key: str
	section: str
	path: tuple[str, ...]
	kind: type
	minimum: float | None = 0
	maximum: float | None = None
	strictly_positive: bool = False


def _s(key: str, section: str, *path: str, kind: type = float, **rules: Any) -> Setting:
	return Setting(key, section, tuple(path), kind, **rules)


SETTINGS: dict[str, Setting] = {
	s.key: s
	for s in (
		_s("api_response_warning_ms", "thresholds", "api_response_ms", "warning", strictly_positive=True),
		_s("api_response_critical_ms", "thresholds", "api_response_ms", "critical", strictly_positive=True),
		_s("queries_warning", "thresholds", "queries_per_operation", "warning", strictly_positive=True),
		_s("queries_critical", "thresholds", "queries_per_operation", "critical", strictly_positive=True),
		_s("memory_warning_mb", "thresholds", "memory_mb", "warning", strictly_positive=True),
		_s("memory_critical_mb", "thresholds", "memory_mb", "critical", strictly_positive=True),
		_s("error_rate_warning", "thresholds", "error_rate", "warning", maximum=1),
		_s("error_rate_critical", "thresholds", "error_rate", "critical", maximum=1),
		_s("health_warning", "thresholds", "health_score", "warning", maximum=100),
		_s("health_critical", "thresholds", "health_score", "critical", maximum=100),
		_s("job_lag_warning_s", "thresholds", "job_lag_s", "warning", strictly_positive=True),
		_s("job_lag_critical_s", "thresholds", "job_lag_s", "critical", strictly_positive=True),
		_s("detail_retention_days", "retention", "detail_days", kind=int, minimum=1),
		_s("hourly_retention_days", "retention", "hourly_days", kind=int, minimum=1),
		_s("daily_retention_days", "retention", "daily_days", kind=int, minimum=1),
		_s("aggregation_delay_minutes", "retention", "aggregation_delay_minutes", kind=int),
		_s("delete_batch_size", "retention", "delete_batch_size", kind=int, minimum=1),
		_s("aggregation_page_size", "retention", "aggregation_page_size", kind=int, minimum=100),
		_s("job_lock_timeout_s", "retention", "job_lock_timeout_s", kind=int, minimum=60),
		_s("monitoring_enabled", "monitoring", "enabled", kind=bool),
		_s("sampling_rate", "monitoring", "sampling_rate", maximum=1),
		_s("capture_memory_peak", "monitoring", "capture_memory_peak", kind=bool),
		_s("slow_query_ms", "monitoring", "slow_query_ms", strictly_positive=True),
		_s("buffer_max_entries", "monitoring", "buffer_max_entries", kind=int, minimum=1),
		_s("drain_batch_size", "monitoring", "drain_batch_size", kind=int, minimum=1),
		_s("dashboard_cache_ttl_s", "monitoring", "dashboard_cache_ttl_s", kind=int),
		_s("excluded_paths", "monitoring", "excluded_paths", kind=tuple),
		_s("context_max_chars", "monitoring", "context_max_chars", kind=int, minimum=64),
		_s("flush_interval_ms", "monitoring", "flush_interval_ms", kind=int, minimum=10),
		_s("config_refresh_s", "monitoring", "config_refresh_s", kind=int, minimum=1),
		_s("drain_claim_timeout_s", "monitoring", "drain_claim_timeout_s", kind=int, minimum=10),
		_s("health_window_hours", "analysis", "health_window_hours", kind=int, minimum=1, maximum=168),
		_s("slowest_operations", "analysis", "slowest_operations", kind=int, minimum=1, maximum=100),
		_s("n_plus_one_min_repeats", "analysis", "n_plus_one_min_repeats", kind=int, minimum=2),
		_s(
			"batch_max_members",
			"analysis",
			"batch_max_members",
			kind=int,
			minimum=1,
			maximum=BATCH_HARD_CAP,
		),
		_s("member_doctype", "analysis", "member_doctype", kind=str),
	)
}

# (warning key, critical key, True when a higher value is better)
LEVEL_PAIRS: tuple[tuple[str, str, bool], ...] = (
	("api_response_warning_ms", "api_response_critical_ms", False),
	("queries_warning", "queries_critical", False),
	("memory_warning_mb", "memory_critical_mb", False),
	("error_rate_warning", "error_rate_critical", False),
	("health_warning", "health_critical", True),
	("job_lag_warning_s", "job_lag_critical_s", False),
)

# (shorter key, longer key): the second must keep data at least as long as the first
RETENTION_ORDER: tuple[tuple[str, str], ...] = (
	("detail_retention_days", "hourly_retention_days"),
	("hourly_retention_days", "daily_retention_days"),
)

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
)

_CAPTURE_DEFAULTS = {
	"excluded_paths": _EXCLUDED_PATHS,
	"context_max_chars": 1000,
	"flush_interval_ms": 200,
	"config_refresh_s": 5,
	"drain_claim_timeout_s": 300,
}

_ANALYSIS_DEFAULTS = {
	"health_window_hours": 1,
	"slowest_operations": 5,
	"batch_max_members": 10,
	"member_doctype": "Member",
}

_RETENTION_DEFAULTS = {
	"detail_retention_days": 7,
	"hourly_retention_days": 90,
	"daily_retention_days": 730,
	"aggregation_delay_minutes": 5,
	"delete_batch_size": 5000,
	"aggregation_page_size": 10000,
	"job_lock_timeout_s": 3600,
}

ENVIRONMENT_DEFAULTS: dict[str, dict[str, Any]] = {
	"development": {
		"api_response_warning_ms": 500,
		"api_response_critical_ms": 2000,
		"queries_warning": 50,
		"queries_critical": 100,
		"memory_warning_mb": 500,
		"memory_critical_mb": 1000,
		"error_rate_warning": 0.10,
		"error_rate_critical": 0.25,
		"health_warning": 70,
		"health_critical": 50,
		"job_lag_warning_s": 900,
		"job_lag_critical_s": 3600,
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
		"n_plus_one_min_repeats": 3,
	},
	"staging": {
		"api_response_warning_ms": 100,
		"api_response_critical_ms": 250,
		"queries_warning": 20,
		"queries_critical": 40,
		"memory_warning_mb": 250,
		"memory_critical_mb": 500,
		"error_rate_warning": 0.05,
		"error_rate_critical": 0.10,
		"health_warning": 80,
		"health_critical": 70,
		"job_lag_warning_s": 600,
		"job_lag_critical_s": 1800,
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
		"n_plus_one_min_repeats": 5,
	},
	"production": {
		"api_response_warning_ms": 10,
		"api_response_critical_ms": 15,
		"queries_warning": 5,
		"queries_critical": 10,
		"memory_warning_mb": 100,
		"memory_critical_mb": 200,
		"error_rate_warning": 0.01,
		"error_rate_critical": 0.05,
		"health_warning": 90,
		"health_critical": 85,
		"job_lag_warning_s": 300,
		"job_lag_critical_s": 900,
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
		"n_plus_one_min_repeats": 5,
	},
}


# --- pure functions ------------------------------------------------------------------------------


def _is_blank(value: Any) -> bool:
	return value is None or (isinstance(value, str) and not value.strip())


def coerce(setting: Setting, value: Any) -> Any:
	"""Convert a raw value (from the desk, JSON or the API) to the setting's type, or raise ValueError."""
	if setting.kind is tuple:
		return _coerce_paths(setting, value)
	if setting.kind is str:
		if not isinstance(value, str) or not _DOCTYPE_NAME.match(value.strip()):
			raise ValueError(
				f"{setting.key}: must be a doctype name (a letter, then letters, digits, spaces, '-' or '_',"
				f" at most 61 characters), got {value!r}"
			)
		return value.strip()
	if setting.kind is bool:
		if isinstance(value, bool):
			return value
		if isinstance(value, int | float) and value in (0, 1):
			return bool(value)
		if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false", "yes", "no"):
			return value.strip().lower() in ("1", "true", "yes")
		raise ValueError(f"{setting.key}: must be a boolean (true/false, 1/0), got {value!r}")
	if isinstance(value, bool):
		raise ValueError(f"{setting.key}: must be a number, got a boolean")
	try:
		number = float(value.strip()) if isinstance(value, str) else float(value)
	except (TypeError, ValueError):
		raise ValueError(f"{setting.key}: must be a number, got {value!r}") from None
	if not math.isfinite(number):
		raise ValueError(f"{setting.key}: must be a finite number, got {value!r}")
	if setting.kind is int:
		if not number.is_integer():
			raise ValueError(f"{setting.key}: must be a whole number, got {value!r}")
		return int(number)
	return number


def _coerce_paths(setting: Setting, value: Any) -> tuple[str, ...]:
	"""A list of path prefixes: a list, or text with one prefix per line."""
	items = value.splitlines() if isinstance(value, str) else value
	if not isinstance(items, list | tuple):
		raise ValueError(f"{setting.key}: must be a list of path prefixes, got {value!r}")
	paths = []
	for item in items:
		if not isinstance(item, str):
			raise ValueError(f"{setting.key}: every entry must be a path prefix, got {item!r}")
		if item.strip():
			if not item.strip().startswith("/"):
				raise ValueError(f"{setting.key}: path prefixes start with '/', got {item.strip()!r}")
			paths.append(item.strip())
	return tuple(paths)


def _check_range(setting: Setting, value: Any) -> str | None:
	if setting.kind in (bool, tuple, str):
		return None
	if setting.minimum is not None and value < setting.minimum:
		if setting.minimum == 0:
			return f"{setting.key}: must not be negative, got {value}"
		return f"{setting.key}: must be at least {setting.minimum}, got {value}"
	if setting.strictly_positive and value <= 0:
		return f"{setting.key}: must be greater than 0, got {value}"
	if setting.maximum is not None and value > setting.maximum:
		return f"{setting.key}: must be between {setting.minimum} and {setting.maximum}, got {value}"
	return None


def clean_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
	"""Coerce raw overrides; blank values drop the override. Returns (clean values, errors)."""
	clean: dict[str, Any] = {}
	errors: list[str] = []
	for key, raw in overrides.items():
		setting = SETTINGS.get(key)
		if setting is None:
			errors.append(f"{key}: unknown setting (known: {', '.join(sorted(SETTINGS))})")
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
	return errors


def validate_overrides(environment: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
	"""Return the clean overrides, or raise ConfigValidationError listing every broken rule."""
	if environment not in ENVIRONMENTS:
		raise ConfigValidationError(
			[f"environment: must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}"]
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
		"analysis": {},
	}
	for key, setting in SETTINGS.items():
		target = sections[setting.section]
		*parents, leaf = setting.path
		for parent in parents:
			target = target.setdefault(parent, {})
		target[leaf] = setting.kind(values[key])
	thresholds = {name: Level(**level) for name, level in sections["thresholds"].items()}
	return PerformanceConfig(
		environment=environment,
		environment_source=environment_source,
		thresholds=PerformanceThresholds(**thresholds),
		retention=DataRetentionConfig(**sections["retention"]),
		monitoring=MonitoringConfig(**sections["monitoring"]),
		analysis=AnalysisConfig(**sections["analysis"]),
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
					[f"environment ({source}): must be one of {', '.join(ENVIRONMENTS)}, got {value!r}"]
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


def get_config() -> PerformanceConfig:
	"""The effective configuration, cached in Redis so every worker shares it and a save clears it.

	Read with a plain client: Frappe's cache helpers also keep a per-request copy, which a
	long-lived process (a console, the scheduler) would otherwise keep seeing after a save."""
	import json

	import redis

	from verenigingen_perf.utils.performance.redis_store import key, redis_client

	try:
		cached = redis_client().get(key(CACHE_KEY))
	except redis.exceptions.ConnectionError:
		return load_config()
	if cached is not None:
		with contextlib.suppress(KeyError, TypeError):
			return config_from_dict(json.loads(cached))
	# nothing cached, or cached by an older version of the app
	config = load_config()
	with contextlib.suppress(redis.exceptions.ConnectionError):
		redis_client().set(key(CACHE_KEY), json.dumps(config.as_dict()))
	return config


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
		analysis=AnalysisConfig(**data["analysis"]),
		overrides={
			key: tuple(value) if SETTINGS[key].kind is tuple else value
			for key, value in (data.get("overrides") or {}).items()
		},
	)


def clear_config_cache() -> None:
	import redis

	from verenigingen_perf.utils.performance.redis_store import key, redis_client

	with contextlib.suppress(redis.exceptions.ConnectionError):
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
		return "\n".join(value)
	return str(value)


def update_config(values: Mapping[str, Any], environment: str | None = None) -> PerformanceConfig:
	"""Validate and persist overrides (a blank value clears one); nothing changes if any rule is broken.

	`environment` sets the explicit environment ("" clears it); None leaves it as it is.
	"""
	import frappe

	doc = frappe.get_single(SETTINGS_DOCTYPE)
	unknown = [key for key in values if key not in SETTINGS]
	if unknown:
		raise ConfigValidationError(
			[f"{key}: unknown setting (known: {', '.join(sorted(SETTINGS))})" for key in unknown]
		)
	if environment is not None:
		doc.environment = environment
	for key, value in values.items():
		doc.set(key, value)
	doc.save()
	return get_config()


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
	return {"valid": True, "errors": [], "environment": env, "overrides": clean}
