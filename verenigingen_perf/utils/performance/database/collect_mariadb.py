"""MariaDB: what the server reports about itself, read from information_schema, performance_schema,
`SHOW GLOBAL STATUS` / `VARIABLES` and EXPLAIN only: no statement of this module reads a data table,
so a snapshot costs the same on a table of a thousand rows as on one of a billion.

performance_schema must be on (`performance_schema=ON` in the server's my.cnf, a restart) and the site's
database user must read it: `GRANT SELECT ON performance_schema.* TO user; GRANT SELECT ON
mysql.innodb_index_stats TO user; GRANT PROCESS ON *.* TO user;`. What is missing is named in the
snapshot's `unavailable`, with how to turn it on; the rest is collected all the same.
"""

from __future__ import annotations

import time
from typing import Any

import frappe

from verenigingen_perf.utils.performance.config import DatabaseHealthConfig
from verenigingen_perf.utils.performance.database import recommend, shapes

# performance_schema's timers count picoseconds
_PS_PER_MS = 1e9
_STATUS = (
	"Uptime",
	"Innodb_buffer_pool_read_requests",
	"Innodb_buffer_pool_reads",
	"Innodb_buffer_pool_pages_total",
	"Innodb_buffer_pool_pages_free",
	"Threads_connected",
	"Threads_running",
	"Max_used_connections",
	"Aborted_connects",
)
_ENABLE = {
	"performance_schema": "set performance_schema=ON in the server's my.cnf ([mysqld]) and restart it",
	"grant": "GRANT SELECT ON performance_schema.* TO the site's database user",
	"history": "set performance-schema-consumer-events-statements-current=ON and "
	"performance-schema-consumer-events-statements-history-long=ON in my.cnf",
	"index_stats": "GRANT SELECT ON mysql.innodb_index_stats TO the site's database user",
}


# MariaDB's errors for a table the user may not read (1142, 1143), a denied command (1227) or a
# missing table (1146): the server's answer to "may the site read this", reported, not raised
_NOT_READABLE = (1142, 1143, 1227, 1146)


def _try(sql: str, values: Any = None) -> tuple[Any, str | None]:
	try:
		return (frappe.db.sql(sql) if values is None else frappe.db.sql(sql, values)), None
	except Exception as e:
		if not e.args or e.args[0] not in _NOT_READABLE:
			raise
		return None, str(e.args[-1])[:200]


def status() -> dict[str, int]:
	rows = frappe.db.sql(
		f"show global status where Variable_name in ({', '.join(['%s'] * len(_STATUS))})", _STATUS
	)
	return {name: int(value) for name, value in rows}


def collect(config: DatabaseHealthConfig, sample_s: float | None) -> dict[str, Any]:
	"""One snapshot's figures. With `sample_s`, the status counters are read twice that far apart
	(an on-demand snapshot's cache ratio); without, once (the ratio comes from the previous snapshot)."""
	unavailable: list[dict[str, str]] = []
	first = status()
	variables = dict(
		frappe.db.sql(
			"show global variables where Variable_name in "
			"('version', 'max_connections', 'innodb_buffer_pool_size', 'performance_schema', 'innodb_page_size')"
		)
	)
	snapshot: dict[str, Any] = {
		"server": {
			"version": variables.get("version"),
			"uptime_s": first["Uptime"],
			"performance_schema": variables.get("performance_schema") == "ON",
		},
		"connections": {
			"connected": first["Threads_connected"],
			"running": first["Threads_running"],
			"max_used": first["Max_used_connections"],
			"max_connections": int(variables.get("max_connections") or 0),
			"aborted_connects": first["Aborted_connects"],
		},
		"unavailable": unavailable,
	}
	page_size = int(variables.get("innodb_page_size") or 16384)
	snapshot["tables"] = _tables(config)
	ps_on = snapshot["server"]["performance_schema"]
	if not ps_on:
		for what in ("statements", "index usage"):
			unavailable.append(
				{"what": what, "why": "performance_schema is off", "how": _ENABLE["performance_schema"]}
			)
		snapshot["statements"], readable = [], False
	else:
		snapshot["statements"], readable = _statements(config, unavailable)
	snapshot["indexes"] = _indexes(config, page_size, ps_on and readable, unavailable)
	snapshot["index_usage_period_s"] = first["Uptime"] if ps_on and readable else None
	snapshot["long_running"] = _long_running(config)
	if sample_s:
		time.sleep(sample_s)
		second = status()
	else:
		second = first
	snapshot["cache"] = {
		"read_requests": second["Innodb_buffer_pool_read_requests"],
		"reads": second["Innodb_buffer_pool_reads"],
		"uptime_s": second["Uptime"],
		"buffer_pool_bytes": int(variables.get("innodb_buffer_pool_size") or 0),
		"pages_total": second["Innodb_buffer_pool_pages_total"],
		"pages_free": second["Innodb_buffer_pool_pages_free"],
	}
	if sample_s:
		snapshot["cache"]["first_reading"] = {
			"read_requests": first["Innodb_buffer_pool_read_requests"],
			"reads": first["Innodb_buffer_pool_reads"],
			"interval_s": sample_s,
		}
	return snapshot


