"""Performance Settings' fields are typed now (Int, Float, Check) and each shows the value in effect;
which settings the site overrides is kept in `overridden_settings`.

Before, every setting was a text field: a blank one followed the environment, anything else overrode
it, and the booleans read "Yes" or "No". Every stored override is kept, as it was stored (Singles
hold text whatever the field's type); the booleans become 1 or 0. Running it again changes nothing."""

import frappe

from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.schema import SETTINGS


def execute() -> None:
	stored = frappe.db.get_singles_dict(SETTINGS)
	if config.OVERRIDDEN_FIELD in stored:
		return
	overridden = [key for key in config.SETTINGS if not config.is_blank(stored.get(key))]
	for key in overridden:
		setting = config.SETTINGS[key]
		if setting.kind is bool:
			try:
				value = config.coerce(setting, stored[key])
			except ValueError:
				# left as it was: loading the configuration names the field and the rule
				continue
			frappe.db.set_single_value(SETTINGS, key, 1 if value else 0, update_modified=False)
	frappe.db.set_single_value(
		SETTINGS, config.OVERRIDDEN_FIELD, config.format_overridden(overridden), update_modified=False
	)
	config.clear_config_cache()
