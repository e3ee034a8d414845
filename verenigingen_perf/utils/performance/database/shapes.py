"""Statement text as a report may show it: every literal replaced (numbers, quoted strings, hex and
bit literals, `IN` lists, comments), so no member data reaches a report; and what an index for a
statement would be built from (its tables and its WHERE columns). Pure Python.

performance_schema's digest text is normalised already (`?` for values, `(...)` for lists); it goes
through the same function all the same.
"""

from __future__ import annotations

import re

from verenigingen_perf.utils.performance.statements import statement_shape

# a shape is shown, stored and compared at most this long (a digest text is at most 1,024 by default)
MAX_SHAPE_CHARS = 2000

_COMMENT = re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.S)
# MariaDB reads "..." as a string unless ANSI_QUOTES is set; Frappe quotes names with backticks
_DOUBLE_QUOTED = re.compile(r'"(?:[^"\\]|\\.|"")*"')
_HEX = re.compile(r"\b(?:0x[0-9a-fA-F]+|[xXbB]'[0-9a-fA-F]*')")
# the digest's own list marker, and a list of one or more placeholders
_DIGEST_LIST = re.compile(r"\(\s*\.\.\.\s*\)")
_TRUNCATED = re.compile(r"\.\.\.\s*$")

_CLAUSE_END = re.compile(r"\b(?:group\s+by|order\s+by|having|limit|union|for\s+update|lock\s+in)\b", re.I)
_WHERE = re.compile(r"\bwhere\b", re.I)
_NAME = r"`[^`]+`|\w+"
_CONDITION = re.compile(
	rf"(?:({_NAME})\s*\.\s*)?({_NAME})\s*(<=>|=|>=|<=|<>|!=|<|>|\bnot\s+in\b|\bin\b|\bbetween\b|\blike\b|\bis\s+null\b)",
	re.I,
)
_TABLE = re.compile(
	rf"\b(?:from|join)\s+({_NAME})(?:\s+(?:as\s+)?(?!where\b|on\b|join\b|left\b|right\b|inner\b|cross\b|natural\b|straight_join\b|using\b|group\b|order\b|limit\b|set\b)({_NAME}))?",
	re.I,
)
_EQUALITY = ("=", "<=>", "in", "is null")
_RANGE = (">=", "<=", "<", ">", "between", "like")
_KEYWORDS = {"and", "or", "not", "where", "select", "from", "null", "is", "in", "like", "between"}


def shape(text: str) -> str:
	"""The statement with every literal replaced by `?` and lists collapsed to `(?+)`."""
	cleaned = _COMMENT.sub(" ", str(text))
	cleaned = _DOUBLE_QUOTED.sub("?", cleaned)
	cleaned = _HEX.sub("?", cleaned)
	cleaned = _DIGEST_LIST.sub("(?+)", cleaned)
	result = statement_shape(cleaned)
	if len(result) > MAX_SHAPE_CHARS:
		result = result[: MAX_SHAPE_CHARS - 3] + "..."
	return result


def is_select(text: str) -> bool:
	"""A plain SELECT (not `SELECT ... INTO`): the only statements the app EXPLAINs."""
	cleaned = _COMMENT.sub(" ", str(text)).strip().lstrip("(").strip().lower()
	if not cleaned.startswith("select") or ";" in cleaned.rstrip(";"):
		return False
	return not re.search(r"\binto\b", cleaned)


def is_complete(text: str) -> bool:
	"""False for a digest or sample text cut at its maximum length (it ends in `...`)."""
	return not _TRUNCATED.search(str(text))


def _unquote(name: str | None) -> str | None:
	return name.strip("`") if name else None


def tables(text: str) -> dict[str, str]:
	"""The tables a statement reads, by the name EXPLAIN shows them under (the alias, else the table)."""
	found: dict[str, str] = {}
	for table, alias in _TABLE.findall(shape(text)):
		name = _unquote(table)
		if name.startswith("("):
			continue
		found[_unquote(alias) or name] = name
	return found


def where_columns(text: str) -> list[tuple[str | None, str, str]]:
	"""(qualifier, column, operator) of each condition of the WHERE clause that compares a column with
	a value, in the order written. Empty when the WHERE clause has an OR (no single index serves it)."""
	statement = shape(text)
	match = _WHERE.search(statement)
	if not match:
		return []
	clause = statement[match.end() :]
	end = _CLAUSE_END.search(clause)
	clause = clause[: end.start()] if end else clause
	if re.search(r"\bor\b", clause, re.I):
		return []
	found = []
	for qualifier, column, operator in _CONDITION.findall(clause):
		name = _unquote(column)
		if name.lower() in _KEYWORDS or name == "?":
			continue
		found.append((_unquote(qualifier), name, " ".join(operator.lower().split())))
	return found


def index_columns(
	conditions: list[tuple[str | None, str, str]], alias: str, only_table: bool, columns: set[str]
) -> list[str]:
	"""The columns of an index that serves these conditions on one table: the columns compared for
	equality (=, IN, IS NULL) in the order written, then at most one compared by range (<, >,
	BETWEEN, LIKE), as a B-tree index can use its leading equality columns and one range after them.
	Only conditions on that table count: qualified by its alias, or unqualified when it is the only
	table, and naming a column the table has (under the table's own spelling)."""
	# column names are case-insensitive (a digest text writes some of them in capitals)
	by_lower = {c.lower(): c for c in columns}
	equality, ranges = [], []
	for qualifier, written, operator in conditions:
		if qualifier is not None and qualifier.lower() != alias.lower():
			continue
		if qualifier is None and not only_table:
			continue
		column = by_lower.get(written.lower())
		if column is None:
			continue
		if operator in _EQUALITY and column not in equality:
			equality.append(column)
		elif operator in _RANGE and column not in ranges:
			ranges.append(column)
	return equality + [c for c in ranges[:1] if c not in equality]


def index_name(columns: list[str]) -> str:
	"""A name for a suggested index (PostgreSQL allows 63 characters, MariaDB 64)."""
	return ("vperf_idx_" + "_".join(columns))[:63]
