"""Parsers for the settings no plain kind describes (path lists, histogram bounds, a URL), and the
helpers every error message uses. Pure Python."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

from verenigingen_perf.utils.performance.config.model import Setting
from verenigingen_perf.utils.performance.messages import _

# a Frappe doctype name: letters, digits, spaces, hyphens and underscores, at most 61 characters
DOCTYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9 _-]{0,60}$")
# excluded path prefixes: how many, and how long each may be
MAX_EXCLUDED_PATHS = 100
MAX_PATH_CHARS = 200
# histogram bounds: how many, and the longest (a week, as a job's duration levels)
MAX_BUCKETS = 50
MAX_BUCKET_MS = 7 * 24 * 3_600_000
MAX_URL_CHARS = 500


def is_blank(value: Any) -> bool:
	return value is None or (isinstance(value, str) and not value.strip())


def short_repr(value: Any) -> str:
	"""A value as an error message shows it: never a 300-digit number or a page of text."""
	text = repr(value)
	return text if len(text) <= 60 else text[:57] + "..."


def parse_paths(setting: Setting, value: Any) -> tuple[str, ...]:
	"""A list of path prefixes: a list, or text with one prefix per line."""
	items = value.splitlines() if isinstance(value, str) else value
	if not isinstance(items, list | tuple):
		raise ValueError(
			_(
				"{setting}: must be a list of path prefixes, got {value}",
				setting=setting.key,
				value=short_repr(value),
			)
		)
	paths = []
	for item in items:
		if not isinstance(item, str):
			raise ValueError(
				_(
					"{setting}: every entry must be a path prefix, got {value}",
					setting=setting.key,
					value=short_repr(item),
				)
			)
		if item.strip():
			prefix = item.strip()
			if not prefix.startswith("/"):
				raise ValueError(
					_(
						"{setting}: path prefixes start with '/', got {value}",
						setting=setting.key,
						value=short_repr(prefix),
					)
				)
			if len(prefix) > MAX_PATH_CHARS:
				raise ValueError(
					_(
						"{setting}: a path prefix has at most {limit} characters, got {length}",
						setting=setting.key,
						limit=MAX_PATH_CHARS,
						length=len(prefix),
					)
				)
			paths.append(prefix)
	unique = tuple(dict.fromkeys(paths))
	if len(unique) > MAX_EXCLUDED_PATHS:
		raise ValueError(
			_(
				"{setting}: at most {limit} path prefixes, got {count} distinct ones",
				setting=setting.key,
				limit=MAX_EXCLUDED_PATHS,
				count=len(unique),
			)
		)
	return unique


def parse_bounds(setting: Setting, value: Any) -> tuple[float, ...]:
	"""Histogram bounds: a list of numbers, or text with numbers separated by commas or lines;
	strictly ascending, each above 0 and at most a week."""
	items = re.split(r"[,\s]+", value.strip()) if isinstance(value, str) else value
	if not isinstance(items, list | tuple):
		raise ValueError(
			_(
				"{setting}: must be a list of numbers (ms), got {value}",
				setting=setting.key,
				value=short_repr(value),
			)
		)
	bounds_ms = []
	for item in items:
		if isinstance(item, str) and not item.strip():
			continue
		if isinstance(item, bool):
			raise ValueError(
				_(
					"{setting}: every bound must be a number, got {value}",
					setting=setting.key,
					value=short_repr(item),
				)
			)
		try:
			number = float(item)
		except (TypeError, ValueError, OverflowError):
			raise ValueError(
				_(
					"{setting}: every bound must be a number, got {value}",
					setting=setting.key,
					value=short_repr(item),
				)
			) from None
		if not math.isfinite(number) or not 0 < number <= MAX_BUCKET_MS:
			raise ValueError(
				_(
					"{setting}: every bound must be above 0 and at most {limit:g} ms, got {value}",
					setting=setting.key,
					limit=MAX_BUCKET_MS,
					value=short_repr(item),
				)
			)
		bounds_ms.append(number)
	if not bounds_ms or len(bounds_ms) > MAX_BUCKETS:
		raise ValueError(
			_(
				"{setting}: 1 to {limit} bounds, got {count}",
				setting=setting.key,
				limit=MAX_BUCKETS,
				count=len(bounds_ms),
			)
		)
	if any(b <= a for a, b in itertools.pairwise(bounds_ms)):
		raise ValueError(
			_(
				"{setting}: the bounds must be strictly ascending, got {value}",
				setting=setting.key,
				value=short_repr(value),
			)
		)
	return tuple(bounds_ms)


def parse_url(setting: Setting, value: Any) -> str:
	"""An http(s) URL without credentials in it (they belong in the OTLP headers, a password field)."""
	from urllib.parse import urlsplit

	text = value.strip() if isinstance(value, str) else None
	if not text or len(text) > MAX_URL_CHARS or any(ord(c) < 33 for c in text):
		raise ValueError(
			_(
				"{setting}: must be an http(s) URL of at most {limit} characters without spaces, got {value}",
				setting=setting.key,
				limit=MAX_URL_CHARS,
				value=short_repr(value),
			)
		)
	try:
		parts = urlsplit(text)
		_port = parts.port
	except ValueError:
		raise ValueError(
			_("{setting}: not a valid URL, got {value}", setting=setting.key, value=short_repr(value))
		) from None
	if parts.scheme not in ("http", "https") or not parts.hostname:
		raise ValueError(
			_(
				"{setting}: must be an http:// or https:// URL with a host, got {value}",
				setting=setting.key,
				value=short_repr(value),
			)
		)
	if parts.username or parts.password:
		raise ValueError(
			_("{setting}: must not carry credentials; put them in the OTLP headers", setting=setting.key)
		)
	return text
