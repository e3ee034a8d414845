"""Database health's pure parts: statement shapes without literals, index derivation, recommendation
rules and snapshot comparison."""

import pytest

from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.database import collect_postgres, compare, recommend, shapes

MB = 1024 * 1024
CONFIG = config.build_config("production", "default")
DB = CONFIG.database


@pytest.mark.parametrize(
	("text", "expected"),
	[
		("select * from t where a = 'Jan Jansen' and b = 42", "select * from t where a = ? and b = ?"),
		("select * from t where a in ('x', 'y', 'z')", "select * from t where a in (?+)"),
		('select * from t where a = "double" /* user@example.org */', "select * from t where a = ?"),
		("select * from t where a = 0x4a616e and b = -3.5", "select * from t where a = ? and b = ?"),
		("SELECT `a` FROM `t` WHERE `b` IN (...)", "SELECT `a` FROM `t` WHERE `b` IN (?+)"),
		("select * from `tab2024 Plan` where x = 1", "select * from `tab2024 Plan` where x = ?"),
	],
)
def test_a_shape_keeps_no_literal(text, expected):
	assert shapes.shape(text) == expected


def test_only_complete_selects_are_explained():
	assert shapes.is_select(" SELECT 1") and shapes.is_select("(select a from t)")
	for text in (
		"update t set a = 1",
		"select a into @x from t",
		"select 1; drop table t",
		"/* x */ delete from t",
	):
		assert not shapes.is_select(text)
	assert not shapes.is_complete("SELECT a FROM t WHERE b = ...")


def test_where_columns_and_the_index_they_make():
	text = "select t.a from `tabX` t join `tabY` y on y.name = t.y where t.kind = 'a' and t.at > 5 and t.status in (1, 2) and y.z = 3"
	assert shapes.tables(text) == {"t": "tabX", "y": "tabY"}
	conditions = shapes.where_columns(text)
	assert conditions == [("t", "kind", "="), ("t", "at", ">"), ("t", "status", "in"), ("y", "z", "=")]
	# equality columns first, then one range column; only the table's own columns
	assert shapes.index_columns(conditions, "t", False, {"kind", "at", "status"}) == ["kind", "status", "at"]
	assert shapes.index_columns(conditions, "y", False, {"z"}) == ["z"]
	assert shapes.index_columns(
		shapes.where_columns("select * from t where CODE = ?"), "t", True, {"code"}
	) == ["code"]
	# an OR needs more than one index: no suggestion
	assert shapes.where_columns("select * from t where a = 1 or b = 2") == []
	# PostgreSQL's limit on a name (MariaDB's is one more)
	assert shapes.index_name(["a" * 80]) == ("vperf_idx_" + "a" * 80)[:63]


def snapshot(**extra):
	return {"db_type": "mariadb", "taken_at": "2026-11-26 10:00:00", "tables": [], "indexes": [], **extra}


def test_fragmentation_needs_both_the_share_and_the_size():
	table = {"table": "tabBig", "free_bytes": 200 * MB, "total_bytes": 500 * MB}
	(found,) = recommend.recommendations(snapshot(tables=[table]), DB)
	assert found["kind"] == "fragmentation" and found["action"] == "OPTIMIZE TABLE `tabBig`"
	assert found["evidence"]["free_bytes"] == 200 * MB and found["evidence"]["free_ratio"] == 0.4
	small = {"table": "tabSmall", "free_bytes": 50 * MB, "total_bytes": 60 * MB}
	mostly_used = {"table": "tabUsed", "free_bytes": 150 * MB, "total_bytes": 5000 * MB}
	assert recommend.recommendations(snapshot(tables=[small, mostly_used]), DB) == []
	sqlite = snapshot(db_type="sqlite", file={"free_bytes": 300 * MB, "total_bytes": 900 * MB})
	assert [r["action"] for r in recommend.recommendations(sqlite, DB)] == ["VACUUM"]


def test_an_unused_index_needs_a_long_enough_period_and_its_size():
	index = {
		"table": "tabX",
		"index": "kind",
		"columns": ["kind"],
		"unique": False,
		"bytes": 5 * MB,
		"reads": 0,
	}
	week = 7 * 86400
	found = recommend.recommendations(snapshot(indexes=[index], index_usage_period_s=week), DB)
	assert [r["action"] for r in found] == ["ALTER TABLE `tabX` DROP INDEX `kind`"]
	assert found[0]["evidence"]["unused_for_s"] == week and found[0]["evidence"]["bytes"] == 5 * MB
	assert recommend.recommendations(snapshot(indexes=[index], index_usage_period_s=3600), DB) == []
	for other in ({"unique": True}, {"reads": 3}, {"reads": None}, {"bytes": None}):
		assert (
			recommend.recommendations(snapshot(indexes=[{**index, **other}], index_usage_period_s=week), DB)
			== []
		)


