"""SQLite: what a file database can tell about itself. Page size, page and freelist counts (the free
pages a table grown and emptied leaves in the file), the file's size, and per table and index its
pages, bytes, unused bytes and entries from the `dbstat` virtual table when the SQLite build has it
(`SQLITE_ENABLE_DBSTAT_VTAB`; else said so). dbstat reads every page's header of the file: its cost
grows with the file's size, not with a query's rows.

SQLite keeps no statement statistics, no index usage and no shared cache counters, and has no
connections of its own: the snapshot says so in `unavailable` instead of showing a figure.
"""

from __future__ import annotations

import os
from typing import Any

import frappe

from verenigingen_perf.utils.performance.config import DatabaseHealthConfig

_NOT_KEPT = (
	("statements", "SQLite keeps no statement statistics"),
	("index usage", "SQLite does not track index usage"),
	("cache hit ratio", "SQLite's page cache belongs to each connection and keeps no counters"),
	("connections", "SQLite is a file opened by each process, without connections of its own"),
)


def _pragma(name: str) -> Any:
	row = frappe.db.sql(f"pragma {name}")
	return row[0][0] if row else None


def collect(config: DatabaseHealthConfig, sample_s: float | None) -> dict[str, Any]:
	page_size = int(_pragma("page_size") or 0)
	page_count = int(_pragma("page_count") or 0)
	freelist = int(_pragma("freelist_count") or 0)
	auto_vacuum = int(_pragma("auto_vacuum") or 0)
	path = next((row[2] for row in frappe.db.sql("pragma database_list") if row[1] == "main"), None)
	unavailable = [{"what": what, "why": why, "how": ""} for what, why in _NOT_KEPT]
	snapshot: dict[str, Any] = {
		"server": {"version": frappe.db.sql("select sqlite_version()")[0][0], "uptime_s": None},
		"file": {
			"page_size": page_size,
			"page_count": page_count,
			"freelist_count": freelist,
			"free_bytes": freelist * page_size,
			"total_bytes": page_count * page_size,
			"file_bytes": os.path.getsize(path) if path and os.path.exists(path) else None,
			"auto_vacuum": ("none", "full", "incremental")[auto_vacuum] if auto_vacuum in (0, 1, 2) else None,
			"journal_mode": _pragma("journal_mode"),
		},
		"statements": [],
		"indexes": [],
		"tables": [],
		"long_running": [],
		"cache": {},
		"connections": {},
		"index_usage_period_s": None,
		"unavailable": unavailable,
	}
	objects = frappe.db.sql(
		"select type, name, tbl_name, sql from sqlite_master where type in ('table', 'index') "
		"and name not like 'sqlite_%%' order by name"
	)
	try:
		stats = {
			name: (int(pages), int(size or 0), int(unused or 0), int(cells or 0))
			for name, pages, size, unused, cells in frappe.db.sql(
				"""select name, count(*), sum(pgsize), sum(unused),
				sum(case when pagetype = 'leaf' then ncell else 0 end) from dbstat group by name"""
			)
		}
	except Exception as e:
		if "dbstat" not in str(e):
			raise
		stats = None
		unavailable.append(
			{
				"what": "table and index sizes",
				"why": "this SQLite build has no dbstat virtual table",
				"how": "a SQLite built with SQLITE_ENABLE_DBSTAT_VTAB (Python's usual builds have it)",
			}
		)
	index_bytes: dict[str, int] = {}
	for kind, name, table, sql in objects:
		if kind != "index":
			continue
		figures = stats.get(name) if stats is not None else None
		index_bytes[table] = index_bytes.get(table, 0) + (figures[1] if figures else 0)
		snapshot["indexes"].append(
			{
				"table": table,
				"index": name,
				"columns": _columns(name),
				"unique": bool(sql and sql.lstrip().lower().startswith("create unique")) or sql is None,
				"bytes": figures[1] if figures else None,
				"reads": None,
			}
		)
	tables = []
	for kind, name, _table, _sql in objects:
		if kind != "table":
			continue
		figures = stats.get(name) if stats is not None else None
		tables.append(
			{
				"table": name,
				"engine": "sqlite",
				# leaf cells of a table's b-tree: its rows, counted from the pages' headers
				"rows": figures[3] if figures else None,
				"data_bytes": figures[1] if figures else None,
				"index_bytes": index_bytes.get(name, 0) if figures else None,
				# unused bytes inside the table's pages; free pages of the file are the file's
				"free_bytes": figures[2] if figures else None,
				"total_bytes": figures[1] + index_bytes.get(name, 0) if figures else None,
			}
		)
	tables.sort(key=lambda t: (-(t["total_bytes"] or 0), t["table"]))
	snapshot["tables"] = tables[: config.max_tables]
	return snapshot


def _columns(index: str) -> list[str]:
	quoted = index.replace('"', '""')
	return [row[2] for row in frappe.db.sql(f'pragma index_info("{quoted}")')]
