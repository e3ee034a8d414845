"""Checks of the whitelisted calls' arguments: each bad value is a validation error that names the
argument and the rule (and nothing is changed)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import frappe
from frappe import _

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MOMENT_MAX_CHARS = 40
# a name of a record, an operation or a pin (Frappe's own names are at most 140 characters)
NAME_MAX_CHARS = 140
# JSON an argument may carry: a list of names is one level deep; this bounds any honest argument, and
# keeps a visitor's 100,000 levels from reaching the parser (whose recursion it would exhaust)
JSON_MAX_DEPTH = 20
# the structure of a JSON text: strings (skipped whole, escapes and all) and brackets
_JSON_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def invalid(message: str) -> None:
	frappe.throw(message, frappe.ValidationError, title=_("Invalid argument"))


def whole_number(value: Any, argument: str, low: int, high: int) -> int:
	try:
		number = float(value)
	except (TypeError, ValueError):
		number = float("nan")
	if isinstance(value, bool) or not number.is_integer() or not low <= number <= high:
		invalid(
			_("{0}: must be a whole number from {1} to {2}, got {3}").format(
				argument, low, high, repr(str(value)[:40])
			)
		)
	return int(number)


def text(value: Any, argument: str, max_chars: int, required: bool = True, single_line: bool = False) -> str:
	"""Stripped text of at most `max_chars` ("" when optional and missing)."""
	if value is None or (isinstance(value, str) and not value.strip()):
		if required:
			invalid(_("{0}: must not be empty").format(argument))
		return ""
	if not isinstance(value, str):
		invalid(_("{0}: must be text, got {1}").format(argument, type(value).__name__))
	stripped = value.strip()
	if len(stripped) > max_chars:
		invalid(_("{0}: at most {1} characters, got {2}").format(argument, max_chars, len(stripped)))
	if single_line and _CONTROL.search(stripped):
		invalid(_("{0}: must not contain control characters").format(argument))
	return stripped


def name(value: Any, argument: str, required: bool = True) -> str:
	"""A name: one line of at most NAME_MAX_CHARS, no control characters ("" when optional and missing)."""
	return text(value, argument, NAME_MAX_CHARS, required=required, single_line=True)


def json_depth(text: str, limit: int) -> int:
	"""How deep `text` nests its lists and objects, counted up to `limit` + 1 (the scan stops there)."""
	depth = deepest = 0
	for match in _JSON_STRUCTURE.finditer(text):
		token = match.group()
		if token in "[{":
			depth += 1
			deepest = max(deepest, depth)
			if deepest > limit:
				break
		elif token in "]}":
			depth -= 1
	return deepest


def json_document(value: str, argument: str, what: str = "JSON", max_depth: int = JSON_MAX_DEPTH) -> Any:
	"""`value` parsed as JSON, refused when it nests deeper than `max_depth` (checked before parsing)."""
	if json_depth(value, max_depth) > max_depth:
		invalid(_("{0}: nested more than {1} levels deep").format(argument, max_depth))
	try:
		return json.loads(value)
	except ValueError:
		invalid(_("{0}: starts like {1} but is not valid JSON").format(argument, what))


def name_list(
	value: Any,
	argument: str,
	max_items: int,
	item: Callable[[Any, str], str],
	noun: str = "names",
) -> list[str]:
	"""A list, a JSON list or a comma-separated string of names, each checked by `item`;
	de-duplicated in order (empty when nothing is listed)."""
	items = value
	if isinstance(value, str):
		stripped = value.strip()
		if stripped.startswith("{"):
			invalid(_("{0}: must be a list of {1}, got a JSON object").format(argument, noun))
		if stripped.startswith("["):
			items = json_document(stripped, argument, "a JSON list")
		else:
			items = [part for part in stripped.split(",") if part.strip()]
	if not isinstance(items, list | tuple):
		invalid(
			f"{argument}: must be a list of {noun}, a JSON list or a comma-separated string, "
			f"got {type(value).__name__}"
		)
	if len(items) > max_items:
		invalid(_("{0}: at most {1} names may be listed, got {2}").format(argument, max_items, len(items)))
	return list(dict.fromkeys(item(entry, f"{argument}[{i}]") for i, entry in enumerate(items)))


def moment(value: Any, argument: str) -> datetime | None:
	"""A site-local date and time (YYYY-MM-DD HH:MM:SS), or None when not given."""
	if value is None or value == "":
		return None
	if not isinstance(value, str) or len(value) > _MOMENT_MAX_CHARS:
		invalid(_("{0}: must be a date and time (YYYY-MM-DD HH:MM:SS)").format(argument))
	try:
		parsed = datetime.fromisoformat(value.strip())
	except ValueError:
		invalid(
			_("{0}: must be a date and time (YYYY-MM-DD HH:MM:SS), got {1}").format(
				argument, repr(value[:40])
			)
		)
	if parsed.tzinfo is not None:
		invalid(_("{0}: give the site's local time, without a time zone").format(argument))
	return parsed
