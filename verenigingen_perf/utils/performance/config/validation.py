"""From raw overrides to the effective configuration: coercion, ranges, rules across settings, the
environment's detection, and the flat views the API and the desk show. Pure Python, no site needed."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from typing import Any

from verenigingen_perf.utils.performance.config.defaults import ENVIRONMENT_DEFAULTS, ENVIRONMENTS
from verenigingen_perf.utils.performance.config.model import (
	AlertingConfig,
	AnalysisConfig,
	ConfigValidationError,
	DatabaseHealthConfig,
	DataRetentionConfig,
	DeskConfig,
	DetectionConfig,
	ExportConfig,
	Level,
	MetaMonitoringConfig,
	MonitoringConfig,
	PerformanceConfig,
	PerformanceThresholds,
	Setting,
)
from verenigingen_perf.utils.performance.config.parsers import DOCTYPE_NAME, is_blank, parse_paths, short_repr
from verenigingen_perf.utils.performance.config.table import LEVEL_PAIRS, RETENTION_ORDER, SETTINGS
from verenigingen_perf.utils.performance.messages import _


def coerce(setting: Setting, value: Any) -> Any:
	"""Convert a raw value (from the desk, JSON or the API) to the setting's type, or raise ValueError."""
	if setting.parse is not None:
		return setting.parse(setting, value)
	if setting.kind is tuple:
		return parse_paths(setting, value)
	if setting.kind is str:
		if not isinstance(value, str) or not DOCTYPE_NAME.match(value.strip()):
			raise ValueError(
				_(
					"{setting}: must be a doctype name (a letter, then letters, digits, spaces, '-' or '_', "
					"at most 61 characters), got {value}",
					setting=setting.key,
					value=short_repr(value),
				)
			)
		return value.strip()
	if setting.kind is bool:
		if isinstance(value, bool):
			return value
		if isinstance(value, int | float) and value in (0, 1):
			return bool(value)
		if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false", "yes", "no"):
			return value.strip().lower() in ("1", "true", "yes")
		raise ValueError(
			_(
				"{setting}: must be a boolean (true/false, 1/0), got {value}",
				setting=setting.key,
				value=short_repr(value),
			)
		)
	if isinstance(value, bool):
		raise ValueError(_("{setting}: must be a number, got a boolean", setting=setting.key))
	try:
		number = float(value.strip()) if isinstance(value, str) else float(value)
	except (TypeError, ValueError, OverflowError):
		raise ValueError(
			_("{setting}: must be a number, got {value}", setting=setting.key, value=short_repr(value))
		) from None
	if not math.isfinite(number):
		raise ValueError(
			_("{setting}: must be a finite number, got {value}", setting=setting.key, value=short_repr(value))
		)
	if setting.kind is int:
		if not number.is_integer():
			raise ValueError(
				_(
					"{setting}: must be a whole number, got {value}",
					setting=setting.key,
					value=short_repr(value),
				)
			)
		return int(number)
	return number


def range_problem(setting: Setting, value: Any) -> str | None:
	if setting.kind in (bool, tuple, str):
		return None
	if setting.minimum is not None and value < setting.minimum:
		if setting.minimum == 0:
			return _("{setting}: must not be negative, got {value}", setting=setting.key, value=value)
		return _(
			"{setting}: must be at least {minimum:g}, got {value}",
			setting=setting.key,
			minimum=setting.minimum,
			value=value,
		)
	if setting.strictly_positive and value <= 0:
		return _("{setting}: must be greater than 0, got {value}", setting=setting.key, value=value)
	if setting.maximum is not None and value > setting.maximum:
		return _(
			"{setting}: must be between {minimum:g} and {maximum:g}, got {value:g}",
			setting=setting.key,
			minimum=setting.minimum or 0,
			maximum=setting.maximum,
			value=value,
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
			errors.append(
				_(
					"{setting}: unknown setting (known: {known})",
					setting=str(key)[:60],
					known=", ".join(sorted(SETTINGS)),
				)
			)
			continue
		if is_blank(raw):
			continue
		try:
			value = coerce(setting, raw)
		except ValueError as e:
			# the Message itself, not str(e): the Frappe side translates it
			errors.append(e.args[0] if e.args and isinstance(e.args[0], str) else str(e))
			continue
		if problem := range_problem(setting, value):
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
				_(
					"{warning_key}: the warning level ({warning}) must be above the critical level "
					"{critical_key} ({critical}), since a higher score is better",
					warning_key=warning_key,
					warning=warning,
					critical_key=critical_key,
					critical=critical,
				)
			)
		elif not higher_is_better and warning >= critical:
			errors.append(
				_(
					"{warning_key}: the warning level ({warning}) must be below the critical level "
					"{critical_key} ({critical})",
					warning_key=warning_key,
					warning=warning,
					critical_key=critical_key,
					critical=critical,
				)
			)
	for shorter_key, longer_key in RETENTION_ORDER:
		if values[longer_key] < values[shorter_key]:
			errors.append(
				_(
					"{longer_key}: aggregates must be kept at least as long as the data they summarise "
					"({longer_key} {longer} < {shorter_key} {shorter})",
					longer_key=longer_key,
					longer=values[longer_key],
					shorter_key=shorter_key,
					shorter=values[shorter_key],
				)
			)
	for key, days in (
		("baseline_window_days", values["baseline_window_days"]),
		("anomaly_weeks", values["anomaly_weeks"] * 7),
	):
		if days > values["hourly_retention_days"]:
			errors.append(
				_(
					"{setting}: detection reads {days} days of hourly aggregates, but hourly_retention_days "
					"keeps only {kept}",
					setting=key,
					days=days,
					kept=values["hourly_retention_days"],
				)
			)
	if values["otlp_enabled"] and not values["otlp_endpoint"]:
		errors.append(_("otlp_enabled: the OTLP export needs otlp_endpoint (the collector's /v1/traces URL)"))
	if values["otlp_enabled"] and not otlp_installed():
		errors.append(
			_(
				"otlp_enabled: the OTLP export needs the app's `otlp` extra "
				"(pip install 'verenigingen_perf[otlp]': opentelemetry-sdk and its OTLP/HTTP exporter)"
			)
		)
	if values["regression_min_replicates"] > values["baseline_window_days"]:
		errors.append(
			_(
				"regression_min_replicates: must not exceed baseline_window_days ({replicates} > {days}): "
				"the baseline holds one replicate of the window's hours per day",
				replicates=values["regression_min_replicates"],
				days=values["baseline_window_days"],
			)
		)
	if values["anomaly_min_history"] > values["anomaly_weeks"]:
		errors.append(
			_(
				"anomaly_min_history: must not exceed anomaly_weeks ({history} > {weeks}): that many weeks "
				"of history can never be there",
				history=values["anomaly_min_history"],
				weeks=values["anomaly_weeks"],
			)
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
			[
				_(
					"environment: must be one of {environments}, got {value}",
					environments=", ".join(ENVIRONMENTS),
					value=short_repr(environment),
				)
			]
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
		if not is_blank(value):
			name = str(value).strip().lower()
			if name not in ENVIRONMENTS:
				raise ConfigValidationError(
					[
						_(
							"environment ({source}): must be one of {environments}, got {value}",
							source=source,
							environments=", ".join(ENVIRONMENTS),
							value=short_repr(value),
						)
					]
				)
			return name, source
	if developer_mode:
		return "development", "developer_mode"
	return "production", "default"


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