def test_a_missing_index_needs_frequency_a_scan_ratio_and_a_derived_index():
	statement = {
		"shape": "SELECT a FROM t WHERE b = ?",
		"count": DB.min_executions,
		"rows_examined": DB.min_executions * 1000,
		"rows_sent": DB.min_executions,
		"index_suggestion": {"table": "t", "columns": ["b"], "name": "vperf_idx_b"},
		"plan": [{"table": "t", "type": "ALL"}],
	}
	(found,) = recommend.recommendations(snapshot(statements=[statement]), DB)
	assert found["action"] == "ALTER TABLE `t` ADD INDEX `vperf_idx_b` (`b`)"
	assert found["evidence"]["rows_examined_per_row_sent"] == 1000 and found["evidence"]["plan"]
	for other in ({"count": DB.min_executions - 1}, {"rows_examined": 10}, {"index_suggestion": None}):
		assert recommend.recommendations(snapshot(statements=[{**statement, **other}]), DB) == []


def test_a_low_cache_ratio_names_the_pool():
	cache = {
		"ratio": 0.9,
		"delta_read_requests": 1000,
		"delta_reads": 100,
		"interval_s": 1,
		"buffer_pool_bytes": 128 * MB,
	}
	(found,) = recommend.recommendations(snapshot(cache=cache), DB)
	assert found["kind"] == "cache_hit_ratio" and found["evidence"]["level"] == "critical"
	assert "128 MB" in found["action"]
	assert recommend.recommendations(snapshot(cache={**cache, "ratio": 0.995}), DB) == []
	assert recommend.cache_level(None, DB) == "no data"


def test_compare_flags_growth_new_slow_shapes_unused_indexes_and_the_cache():
	old = snapshot(
		server={"uptime_s": 100},
		tables=[
			{"table": "tabA", "rows": 10, "total_bytes": 100 * MB},
			{"table": "tabB", "rows": 5, "total_bytes": MB},
		],
		statements=[{"digest": "d1", "shape": "S1", "count": 10, "total_ms": 10.0, "mean_ms": 1.0}],
		indexes=[{"table": "tabA", "index": "i", "reads": 5, "unique": False}],
		cache={"read_requests": 1000, "reads": 10, "ratio": 0.99},
	)
	new = snapshot(
		server={"uptime_s": 200},
		tables=[
			{"table": "tabA", "rows": 30, "total_bytes": 300 * MB},
			{"table": "tabB", "rows": 6, "total_bytes": MB},
			{"table": "tabC", "rows": 1, "total_bytes": MB},
		],
		statements=[
			{"digest": "d1", "shape": "S1", "count": 20, "total_ms": 10.0 + 10 * 500, "mean_ms": 250.5},
			{"digest": "d2", "shape": "S2", "count": 3, "total_ms": 3.0, "mean_ms": 1.0},
		],
		indexes=[{"table": "tabA", "index": "i", "reads": 5, "unique": False}],
		cache={"read_requests": 2000, "reads": 110, "ratio": 0.95},
	)
	result = compare.compare(old, new, CONFIG)
	tables = {t["table"]: t for t in result["tables"]}
	assert tables["tabA"]["bytes_change"] == 200 * MB and tables["tabA"]["growth_ratio"] == 2.0
	assert tables["tabA"]["flagged"] and tables["tabA"]["rows_change"] == 20
	assert tables["tabC"]["new"] and not tables["tabC"]["flagged"]
	assert not tables["tabB"]["flagged"] and tables["tabB"]["bytes_change"] == 0
	assert result["new_slow_statements"] == [
		{"shape": "S1", "executions": 10, "mean_ms": 500.0, "slow_ms": CONFIG.monitoring.slow_query_ms}
	]
	assert [(i["table"], i["index"]) for i in result["newly_unused_indexes"]] == [("tabA", "i")]
	assert result["cache"]["ratio_over_period"] == 0.9 and result["cache"]["flagged"]
	assert result["cache"]["change"] == -0.04
	# a restart in between: no period figures from counters that began again
	restarted = compare.compare(old, {**new, "server": {"uptime_s": 50}}, CONFIG)
	assert restarted["cache"]["ratio_over_period"] is None and not restarted["counters_continuous"]


def test_the_database_settings_are_bounded_and_ordered():
	with pytest.raises(config.ConfigValidationError, match="db_cache_hit_warning"):
		config.validate_overrides("production", {"db_cache_hit_warning": 0.9, "db_cache_hit_critical": 0.95})
	for key, value in (("db_fragmentation_ratio", 1.5), ("db_max_tables", 0), ("db_cache_sample_s", 60)):
		with pytest.raises(config.ConfigValidationError, match=key):
			config.validate_overrides("production", {key: value})


