"""Storage figures read from the database itself: row counts and on-disk bytes per table."""

from __future__ import annotations

from dataclasses import dataclass

import frappe

from verenigingen_perf.utils.performance.schema import AGGREGATE, METRIC

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
