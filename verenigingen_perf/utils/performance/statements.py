"""SQL statements of a block of code: recorded as they go through `frappe.db.sql`, and grouped by
shape (the statement with its literals and parameters replaced by `?`, `IN (...)` lists collapsed).

Equal shapes are equal statements but for their values, so a shape that repeats within one operation
is an N+1 pattern. Used by the member analysis and the regression guards (`verenigingen_perf.testing`).
The shape functions are pure Python.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Frappe writes literals in single quotes (double quotes quote identifiers on SQLite and Postgres)
_STRING = re.compile(r"'(?:[^'\\]|\\.|'')*'")
_PARAMETER = re.compile(r"%\([^)]+\)s|%s|\?")
_NUMBER = re.compile(r"(?<![\w`])-?\d+(?:\.\d+)?(?![\w`])")
_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)")
_SPACE = re.compile(r"\s+")


def statement_shape(query: str) -> str:
	"""The statement with every literal and parameter replaced by `?`: equal shapes, equal statements
	but for their values."""
	shape = _STRING.sub("?", query)
	shape = _PARAMETER.sub("?", shape)
	shape = _NUMBER.sub("?", shape)
	shape = _LIST.sub("(?+)", shape)
	return _SPACE.sub(" ", shape).strip()


@dataclass
class ShapeFigures:
	shape: str
	count: int
	total_ms: float
	max_ms: float = 0.0


def group_shapes(statements: list[tuple[str, float]]) -> list[ShapeFigures]:
	"""Statements grouped by shape, most frequent first (then by time)."""
	groups: dict[str, ShapeFigures] = {}
	for query, seconds in statements:
		shape = statement_shape(query)
		figures = groups.get(shape)
		if figures is None:
			figures = groups[shape] = ShapeFigures(shape, 0, 0.0)
		figures.count += 1
		figures.total_ms += seconds * 1000
		figures.max_ms = max(figures.max_ms, seconds * 1000)
	for figures in groups.values():
		figures.total_ms = round(figures.total_ms, 3)
		figures.max_ms = round(figures.max_ms, 3)
	return sorted(groups.values(), key=lambda f: (-f.count, -f.total_ms, f.shape))


@contextmanager
def recorded_statements() -> Iterator[list[tuple[str, float]]]:
	"""Every statement that goes through `frappe.db.sql` in the block, with its time."""
	import frappe

	db = frappe.db
	own = db.__dict__.get("sql")
	current = db.sql
	statements: list[tuple[str, float]] = []

	def recording_sql(query: Any, *args: Any, **kwargs: Any) -> Any:
		started = time.perf_counter()
		try:
			return current(query, *args, **kwargs)
		finally:
			statements.append((str(query), time.perf_counter() - started))

	db.sql = recording_sql
	try:
		yield statements
	finally:
		if own is None:
			del db.sql
		else:
			db.sql = own