def _tables(config: DatabaseHealthConfig) -> list[dict[str, Any]]:
	rows = frappe.db.sql(
		"""select table_name, engine, table_rows, data_length, index_length, data_free
		from information_schema.tables where table_schema = database() and table_type = 'BASE TABLE'
		order by data_length + index_length + data_free desc, table_name limit %s""",
		(config.max_tables,),
	)
	return [
		{
			"table": name,
			"engine": engine,
			"rows": None if rows_ is None else int(rows_),
			"data_bytes": int(data or 0),
			"index_bytes": int(index or 0),
			"free_bytes": int(free or 0),
			"total_bytes": int((data or 0) + (index or 0) + (free or 0)),
		}
		for name, engine, rows_, data, index, free in rows
	]


def _statements(config: DatabaseHealthConfig, unavailable: list[dict[str, str]]) -> tuple[list[dict], bool]:
	rows, denied = _try(
		"""select digest, digest_text, count_star, sum_timer_wait, max_timer_wait, sum_rows_examined,
		sum_rows_sent, sum_no_index_used, first_seen, last_seen
		from performance_schema.events_statements_summary_by_digest
		where schema_name = database() and digest_text is not null
		order by sum_timer_wait desc limit %s""",
		(config.max_statements,),
	)
	if denied:
		unavailable.append({"what": "statements and index usage", "why": denied, "how": _ENABLE["grant"]})
		return [], False
	statements = []
	for digest, text, count, total, peak, examined, sent, no_index, first, last in rows:
		total_ms = float(total or 0) / _PS_PER_MS
		statements.append(
			{
				"digest": digest,
				"shape": shapes.shape(text),
				"count": int(count),
				"total_ms": round(total_ms, 3),
				"mean_ms": round(total_ms / count, 3) if count else None,
				"max_ms": round(float(peak or 0) / _PS_PER_MS, 3),
				"rows_examined": int(examined or 0),
				"rows_sent": int(sent or 0),
				"no_index_used": int(no_index or 0),
				"first_seen": str(first) if first else None,
				"last_seen": str(last) if last else None,
				"_text": text,
			}
		)
	_explain_candidates(statements, config, unavailable)
	for statement in statements:
		statement.pop("_text", None)
	return statements, True


