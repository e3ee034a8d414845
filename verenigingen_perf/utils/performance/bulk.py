"""Multi-row writes whose rows travel as one JSON parameter that the database unpacks (MariaDB's
JSON_TABLE, SQLite's json_each, PostgreSQL's jsonb_array_elements).

One parameter per statement instead of one per value: the driver escapes one string instead of one
value per column and row, and the server parses a short statement. Written out rather than through
`frappe.db.bulk_insert`, whose query builder renders every value as a term object (six times slower
at the drain's volumes); a multi-row VALUES list cost PostgreSQL about ten times an aggregate
upsert's execution just to parse (see benchmarks/rollup.py).

Every row starts with its name and its creation: `modified` is the creation, owner and modifier the
Administrator, docstatus 0 (the app writes these rows itself, never a user)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import frappe
import orjson

Kind = Literal["text", "long text", "integer", "float", "datetime"]

_MARIADB_TYPES: dict[str, str] = {
	"text": "VARCHAR(140)",
	"long text": "LONGTEXT",
	"integer": "BIGINT",
	"float": "DOUBLE",
	"datetime": "DATETIME(6)",
}
_POSTGRES_CASTS: dict[str, str] = {
	"integer": "bigint",
	"float": "double precision",
	"datetime": "timestamp(6)",
}
_WRITTEN_BY = "'Administrator'"


@dataclass(frozen=True)
class BulkWrite:
	"""An INSERT of many rows of one doctype, each a tuple `(name, creation, *values of columns)`.

	A row whose name is already stored is skipped (`update` empty) or has the `update` columns and
	`modified` replaced (its creation and owner stay as first written)."""

	doctype: str
	# the columns after name and creation, in the rows' order, with what they hold
	columns: tuple[tuple[str, Kind], ...]
	update: tuple[str, ...] = ()
	# rows per statement: bounds one statement's size (MariaDB's max_allowed_packet)
	chunk: int = 1000

	def write(self, rows: list[tuple]) -> None:
		for start in range(0, len(rows), self.chunk):
			frappe.db.multisql(self.statements, (orjson.dumps(rows[start : start + self.chunk]).decode(),))

	@property
	def carried(self) -> tuple[tuple[str, Kind], ...]:
		"""Every column a row carries, in its order."""
		return (("name", "text"), ("creation", "datetime"), *self.columns)

	@cached_property
	def statements(self) -> dict[str, str]:
		table = f"`tab{self.doctype}`"
		names = [name for name, _kind in self.columns]
		inserted = ", ".join(
			f"`{c}`" for c in ("name", "creation", "modified", "owner", "modified_by", "docstatus", *names)
		)
		refreshed = ("modified", *self.update)
		mariadb_columns = ", ".join(
			f"`{name}` {_MARIADB_TYPES[kind]} PATH '$[{i}]'" for i, (name, kind) in enumerate(self.carried)
		)
		on_conflict = (
			"on conflict (name) do update set " + ", ".join(f"`{c}`=excluded.`{c}`" for c in refreshed)
			if self.update
			else "on conflict (name) do nothing"
		)
		return {
			"mariadb": f"insert {'' if self.update else 'ignore '}into {table} ({inserted}) "
			f"select {self._select([f'`{name}`' for name, _kind in self.carried])} "
			f"from json_table(%s, '$[*]' columns ({mariadb_columns})) as measured"
			+ (
				" on duplicate key update " + ", ".join(f"`{c}`=values(`{c}`)" for c in refreshed)
				if self.update
				else ""
			),
			# `where true`: SQLite reads an ON after a bare FROM as a join's
			"sqlite": f"insert into {table} ({inserted}) "
			f"select {self._select([f'value ->> {i}' for i in range(len(self.carried))])} "
			f"from json_each(%s) where true {on_conflict}",
			"postgres": f"insert into {table} ({inserted}) "
			f"select {self._select([_postgres_value(kind, i) for i, (_name, kind) in enumerate(self.carried)])} "
			f"from jsonb_array_elements(%s::jsonb) as row {on_conflict}",
		}

	@staticmethod
	def _select(values: list[str]) -> str:
		name, creation, *rest = values
		return ", ".join((name, creation, creation, _WRITTEN_BY, _WRITTEN_BY, "0", *rest))


def _postgres_value(kind: Kind, i: int) -> str:
	# the index in parentheses: Frappe's PostgreSQL layer quotes a number written after `>` or `=`
	# (`row->>'3'` would read an object's key "3", which an array has not)
	element = f"row ->> ({i})"
	cast = _POSTGRES_CASTS.get(kind)
	return f"({element})::{cast}" if cast else element
