"""Checks of the whitelisted calls' arguments: each bad value is a validation error that names the
argument and the rule (and nothing is changed)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import frappe
from frappe import _

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MOMENT_MAX_CHARS = 40


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