def test_postgres_text_is_read_with_its_quoted_names_and_numbered_parameters():
	text = 'select "name", pad from "tabMember" m where m."email" = $1 and "note" = \'say "hi"\' and id > $12'
	readable = collect_postgres.as_backtick_text(text)
	assert (
		readable
		== "select `name`, pad from `tabMember` m where m.`email` = ? and `note` = 'say \"hi\"' and id > ?"
	)
	assert shapes.tables(readable) == {"m": "tabMember"}
	assert shapes.where_columns(readable) == [("m", "email", "="), (None, "note", "="), (None, "id", ">")]
	# the string's content is a literal, replaced like any other
	assert "hi" not in shapes.shape(readable)


def test_postgres_free_space_is_the_larger_estimate_and_says_which():
	# 1,000 live rows of 100 bytes: a tuple takes 23 + 100 bytes aligned to 128, and a 4-byte line
	# pointer; 61 fit a page of 8 KB after its 24-byte header: 17 pages needed, 100 kept
	free, basis = collect_postgres.free_estimate(100 * 8192, 1000, 0, 1000, 100, 100, 3, 8192)
	assert free == (100 - 17) * 8192 and "average width" in basis
	# half the rows dead and not yet vacuumed, the pages all needed
	free, basis = collect_postgres.free_estimate(17 * 8192, 500, 500, 1000, 17, 100, 3, 8192)
	assert free == 17 * 8192 // 2 and "dead rows" in basis
	# no statistics of the columns yet: the dead rows alone (none here)
	assert collect_postgres.free_estimate(100 * 8192, 10, 0, 10, 100, None, 0, 8192)[0] == 0


def test_postgres_recommendations_are_written_in_its_dialect():
	pg = {"db_type": "postgres"}
	table = {"table": "tabBig", "free_bytes": 200 * MB, "total_bytes": 500 * MB}
	(found,) = recommend.recommendations(snapshot(**pg, tables=[table]), DB)
	assert found["action"] == 'VACUUM (FULL, ANALYZE) "tabBig"'
	index = {
		"table": "tabX",
		"index": "kind",
		"columns": ["kind"],
		"unique": False,
		"bytes": 5 * MB,
		"reads": 0,
	}
	(found,) = recommend.recommendations(snapshot(**pg, indexes=[index], index_usage_period_s=7 * 86400), DB)
	assert found["action"] == 'DROP INDEX "kind"'
	statement = {
		"shape": "SELECT a FROM t WHERE b = ?",
		"count": DB.min_executions,
		"rows_examined": DB.min_executions * 1000,
		"rows_examined_basis": "calls times the rows each sequential scan read",
		"rows_sent": DB.min_executions,
		"counted_since": "2026-11-26 09:00:00",
		"index_suggestion": {"table": "t", "columns": ["b", "c"], "name": "vperf_idx_b_c"},
		"plan": [{"table": "t", "type": "Seq Scan"}],
	}
	(found,) = recommend.recommendations(snapshot(**pg, statements=[statement]), DB)
	assert found["action"] == 'CREATE INDEX "vperf_idx_b_c" ON "t" ("b", "c")'
	assert "since 2026-11-26 09:00:00" in found["message"]
	assert found["evidence"]["rows_examined_basis"] == statement["rows_examined_basis"]
	cache = {
		"ratio": 0.5,
		"delta_read_requests": 10,
		"delta_reads": 5,
		"interval_s": 1,
		"buffer_pool_bytes": 128 * MB,
	}
	(found,) = recommend.recommendations(snapshot(**pg, cache=cache), DB)
	assert (
		found["subject"] == "PostgreSQL shared buffers" and "shared_buffers (now 128 MB)" in found["action"]
	)


def test_postgres_statements_of_one_shape_are_merged():
	def entry(digest, count, total, peak, sent):
		return {
			"digest": digest,
			"shape": "select a from t where b = ?",
			"count": count,
			"total_ms": total,
			"max_ms": peak,
			"rows_sent": sent,
			"mean_ms": total / count,
		}

	other = {**entry("9", 1, 1.0, 1.0, 1), "shape": "select 1"}
	merged = collect_postgres.merged_by_shape(
		[entry("1", 10, 50.0, 9.0, 3), other, entry("2", 30, 30.0, 2.0, 5)]
	)
	assert [m["digest"] for m in merged] == ["1", "9"]
	assert merged[0]["count"] == 40 and merged[0]["total_ms"] == 80.0 and merged[0]["max_ms"] == 9.0
	assert merged[0]["rows_sent"] == 8 and merged[0]["mean_ms"] == 2.0
