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
		invalid(f"{argument}: must be a whole number from {low} to {high}, got {str(value)[:40]!r}")
	return int(number)


def text(value: Any, argument: str, max_chars: int, required: bool = True, single_line: bool = False) -> str:
	"""Stripped text of at most `max_chars` ("" when optional and missing)."""
	if value is None or (isinstance(value, str) and not value.strip()):
		if required:
			invalid(f"{argument}: must not be empty")
		return ""
	if not isinstance(value, str):
		invalid(f"{argument}: must be text, got {type(value).__name__}")
	stripped = value.strip()
	if len(stripped) > max_chars:
		invalid(f"{argument}: at most {max_chars} characters, got {len(stripped)}")
	if single_line and _CONTROL.search(stripped):
		invalid(f"{argument}: must not contain control characters")
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
		invalid(f"{argument}: nested more than {max_depth} levels deep")
	try:
		return json.loads(value)
	except ValueError:
		invalid(f"{argument}: starts like {what} but is not valid JSON")


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
			invalid(f"{argument}: must be a list of {noun}, got a JSON object")
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
		invalid(f"{argument}: at most {max_items} names may be listed, got {len(items)}")
	return list(dict.fromkeys(item(entry, f"{argument}[{i}]") for i, entry in enumerate(items)))


def moment(value: Any, argument: str) -> datetime | None:
	"""A site-local date and time (YYYY-MM-DD HH:MM:SS), or None when not given."""
	if value is None or value == "":
		return None
	if not isinstance(value, str) or len(value) > _MOMENT_MAX_CHARS:
		invalid(f"{argument}: must be a date and time (YYYY-MM-DD HH:MM:SS)")
	try:
		parsed = datetime.fromisoformat(value.strip())
	except ValueError:
		invalid(f"{argument}: must be a date and time (YYYY-MM-DD HH:MM:SS), got {value[:40]!r}")
	if parsed.tzinfo is not None:
		invalid(f"{argument}: give the site's local time, without a time zone")
	return parsed
