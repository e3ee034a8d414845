"""Recommendations from one snapshot, each with the measured figures behind it (pure Python).

- `unused_index`: a non-unique index the server tracked and that served no read in the period the
  server's counters cover (its uptime), at least `unused_index_min_mb` large and that period at least
  `unused_index_min_hours` long. Action: drop it.
- `fragmentation`: a table (or, on SQLite, the database file) whose free space is at least
  `fragmentation_ratio` of its size and `fragmentation_min_mb`. Action: `OPTIMIZE TABLE` (MariaDB
  rebuilds the table), `VACUUM (FULL, ANALYZE)` (PostgreSQL rewrites the table, holding an exclusive
  lock meanwhile) or `VACUUM` (SQLite rewrites the file).
- `missing_index`: a SELECT run at least `min_executions` times that examined at least `scan_ratio`
  rows per row it returned, whose EXPLAIN plan reads a table in full (type ALL), and whose WHERE clause
  compares columns of that table with values. The index is derived from the statement, not guessed:
  the columns compared for equality in the order written, then at most one compared by range
  (`shapes.index_columns`), keeping only columns the scanned table has. No such columns, no
  recommendation (the statement is still listed among the statements with its figures).
- `cache_hit_ratio`: the InnoDB buffer pool's (PostgreSQL's shared buffers') hit ratio between two
  readings below `db_cache_hit_warning`, with the reads, the interval and the pool's size. Action: a
  larger `innodb_buffer_pool_size` (`shared_buffers`).

The actions are written in the site's own SQL dialect (`DIALECTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verenigingen_perf.utils.performance.config import DatabaseHealthConfig

MB = 1024 * 1024


@dataclass(frozen=True)
class Dialect:
	quote: str
	reclaim: str
	drop_index: str
	add_index: str
	cache_name: str
	cache_setting: str


DIALECTS = {
	"mariadb": Dialect(
		quote="`",
		reclaim="OPTIMIZE TABLE `{table}`",
		drop_index="ALTER TABLE `{table}` DROP INDEX `{index}`",
		add_index="ALTER TABLE `{table}` ADD INDEX `{name}` ({columns})",
		cache_name="InnoDB buffer pool",
		cache_setting="innodb_buffer_pool_size (now {size:.0f} MB) in the server's my.cnf",
	),
	"postgres": Dialect(
		quote='"',
		reclaim='VACUUM (FULL, ANALYZE) "{table}"',
		drop_index='DROP INDEX "{index}"',
		add_index='CREATE INDEX "{name}" ON "{table}" ({columns})',
		cache_name="PostgreSQL shared buffers",
		cache_setting="shared_buffers (now {size:.0f} MB) in postgresql.conf",
	),
	"sqlite": Dialect(
		quote='"',
		reclaim="VACUUM",
		drop_index='DROP INDEX "{index}"',
		add_index='CREATE INDEX "{name}" ON "{table}" ({columns})',
		cache_name="page cache",
		cache_setting="cache_size (now {size:.0f} MB)",
	),
}


def dialect(snapshot: dict[str, Any]) -> Dialect:
	return DIALECTS.get(snapshot.get("db_type") or "mariadb", DIALECTS["mariadb"])


def cache_level(ratio: float | None, config: DatabaseHealthConfig) -> str:
	if ratio is None:
		return "no data"
	if ratio >= config.cache_hit.warning:
		return "healthy"
	return "warning" if ratio >= config.cache_hit.critical else "critical"


def is_index_candidate(statement: dict[str, Any], config: DatabaseHealthConfig) -> bool:
	"""Frequent enough and examining enough rows per row returned to be worth an EXPLAIN."""
	count = statement.get("count") or 0
	examined = statement.get("rows_examined") or 0
	sent = statement.get("rows_sent") or 0
	return count >= config.min_executions and examined >= config.scan_ratio * max(sent, 1)


def recommendations(snapshot: dict[str, Any], config: DatabaseHealthConfig) -> list[dict[str, Any]]:
	found = [
		*_fragmentation(snapshot, config),
		*_unused_indexes(snapshot, config),
		*_missing_indexes(snapshot, config),
		*_cache(snapshot, config),
	]
	return found


def _fragmentation(snapshot: dict[str, Any], config: DatabaseHealthConfig) -> list[dict[str, Any]]:
	sql = dialect(snapshot)
	subjects = list(snapshot.get("tables") or [])
	if snapshot.get("file"):
		subjects.append({**snapshot["file"], "table": "(database file)"})
	found = []
	for table in subjects:
		free, total = table.get("free_bytes"), table.get("total_bytes")
		if free is None or not total:
			continue
		ratio = free / total
		if free < config.fragmentation_min_mb * MB or ratio < config.fragmentation_ratio:
			continue
		action = sql.reclaim.format(table=table["table"])
		found.append(
			{
				"kind": "fragmentation",
				"subject": table["table"],
				"evidence": {
					"free_bytes": free,
					"total_bytes": total,
					"free_ratio": round(ratio, 4),
					"measured_at": snapshot.get("taken_at"),
				},
				"message": f"{table['table']}: {free / MB:.1f} MB free of {total / MB:.1f} MB "
				f"({ratio:.0%}), measured {snapshot.get('taken_at')}",
				"action": action,
			}
		)
	return found


def _unused_indexes(snapshot: dict[str, Any], config: DatabaseHealthConfig) -> list[dict[str, Any]]:
	period_s = snapshot.get("index_usage_period_s")
	if period_s is None or period_s < config.unused_index_min_hours * 3600:
		return []
	sql = dialect(snapshot)
	found = []
	for index in snapshot.get("indexes") or []:
		if index.get("reads") != 0 or index.get("unique") or index.get("bytes") is None:
			continue
		if index["bytes"] < config.unused_index_min_mb * MB:
			continue
		found.append(
			{
				"kind": "unused_index",
				"subject": f"{index['table']}.{index['index']}",
				"evidence": {
					"bytes": index["bytes"],
					"columns": index.get("columns") or [],
					"reads": 0,
					"unused_for_s": period_s,
					"since": snapshot.get("index_usage_since"),
					"until": snapshot.get("taken_at"),
				},
				"message": f"{index['table']}.{index['index']} ({index['bytes'] / MB:.2f} MB) served no read "
				f"from {snapshot.get('index_usage_since')} to {snapshot.get('taken_at')} "
				f"({period_s / 3600:.1f} h)",
				"action": sql.drop_index.format(table=index["table"], index=index["index"]),
			}
		)
	return found


def _missing_indexes(snapshot: dict[str, Any], config: DatabaseHealthConfig) -> list[dict[str, Any]]:
	sql = dialect(snapshot)
	found = []
	for statement in snapshot.get("statements") or []:
		suggestion = statement.get("index_suggestion")
		if not suggestion or not is_index_candidate(statement, config):
			continue
		columns = ", ".join(f"{sql.quote}{c}{sql.quote}" for c in suggestion["columns"])
		seen = (
			f"from {statement.get('first_seen')} to {statement.get('last_seen')}"
			if statement.get("first_seen")
			else f"since {statement.get('counted_since')}"
		)
		ratio = (statement.get("rows_examined") or 0) / max(statement.get("rows_sent") or 0, 1)
		found.append(
			{
				"kind": "missing_index",
				"subject": statement["shape"],
				"evidence": {
					"executions": statement["count"],
					"rows_examined": statement["rows_examined"],
					"rows_sent": statement["rows_sent"],
					"rows_examined_per_row_sent": round(ratio, 1),
					"mean_ms": statement.get("mean_ms"),
					"total_ms": statement.get("total_ms"),
					"first_seen": statement.get("first_seen"),
					"last_seen": statement.get("last_seen"),
					"rows_examined_basis": statement.get("rows_examined_basis"),
					"counted_since": statement.get("counted_since"),
					"plan": statement.get("plan"),
				},
				"message": f"{statement['count']} executions {seen} examined {ratio:.0f} rows per row "
				f"returned; the plan reads {suggestion['table']} in full",
				"action": sql.add_index.format(
					table=suggestion["table"], name=suggestion["name"], columns=columns
				),
			}
		)
	return found


def _cache(snapshot: dict[str, Any], config: DatabaseHealthConfig) -> list[dict[str, Any]]:
	cache = snapshot.get("cache") or {}
	ratio = cache.get("ratio")
	if ratio is None or ratio >= config.cache_hit.warning:
		return []
	pool = cache.get("buffer_pool_bytes") or 0
	sql = dialect(snapshot)
	return [
		{
			"kind": "cache_hit_ratio",
			"subject": sql.cache_name,
			"evidence": {
				"ratio": ratio,
				"level": cache_level(ratio, config),
				"read_requests": cache.get("delta_read_requests"),
				"disk_reads": cache.get("delta_reads"),
				"interval_s": cache.get("interval_s"),
				"basis": cache.get("basis"),
				"buffer_pool_bytes": pool,
			},
			"message": f"{ratio:.2%} of {cache.get('delta_read_requests')} page reads served from the "
			f"{sql.cache_name} over {cache.get('interval_s')} s (warning below "
			f"{config.cache_hit.warning:.0%}); it holds {pool / MB:.0f} MB",
			"action": f"raise {sql.cache_setting.format(size=pool / MB)}, towards the size of the data read often",
		}
	]
