"""Storage figures read from the database itself: row counts and on-disk bytes per table."""

from __future__ import annotations

from dataclasses import dataclass

import frappe

from verenigingen_perf.utils.performance.schema import AGGREGATE, EXPORT_COUNTER, METRIC

TABLES = (METRIC, AGGREGATE)

# InnoDB's size figures are estimates until its statistics are refreshed; the others measure
_REFRESH_SQL = {
	"mariadb": "analyze table `{table}`",
	"postgres": "select 1",
	"sqlite": "select 1",
}
_BYTES_SQL = {
	"mariadb": """select coalesce(data_length + index_length, 0) from information_schema.tables
		where table_schema = database() and table_name = %s""",
	"postgres": "select pg_total_relation_size(quote_ident(%s))",
	"sqlite": """select coalesce(sum(pgsize), 0) from dbstat where name in (
		select name from sqlite_master where tbl_name = %s)""",
}


# Every fold rewrites the hour's and the day's aggregates and the export counters. PostgreSQL writes
# a new version of a row on each update: with room left on its page, the version stays there, takes
# no new index entries and is pruned without VACUUM (a "HOT" update); on a full page it bloats the
# table and every index until autovacuum runs (18% more aggregate bytes in the rollup benchmark).
# MariaDB and SQLite update in place.
_REWRITTEN_TABLES = (AGGREGATE, EXPORT_COUNTER)
_PAGE_FILL_PERCENT = 70
_ROOM_SQL = {
	"postgres": "alter table `{table}` set (fillfactor = {percent})",
	"mariadb": "select 1",
	"sqlite": "select 1",
}


def leave_room_for_updates() -> None:
	"""Run on install and migrate (a new table takes the setting when it is created or rebuilt)."""
	# ALTER TABLE is DDL: no write of the caller's may be pending with it
	frappe.db.commit()
	for doctype in _REWRITTEN_TABLES:
		frappe.db.multisql(
			{
				db: sql.format(table=f"tab{doctype}", percent=_PAGE_FILL_PERCENT)
				for db, sql in _ROOM_SQL.items()
			}
		)
	frappe.db.commit()


@dataclass
class TableSize:
	doctype: str
	rows: int
	bytes: int  # data and indexes, as the database reports them


def table_size(doctype: str) -> TableSize:
	table = f"tab{doctype}"
	rows = frappe.db.sql(f"select count(*) from `{table}`")[0][0]
	frappe.db.multisql({db: sql.format(table=table) for db, sql in _REFRESH_SQL.items()})
	size = frappe.db.multisql(_BYTES_SQL, (table,))
	return TableSize(doctype, int(rows), int(size[0][0] or 0))


def storage_figures() -> list[TableSize]:
	return [table_size(doctype) for doctype in TABLES]
