"""PostgreSQL: what the server reports about itself, read from its statistics views (`pg_stat_*`,
`pg_class`, `pg_stats`, `pg_stat_statements`) and EXPLAIN only: no statement of this module reads a
data table, so a snapshot costs the same on a table of a thousand rows as on one of a billion.

- Statements: `pg_stat_statements` (calls, total and max time, rows returned) when the extension is
  preloaded and created in the site's database; else `unavailable` says how to turn it on.
  PostgreSQL counts no rows examined per statement: for a frequent SELECT whose generic plan reads a
  table sequentially, the rows it examined are its calls times the rows each sequential scan of that
  table read (`seq_tup_read / seq_scan` of `pg_stat_user_tables`), both measured by the server.
- Tables: rows, sizes, sequential and index scans, dead rows, last vacuum and analyze; the free space
  (bloat) is estimated, never read from the pages: the larger of the dead rows' share of the table
  and the pages beyond what its live rows need at their average width (`pg_stats`).
- Indexes: `pg_stat_user_indexes` (scans since the statistics were last reset) and their sizes.
- Cache: `blks_hit` and `blks_read` of `pg_stat_database` for the site's database (the ratio between
  two readings, never the lifetime one), `shared_buffers`.
- Connections against `max_connections`, and statements running longer than `long_running_s`.

The site's role sees other sessions' statements only with `pg_read_all_stats` (`GRANT
pg_read_all_stats TO the site's role`); without, they are counted but not shown.
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import frappe

from verenigingen_perf.utils.performance.config import DatabaseHealthConfig
from verenigingen_perf.utils.performance.database import shapes

# PostgreSQL's on-disk format (src/include/storage/bufpage.h, htup_details.h): a page's header, a
# line pointer per tuple, a tuple's header, and the alignment of a tuple's start
PAGE_HEADER_BYTES = 24
ITEM_POINTER_BYTES = 4
TUPLE_HEADER_BYTES = 23
MAXALIGN = 8

_ENABLE = {
	"statements": "add pg_stat_statements to shared_preload_libraries in postgresql.conf, restart the "
	"server, then CREATE EXTENSION pg_stat_statements in the site's database",
	"other_sessions": "GRANT pg_read_all_stats TO the site's database role",
}
_PLACEHOLDER = re.compile(r"\$(\d+)")
_QUOTED_NAME = re.compile(r'"((?:[^"]|"")*)"')
_STRING = re.compile(r"'(?:[^']|'')*'")
_SAVEPOINT = "vperf_explain"


def as_backtick_text(text: str) -> str:
	"""The statement as the shape functions read it: `"name"` as `` `name` ``, `$n` as `?` (PostgreSQL's
	double quotes always enclose names, its strings are single-quoted)."""
	parts, last = [], 0
	# quoted names outside string literals only
	for match in _STRING.finditer(text):
		parts.append(
			_QUOTED_NAME.sub(lambda m: "`" + m.group(1).replace('""', '"') + "`", text[last : match.start()])
		)
		parts.append(match.group(0))
		last = match.end()
	parts.append(_QUOTED_NAME.sub(lambda m: "`" + m.group(1).replace('""', '"') + "`", text[last:]))
	return _PLACEHOLDER.sub("?", "".join(parts))


def collect(config: DatabaseHealthConfig, sample_s: float | None) -> dict[str, Any]:
	unavailable: list[dict[str, str]] = []
	settings = dict(
		frappe.db.sql(
			"""select name, setting from pg_settings
			where name in ('server_version', 'max_connections', 'shared_buffers', 'block_size')"""
		)
	)
	block_size = int(settings.get("block_size") or 8192)
	first = _cache_counters()
	snapshot: dict[str, Any] = {
		"server": {
			"version": settings.get("server_version"),
			# seconds the statistics counters have been counting (since start or their last reset)
			"uptime_s": first["counting_s"],
			"started_at": str(first["started_at"]),
			"stats_reset": str(first["stats_reset"]) if first["stats_reset"] else None,
		},
		"connections": _connections(int(settings.get("max_connections") or 0)),
		"unavailable": unavailable,
	}
	tables = _tables(config, block_size)
	snapshot["tables"] = [{k: v for k, v in t.items() if not k.startswith("_")} for t in tables]
	snapshot["indexes"] = _indexes(config)
	snapshot["index_usage_period_s"] = first["counting_s"]
	snapshot["statements"] = _statements(config, {t["table"]: t for t in tables}, unavailable)
	snapshot["long_running"] = _long_running(config, unavailable)
	if sample_s:
		time.sleep(sample_s)
		second = _cache_counters()
	else:
		second = first
	snapshot["cache"] = {
		"read_requests": second["hits"] + second["reads"],
		"reads": second["reads"],
		"uptime_s": second["counting_s"],
		"buffer_pool_bytes": int(settings.get("shared_buffers") or 0) * block_size,
	}
	if sample_s:
		snapshot["cache"]["first_reading"] = {
			"read_requests": first["hits"] + first["reads"],
			"reads": first["reads"],
			"interval_s": sample_s,
		}
	return snapshot


def _cache_counters() -> dict[str, Any]:
	# a transaction sees the statistics as they were at its first read unless told otherwise
	frappe.db.sql("select pg_stat_clear_snapshot()")
	hits, reads, stats_reset, started_at, counting_s = frappe.db.sql(
		"""select blks_hit, blks_read, stats_reset, pg_postmaster_start_time(),
		extract(epoch from now() - greatest(pg_postmaster_start_time(), coalesce(stats_reset, pg_postmaster_start_time())))
		from pg_stat_database where datname = current_database()"""
	)[0]
	return {
		"hits": int(hits or 0),
		"reads": int(reads or 0),
		"stats_reset": stats_reset,
		"started_at": started_at,
		"counting_s": round(float(counting_s), 3),
	}


def _connections(max_connections: int) -> dict[str, Any]:
	connected, running = frappe.db.sql(
		"""select count(*), count(*) filter (where state = 'active')
		from pg_stat_activity where backend_type = 'client backend'"""
	)[0]
	return {"connected": int(connected), "running": int(running), "max_connections": max_connections}


def _tables(config: DatabaseHealthConfig, block_size: int) -> list[dict[str, Any]]:
	rows = frappe.db.sql(
		"""select t.relname, c.reltuples, c.relpages, pg_table_size(t.relid), pg_indexes_size(t.relid),
		t.n_live_tup, t.n_dead_tup, t.seq_scan, t.seq_tup_read, t.idx_scan,
		greatest(t.last_vacuum, t.last_autovacuum), greatest(t.last_analyze, t.last_autoanalyze),
		(select sum(s.avg_width) from pg_stats s where s.schemaname = t.schemaname and s.tablename = t.relname),
		(select count(*) from pg_stats s where s.schemaname = t.schemaname and s.tablename = t.relname)
		from pg_stat_user_tables t join pg_class c on c.oid = t.relid
		where t.schemaname = current_schema()
		order by pg_total_relation_size(t.relid) desc, t.relname limit %s""",
		(config.max_tables,),
	)
	tables = []
	for (
		name,
		reltuples,
		relpages,
		data,
		index,
		live,
		dead,
		seq_scan,
		seq_read,
		idx_scan,
		vacuumed,
		analyzed,
		width,
		stat_columns,
	) in rows:
		data, live, dead = int(data or 0), int(live or 0), int(dead or 0)
		free, basis = free_estimate(data, live, dead, reltuples, relpages, width, stat_columns, block_size)
		tables.append(
			{
				"table": name,
				"engine": "postgres",
				"rows": live,
				"data_bytes": data,
				"index_bytes": int(index or 0),
				"free_bytes": free,
				"free_basis": basis,
				"total_bytes": data + int(index or 0),
				"dead_rows": dead,
				"seq_scans": int(seq_scan or 0),
				"seq_rows_read": int(seq_read or 0),
				"index_scans": None if idx_scan is None else int(idx_scan),
				"last_vacuum": str(vacuumed) if vacuumed else None,
				"last_analyze": str(analyzed) if analyzed else None,
			}
		)
	return tables


def free_estimate(
	data_bytes: int,
	live: int,
	dead: int,
	reltuples: float | None,
	relpages: int | None,
	width: float | None,
	stat_columns: int,
	block_size: int,
) -> tuple[int, str]:
	"""The larger of two estimates of the bytes a table holds beyond its live rows: the dead rows'
	share of its size (until a vacuum makes their space reusable), and its pages beyond the pages its
	rows need at their average width (space a vacuum freed but the file kept)."""
	by_dead = int(data_bytes * dead / (live + dead)) if live + dead else 0
	by_width = 0
	if width is not None and stat_columns and reltuples is not None and reltuples >= 0 and relpages:
		tuple_bytes = (
			math.ceil((TUPLE_HEADER_BYTES + float(width)) / MAXALIGN) * MAXALIGN + ITEM_POINTER_BYTES
		)
		per_page = max((block_size - PAGE_HEADER_BYTES) // tuple_bytes, 1)
		needed_pages = math.ceil(float(reltuples) / per_page)
		by_width = max(int(relpages) - needed_pages, 0) * block_size
	if by_width > by_dead:
		return by_width, "pages beyond what the live rows need at their average width (pg_stats)"
	return by_dead, "dead rows' share of the table (pg_stat_user_tables)"


def _indexes(config: DatabaseHealthConfig) -> list[dict[str, Any]]:
	rows = frappe.db.sql(
		"""select s.relname, s.indexrelname, i.indisunique or i.indisprimary, s.idx_scan,
		pg_relation_size(s.indexrelid),
		array_to_string(array(select a.attname from unnest(i.indkey) with ordinality k(attnum, n)
			join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum order by k.n), ',')
		from pg_stat_user_indexes s join pg_index i on i.indexrelid = s.indexrelid
		where s.schemaname = current_schema() order by s.relname, s.indexrelname limit %s""",
		(config.max_tables * 20,),
	)
	return [
		{
			"table": table,
			"index": index,
			"columns": [c for c in (columns or "").split(",") if c],
			"unique": bool(unique),
			"bytes": int(size or 0),
			"reads": int(scans or 0),
		}
		for table, index, unique, scans, size, columns in rows
	]


def _statements_unavailable() -> str | None:
	"""Why pg_stat_statements cannot be read here, or None when it can. Whether the server preloads
	it is a superuser-only setting: the view is tried instead, inside a savepoint."""
	if not frappe.db.sql("select 1 from pg_extension where extname = 'pg_stat_statements'"):
		return "the pg_stat_statements extension is not created in the site's database"
	frappe.db.savepoint(_SAVEPOINT)
	try:
		frappe.db.sql("select 1 from pg_stat_statements limit 1")
	except Exception as e:
		frappe.db.rollback(save_point=_SAVEPOINT)
		return str(e).splitlines()[0][:200]
	frappe.db.release_savepoint(_SAVEPOINT)
	return None


def _statements(
	config: DatabaseHealthConfig, tables: dict[str, dict[str, Any]], unavailable: list[dict[str, str]]
) -> list[dict[str, Any]]:
	why = _statements_unavailable()
	if why:
		unavailable.append({"what": "statements", "why": why, "how": _ENABLE["statements"]})
		return []
	since = frappe.db.sql("select stats_reset from pg_stat_statements_info")
	counted_since = str(since[0][0]) if since and since[0][0] else None
	rows = frappe.db.sql(
		"""select queryid::text, query, calls, total_exec_time, max_exec_time, rows
		from pg_stat_statements
		where dbid = (select oid from pg_database where datname = current_database()) and query is not null
		order by total_exec_time desc limit %s""",
		(config.max_statements,),
	)
	statements = []
	for digest, text, calls, total, peak, returned in rows:
		readable = as_backtick_text(text)
		calls = int(calls)
		statements.append(
			{
				"digest": digest,
				"shape": shapes.shape(readable),
				"count": calls,
				"total_ms": round(float(total or 0), 3),
				"mean_ms": round(float(total or 0) / calls, 3) if calls else None,
				"max_ms": round(float(peak or 0), 3),
				# filled in below for the statements whose plan scans a table (see the module's text)
				"rows_examined": None,
				"rows_sent": int(returned or 0),
				"first_seen": None,
				"last_seen": None,
				"counted_since": counted_since,
				"_text": text,
				"_readable": readable,
			}
		)
	statements = merged_by_shape(statements)
	_explain_candidates(statements, config, tables)
	for statement in statements:
		statement.pop("_text", None)
		statement.pop("_readable", None)
	return statements


def merged_by_shape(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
	"""One entry per shape: pg_stat_statements keeps one per statement and table *identity*, so a
	table dropped and created again (or a search path) splits a statement's figures. The first entry
	(the most time) keeps its id and text."""
	by_shape: dict[str, dict[str, Any]] = {}
	for statement in statements:
		kept = by_shape.get(statement["shape"])
		if kept is None:
			by_shape[statement["shape"]] = statement
			continue
		kept["count"] += statement["count"]
		kept["total_ms"] = round(kept["total_ms"] + statement["total_ms"], 3)
		kept["max_ms"] = max(kept["max_ms"], statement["max_ms"])
		kept["rows_sent"] += statement["rows_sent"]
		kept["mean_ms"] = round(kept["total_ms"] / kept["count"], 3) if kept["count"] else None
	return list(by_shape.values())


def _scan_rows(table: dict[str, Any] | None) -> float | None:
	"""Rows one sequential scan of the table read, on average since the counters started."""
	if not table or not table.get("seq_scans"):
		return None
	return table["seq_rows_read"] / table["seq_scans"]


def _explain_candidates(
	statements: list[dict[str, Any]], config: DatabaseHealthConfig, tables: dict[str, dict[str, Any]]
) -> None:
	"""EXPLAIN the generic plan of the frequent SELECTs that would examine many rows per row returned
	if they scanned their tables: only those are worth a plan. Never anything but a SELECT."""
	for statement in statements:
		readable = statement["_readable"]
		if statement["count"] < config.min_executions or not shapes.is_select(readable):
			continue
		read = [_scan_rows(tables.get(name)) for name in shapes.tables(readable).values()]
		per_call = sum(r for r in read if r)
		if statement["count"] * per_call < config.scan_ratio * max(statement["rows_sent"], 1):
			continue
		plan, note = _generic_plan(statement["_text"])
		if plan is None:
			statement["plan_note"] = note
			continue
		statement["plan"] = plan
		scanned = [step for step in plan if step["type"] == "Seq Scan"]
		per_scan = [_scan_rows(tables.get(step["table"])) for step in scanned]
		if scanned and all(per_scan):
			statement["rows_examined"] = round(statement["count"] * sum(per_scan))
			statement["rows_examined_basis"] = (
				"calls times the rows each sequential scan of the plan's tables read (pg_stat_user_tables)"
			)
		statement["index_suggestion"] = _suggest(readable, plan)


def _generic_plan(text: str) -> tuple[list[dict[str, Any]] | None, str | None]:
	"""The plan PostgreSQL would use for any values of the statement's parameters (`$n`), as steps.

	Prepared under a name of its own and planned generically, executed by EXPLAIN only (never run),
	inside a savepoint so a statement that cannot be prepared leaves the transaction usable."""
	if not shapes.is_complete(text):
		return None, "the statement text is not complete"
	parameters = max((int(n) for n in _PLACEHOLDER.findall(text)), default=0)
	frappe.db.savepoint(_SAVEPOINT)
	try:
		frappe.db.sql("set local plan_cache_mode = force_generic_plan")
		frappe.db.sql(f"prepare vperf_explain as {text}")
		arguments = f"({', '.join(['null'] * parameters)})" if parameters else ""
		(raw,) = frappe.db.sql(f"explain (format json) execute vperf_explain{arguments}")[0]
		frappe.db.sql("deallocate vperf_explain")
		frappe.db.sql("reset plan_cache_mode")
		frappe.db.release_savepoint(_SAVEPOINT)
	except Exception as e:
		frappe.db.rollback(save_point=_SAVEPOINT)
		return None, f"EXPLAIN failed: {str(e).splitlines()[0][:200]}"
	document = json.loads(raw) if isinstance(raw, str) else raw
	return _steps(document[0]["Plan"]), None


def _steps(node: dict[str, Any]) -> list[dict[str, Any]]:
	steps = [
		{
			"type": node.get("Node Type"),
			"table": node.get("Relation Name"),
			"alias": node.get("Alias"),
			"index": node.get("Index Name"),
			"rows": node.get("Plan Rows"),
			"filter": node.get("Filter"),
		}
	]
	for child in node.get("Plans") or ():
		steps.extend(_steps(child))
	return steps


def _suggest(readable: str, plan: list[dict[str, Any]]) -> dict[str, Any] | None:
	"""The index of the first table the plan reads sequentially whose WHERE columns are known."""
	tables = shapes.tables(readable)
	conditions = shapes.where_columns(readable)
	for step in plan:
		if step["type"] != "Seq Scan" or step["table"] not in tables.values():
			continue
		columns = {
			r[0]
			for r in frappe.db.sql(
				"""select column_name from information_schema.columns
				where table_schema = current_schema() and table_name = %s""",
				(step["table"],),
			)
		}
		chosen = shapes.index_columns(conditions, step["alias"] or step["table"], len(tables) == 1, columns)
		if chosen:
			return {
				"table": step["table"],
				"columns": chosen,
				"name": shapes.index_name(chosen),
				"plan_rows": step["rows"],
			}
	return None


def _long_running(config: DatabaseHealthConfig, unavailable: list[dict[str, str]]) -> list[dict[str, Any]]:
	rows = frappe.db.sql(
		"""select pid, extract(epoch from now() - query_start), state, query
		from pg_stat_activity
		where state = 'active' and backend_type = 'client backend' and pid <> pg_backend_pid()
		and now() - query_start >= make_interval(secs => %s)
		order by query_start limit %s""",
		(config.long_running_s, config.max_statements),
	)
	found = []
	for pid, seconds, state, query in rows:
		hidden = query == "<insufficient privilege>"
		if hidden and not any(u["what"] == "other sessions' statements" for u in unavailable):
			unavailable.append(
				{
					"what": "other sessions' statements",
					"why": "the site's role may not read them",
					"how": _ENABLE["other_sessions"],
				}
			)
		found.append(
			{
				"id": int(pid),
				"time_s": round(float(seconds), 3),
				"state": state,
				"shape": None if hidden or not query else shapes.shape(as_backtick_text(query)),
			}
		)
	return found
