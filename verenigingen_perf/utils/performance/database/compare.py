"""Two snapshots compared (pure Python): growth per table, new slow statement shapes, indexes that
became unused, the cache ratio's change, each flagged against the configured thresholds.

Counters of the server (statement digests, index reads, buffer pool reads) are cumulative since the
server started: figures of the compared period are the newer reading minus the older one, when the
server did not restart in between (its uptime grew); otherwise the newer reading alone, said so.
"""

from __future__ import annotations

from typing import Any

from verenigingen_perf.utils.performance.config import PerformanceConfig
from verenigingen_perf.utils.performance.database.recommend import MB, cache_level


def _same_server_run(old: dict[str, Any], new: dict[str, Any]) -> bool:
	old_up, new_up = (old.get("server") or {}).get("uptime_s"), (new.get("server") or {}).get("uptime_s")
	return old_up is not None and new_up is not None and new_up >= old_up


def compare(old: dict[str, Any], new: dict[str, Any], config: PerformanceConfig) -> dict[str, Any]:
	db = config.database
	continuous = _same_server_run(old, new)
	return {
		"from": old.get("taken_at"),
		"to": new.get("taken_at"),
		"counters_continuous": continuous,
		"tables": _growth(old, new, db.growth_ratio, db.growth_min_mb),
		"new_slow_statements": _slow(old, new, config.monitoring.slow_query_ms, continuous),
		"newly_unused_indexes": _unused(old, new, continuous),
		"cache": _cache(old, new, config, continuous),
	}


def _growth(old: dict[str, Any], new: dict[str, Any], ratio: float, min_mb: float) -> list[dict[str, Any]]:
	before = {t["table"]: t for t in old.get("tables") or []}
	rows = []
	for table in new.get("tables") or []:
		previous = before.get(table["table"])
		old_bytes = previous.get("total_bytes") if previous else 0
		old_rows = previous.get("rows") if previous else 0
		grown = (table.get("total_bytes") or 0) - (old_bytes or 0)
		relative = grown / old_bytes if old_bytes else None
		row_change = None if table.get("rows") is None or old_rows is None else table["rows"] - old_rows
		flagged = grown >= min_mb * MB and (relative is None or relative >= ratio)
		if not grown and not row_change:
			continue
		rows.append(
			{
				"table": table["table"],
				"new": previous is None,
				"rows_before": old_rows if previous else None,
				"rows_after": table.get("rows"),
				"rows_change": row_change,
				"bytes_before": old_bytes if previous else None,
				"bytes_after": table.get("total_bytes"),
				"bytes_change": grown,
				"growth_ratio": None if relative is None else round(relative, 4),
				"flagged": flagged,
			}
		)
	return sorted(rows, key=lambda r: (-r["bytes_change"], -(r["rows_change"] or 0), r["table"]))


def _slow(old: dict[str, Any], new: dict[str, Any], slow_ms: float, continuous: bool) -> list[dict[str, Any]]:
	before = {s["digest"]: s for s in old.get("statements") or [] if s.get("digest")}
	found = []
	for statement in new.get("statements") or []:
		previous = before.get(statement.get("digest")) if continuous else None
		count, total = statement.get("count") or 0, statement.get("total_ms") or 0.0
		if previous:
			count -= previous.get("count") or 0
			total -= previous.get("total_ms") or 0.0
			if (previous.get("mean_ms") or 0) >= slow_ms:
				continue  # slow before already: not new
		if count <= 0:
			continue
		mean = total / count
		if mean >= slow_ms:
			found.append(
				{
					"shape": statement["shape"],
					"executions": count,
					"mean_ms": round(mean, 3),
					"slow_ms": slow_ms,
				}
			)
	return sorted(found, key=lambda s: -s["mean_ms"])


def _unused(old: dict[str, Any], new: dict[str, Any], continuous: bool) -> list[dict[str, Any]]:
	before = {(i["table"], i["index"]): i for i in old.get("indexes") or []}
	found = []
	for index in new.get("indexes") or []:
		reads = index.get("reads")
		if reads is None or index.get("unique"):
			continue
		previous = before.get((index["table"], index["index"]))
		old_reads = previous.get("reads") if previous else None
		if continuous and old_reads:
			unused = reads == old_reads  # read before, not since
		else:
			unused = reads == 0 and old_reads != 0
		if unused:
			found.append(
				{
					"table": index["table"],
					"index": index["index"],
					"bytes": index.get("bytes"),
					"reads_before": old_reads,
					"reads_after": reads,
				}
			)
	return found


def _cache(
	old: dict[str, Any], new: dict[str, Any], config: PerformanceConfig, continuous: bool
) -> dict[str, Any]:
	old_cache, new_cache = old.get("cache") or {}, new.get("cache") or {}
	ratio = None
	if (
		continuous
		and new_cache.get("read_requests") is not None
		and old_cache.get("read_requests") is not None
	):
		requests = new_cache["read_requests"] - old_cache["read_requests"]
		reads = new_cache["reads"] - old_cache["reads"]
		ratio = round(1 - reads / requests, 6) if requests > 0 else None
	before, after = old_cache.get("ratio"), new_cache.get("ratio")
	return {
		"ratio_before": before,
		"ratio_after": after,
		"change": None if before is None or after is None else round(after - before, 6),
		"ratio_over_period": ratio,
		"level": cache_level(ratio if ratio is not None else after, config.database),
		"flagged": cache_level(ratio if ratio is not None else after, config.database)
		in ("warning", "critical"),
	}
