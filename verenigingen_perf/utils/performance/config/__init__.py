"""The environment-aware configuration: the one place every threshold, limit and retention comes from.

The package's layers, each importing only those above it:

- `model`: the frozen dataclasses of the effective configuration and of one setting;
- `parsers`: the parsers of path lists, histogram bounds and URLs, and the error messages' helpers;
- `table`: every setting a site may override, its place and its range, and the rules across settings;
- `defaults`: each environment's defaults;
- `validation`: coercion, ranges and rules, the environment's detection, building the configuration;
- `form`: how Performance Settings' typed fields hold the settings, and which ones a save overrides;
- `loading`: Performance Settings, the site config and the environment through Frappe, cached in Redis.

All but `loading` are pure Python and need no site. Every numeric setting has a minimum and a maximum
(docs list them): a value outside them is refused before anything is saved or cached, so no setting
can make a job overflow a date, a thread sleep for years or a number fail to serialise.
"""

from __future__ import annotations

from verenigingen_perf.utils.performance.config.defaults import (
	ENVIRONMENT_DEFAULTS,
	ENVIRONMENTS,
)
from verenigingen_perf.utils.performance.config.form import (
	OVERRIDDEN_FIELD,
	field_type,
	field_value,
	format_overridden,
	overrides_from_fields,
	parse_overridden,
)
from verenigingen_perf.utils.performance.config.loading import (
	CACHE_KEY,
	ENVIRONMENT_VARIABLE,
	SITE_CONFIG_KEY,
	clear_config_cache,
	environment_fallbacks,
	get_config,
	load_config,
	read_stored_settings,
	reset_overrides,
	settings_pending,
	settings_saved_in_this_transaction,
	update_config,
	validate_member_doctype,
	validation_report,
)
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
from verenigingen_perf.utils.performance.config.parsers import (
	DOCTYPE_NAME,
	MAX_BUCKET_MS,
	MAX_BUCKETS,
	MAX_EXCLUDED_PATHS,
	MAX_PATH_CHARS,
	MAX_URL_CHARS,
	is_blank,
	parse_bounds,
	parse_paths,
	parse_url,
	short_repr,
)
from verenigingen_perf.utils.performance.config.table import (
	BATCH_HARD_CAP,
	HIGHER_IS_BETTER,
	LEVEL_PAIRS,
	RENAMED_SETTINGS,
	RETENTION_ORDER,
	SETTINGS,
)
from verenigingen_perf.utils.performance.config.validation import (
	OTLP_EXPORTER_MODULE,
	bounds,
	build_config,
	check_consistency,
	clean_overrides,
	coerce,
	config_from_dict,
	describe,
	detect_environment,
	flat_values,
	otlp_installed,
	range_problem,
	validate_overrides,
)