def _explain_candidates(
	statements: list[dict[str, Any]], config: DatabaseHealthConfig, unavailable: list[dict[str, str]]
) -> None:
	"""EXPLAIN the frequent SELECTs that examine many rows per row returned: the normalised shape when
	it has no placeholder left, else the latest full text of the digest from
	events_statements_history_long (never shown, never stored: only its plan is). Never anything but
	a SELECT."""
	candidates = [
		s for s in statements if recommend.is_index_candidate(s, config) and shapes.is_select(s["_text"])
	]
	if not candidates:
		return
	samples: dict[str, str] = {}
	need = [s["digest"] for s in candidates if "?" in s["shape"]]
	if need:
		rows, denied = _try(
			f"""select digest, sql_text from performance_schema.events_statements_history_long
			where current_schema = database() and digest in ({", ".join(["%s"] * len(need))})
			order by event_id""",
			need,
		)
		if denied:
			unavailable.append(
				{"what": "statement samples (for EXPLAIN)", "why": denied, "how": _ENABLE["grant"]}
			)
		for digest, text in rows or ():
			samples[digest] = text
		if not rows:
			unavailable.append(
				{
					"what": "statement samples (for EXPLAIN)",
					"why": "events_statements_history_long holds no recent statement of the candidates",
					"how": _ENABLE["history"],
				}
			)
	for statement in candidates:
		text = statement["shape"] if "?" not in statement["shape"] else samples.get(statement["digest"])
		if not text:
			statement["plan_note"] = "no sample text to EXPLAIN"
			continue
		if not shapes.is_select(text) or not shapes.is_complete(text):
			statement["plan_note"] = "the sample text is not a complete SELECT"
			continue
		try:
			cursor_rows = frappe.db.sql(f"explain {text}", as_dict=True)
		except Exception as e:
			statement["plan_note"] = f"EXPLAIN failed: {str(e).splitlines()[0][:200]}"
			continue
		plan = [
			{
				k: row.get(k)
				for k in ("id", "select_type", "table", "type", "possible_keys", "key", "rows", "Extra")
			}
			for row in cursor_rows
		]
		statement["plan"] = plan
		# the columns come from the statement as it was sent when a sample is there (its own spelling)
		statement["index_suggestion"] = _suggest(text, plan)


def _suggest(text: str, plan: list[dict[str, Any]]) -> dict[str, Any] | None:
	"""The index of the first table the plan reads in full (type ALL) whose WHERE columns are known."""
	tables = {alias.lower(): table for alias, table in shapes.tables(text).items()}
	conditions = shapes.where_columns(text)
	for step in plan:
		if step.get("type") != "ALL" or str(step.get("table")).lower() not in tables:
			continue
		table = tables[str(step["table"]).lower()]
		columns = {
			r[0]
			for r in frappe.db.sql(
				"""select column_name from information_schema.columns
				where table_schema = database() and table_name = %s""",
				(table,),
			)
		}
		chosen = shapes.index_columns(conditions, step["table"], len(tables) == 1, columns)
		if chosen:
			return {
				"table": table,
				"columns": chosen,
				"name": shapes.index_name(chosen),
				"plan_rows": step.get("rows"),
			}
	return None


def _indexes(
	config: DatabaseHealthConfig, page_size: int, usage_readable: bool, unavailable: list[dict[str, str]]
) -> list[dict[str, Any]]:
	rows = frappe.db.sql(
		"""select table_name, index_name, non_unique, group_concat(column_name order by seq_in_index)
		from information_schema.statistics where table_schema = database()
		group by table_name, index_name, non_unique order by table_name, index_name limit %s""",
		(config.max_tables * 20,),
	)
	sizes, denied = _try(
		"""select table_name, index_name, stat_value from mysql.innodb_index_stats
		where database_name = database() and stat_name = 'size'"""
	)
	if denied:
		unavailable.append({"what": "index sizes", "why": denied, "how": _ENABLE["index_stats"]})
	size = {(t, i): int(v) * page_size for t, i, v in sizes or ()}
	reads: dict[tuple[str, str], int] = {}
	if usage_readable:
		usage, denied = _try(
			"""select object_name, index_name, count_read from performance_schema.table_io_waits_summary_by_index_usage
			where object_schema = database() and index_name is not null"""
		)
		reads = {(t, i): int(c) for t, i, c in usage or ()}
	return [
		{
			"table": table,
			"index": index,
			"columns": (columns or "").split(","),
			"unique": not int(non_unique) or index == "PRIMARY",
			"bytes": size.get((table, index)),
			# None: the server has not tracked this index since it started (table not opened)
			"reads": reads.get((table, index)),
		}
		for table, index, non_unique, columns in rows
	]


def _long_running(config: DatabaseHealthConfig) -> list[dict[str, Any]]:
	rows = frappe.db.sql(
		"""select id, time, state, info from information_schema.processlist
		where command not in ('Sleep', 'Daemon', 'Binlog Dump') and time >= %s and id <> connection_id()
		order by time desc limit %s""",
		(config.long_running_s, config.max_statements),
	)
	return [
		{"id": int(i), "time_s": float(t), "state": s, "shape": shapes.shape(info) if info else None}
		for i, t, s, info in rows
	]
