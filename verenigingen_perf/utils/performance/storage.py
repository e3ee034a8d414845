"""Storage figures read from the database itself: row counts and on-disk bytes per table."""

from __future__ import annotations

from dataclasses import dataclass

import frappe

TABLES = ("Performance Metric", "Performance Aggregate")


@dataclass
class TableSize:
	doctype: str
	rows: int
	bytes: int  # data and indexes, as the database reports them


def table_size(doctype: str) -> TableSize:
	table = f"tab{doctype}"
	rows = frappe.db.sql(f"select count(*) from `{table}`")[0][0]
	return TableSize(doctype, int(rows), _bytes(table))


def _bytes(table: str) -> int:
	db_type = frappe.db.db_type
	if db_type == "mariadb":
		# InnoDB's figures are estimates until the statistics are refreshed
		frappe.db.sql(f"analyze table `{table}`")
		result = frappe.db.sql(
			"""select coalesce(data_length + index_length, 0) from information_schema.tables
			where table_schema = database() and table_name = %s""",
			(table,),
		)
	elif db_type == "postgres":
		result = frappe.db.sql("select pg_total_relation_size(%s)", (f'"{table}"',))
	elif db_type == "sqlite":
		result = frappe.db.sql(
			"""select coalesce(sum(pgsize), 0) from dbstat where name in (
				select name from sqlite_master where tbl_name = %s)""",
			(table,),
		)
	else:
		raise NotImplementedError(f"storage figures for database type {db_type}")
	return int(result[0][0] or 0)


def storage_figures() -> list[TableSize]:
	return [table_size(doctype) for doctype in TABLES]
