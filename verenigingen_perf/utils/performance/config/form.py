"""How Performance Settings' typed fields hold the configuration: each setting's field type, the value
its field shows, and which settings a save overrides. Pure Python.

A field always shows the value in effect. Which settings the site overrides is kept beside the fields
(`overridden_settings`, one key per line): a number field cannot be blank once Frappe has saved it,
so "blank means the environment's default" cannot live in the fields themselves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from verenigingen_perf.utils.performance.config.model import Setting
from verenigingen_perf.utils.performance.config.parsers import is_blank
from verenigingen_perf.utils.performance.config.table import SETTINGS
from verenigingen_perf.utils.performance.config.validation import coerce, range_problem

OVERRIDDEN_FIELD = "overridden_settings"
# the keys are known names of at most a few dozen characters: anything longer is not a list of them
_MAX_OVERRIDDEN_CHARS = 64 * len(SETTINGS)

_FIELD_TYPES = {int: "Int", float: "Float", bool: "Check", tuple: "Small Text", str: "Data"}


def field_type(setting: Setting) -> str:
	"""The Performance Settings fieldtype that holds the setting."""
	return _FIELD_TYPES[setting.kind]


def field_value(setting: Setting, value: Any) -> Any:
	"""A clean value as its field holds it (None: an empty field)."""
	if value is None:
		return None
	if setting.kind is bool:
		return 1 if value else 0
	if setting.kind is tuple:
		return "\n".join(f"{item:g}" if isinstance(item, float | int) else item for item in value)
	return setting.kind(value)


def parse_overridden(text: Any) -> set[str]:
	"""The overridden settings' keys from their field; anything but a known key is ignored."""
	if not isinstance(text, str) or len(text) > _MAX_OVERRIDDEN_CHARS:
		return set()
	return {line.strip() for line in text.splitlines()} & SETTINGS.keys()


def format_overridden(keys: Iterable[str]) -> str:
	return "\n".join(key for key in SETTINGS if key in set(keys))


def _same(setting: Setting, value: Any, other: Any) -> bool:
	if is_blank(other):
		return False
	if value == other:
		return True
	try:
		return value == coerce(setting, other)
	except ValueError:
		return False


def equals_default(setting: Setting, value: Any, default: Any) -> bool:
	"""`value` (as given, not yet checked) is the environment's default: setting it is no override."""
	return _same(setting, default, value)


def overrides_from_fields(
	fields: Mapping[str, Any],
	overridden: set[str],
	stored: Mapping[str, Any],
	shown: Mapping[str, Any],
	defaults: Mapping[str, Any],
) -> tuple[dict[str, Any], list[str]]:
	"""The overrides a save of Performance Settings stands for, and what is wrong with them.

	A setting is overridden when its field is not blank and either it was overridden and the save left
	its value as stored, or its value is not the environment's default and it was overridden already or
	differs both from the stored value and from the one in effect (what the form showed). So a save of
	an untouched form overrides nothing new and releases nothing, whether it was loaded by the desk
	(fields showing the values in effect) or by code (fields as stored). Clearing a field, or changing
	it to the environment's default, makes it follow the environment again."""
	clean: dict[str, Any] = {}
	errors: list[str] = []
	for key, setting in SETTINGS.items():
		raw = fields.get(key)
		if is_blank(raw):
			continue
		try:
			value = coerce(setting, raw)
			problem = range_problem(setting, value)
		except ValueError as e:
			# the Message itself, not str(e): the Frappe side translates it
			value, problem = raw, e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
		as_stored = _same(setting, value, stored.get(key))
		if key not in overridden and (as_stored or _same(setting, value, shown.get(key))):
			continue
		if problem:
			errors.append(problem)
		elif (key in overridden and as_stored) or not _same(setting, value, defaults[key]):
			# an override the save did not touch stays, even where it equals this environment's
			# default (it was set so, or pinned before the fields were typed): only a change releases
			clean[key] = value
	return clean, errors
