"""Database health on a real site, on each backend the runtime provides (MariaDB with performance_schema
on, PostgreSQL with pg_stat_statements, SQLite): planted tables (`vperf_test_db_*`, raw DDL, dropped afterwards) show up in snapshots as a
DBA would see them; the API is for System Managers only and refuses bad input."""

import json
import time

import frappe
import pytest

from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.utils.performance import config, job_reports, monitoring
from verenigingen_perf.utils.performance.alerts import rules as alert_rules
from verenigingen_perf.utils.performance.alerts import sources as alert_sources
from verenigingen_perf.utils.performance.database import snapshot
from verenigingen_perf.utils.performance.schema import DATABASE_SNAPSHOT

API = "verenigingen_perf.api.database"
TABLES = ("vperf_test_db_slow", "vperf_test_db_unused", "vperf_test_db_frag", "vperf_test_db_growth")
MB = 1024 * 1024


# whether the server keeps statement statistics and index usage (its operator turns them on)
_STATISTICS_ON = {
	"mariadb": "select @@performance_schema",
	"postgres": "select count(*) from pg_extension where extname = 'pg_stat_statements'",
	"sqlite": "select 0",
}
_STATISTICS_OFF_REASON = {
	"mariadb": "this MariaDB server runs with performance_schema off (its default): no statement "
	"digests or index usage (the snapshot lists them as unavailable, with how to turn it on)",
	"postgres": "pg_stat_statements is not installed in this database: no statement statistics",
	"sqlite": "SQLite keeps no statement statistics and no index usage (the snapshot says so)",
}


def server_statistics_only():
	if not frappe.db.multisql(_STATISTICS_ON)[0][0]:
		pytest.skip(_STATISTICS_OFF_REASON[frappe.db.db_type])


def counted() -> None:
	"""PostgreSQL keeps a session's scan counts in the session until it flushes them (at most once a
	second, or after the next commit when asked): the test's own statements are counted before it
	looks. MariaDB and SQLite count at once."""
	if frappe.db.db_type == "postgres":
		frappe.db.sql("select pg_stat_force_next_flush()")
		frappe.db.commit()


def analyze(table: str) -> None:
	"""The planner's statistics of a planted table (its row count, its columns' widths)."""
	frappe.db.sql(f"analyze table {table}" if frappe.db.db_type == "mariadb" else f"analyze {table}")
	frappe.db.commit()


# each backend's own spelling of the planted tables' recommended actions
ACTIONS = {
	"mariadb": {
		"add_index": "ALTER TABLE `vperf_test_db_slow` ADD INDEX `vperf_idx_code` (`code`)",
		"drop_index": "ALTER TABLE `vperf_test_db_unused` DROP INDEX `vperf_test_db_unused_code`",
		"reclaim": "OPTIMIZE TABLE `vperf_test_db_frag`",
	},
	"postgres": {
		"add_index": 'CREATE INDEX "vperf_idx_code" ON "vperf_test_db_slow" ("code")',
		"drop_index": 'DROP INDEX "vperf_test_db_unused_code"',
		"reclaim": 'VACUUM (FULL, ANALYZE) "vperf_test_db_frag"',
	},
	"sqlite": {"reclaim": "VACUUM"},
}


def read_through_index(table: str, index: str) -> None:
	if frappe.db.db_type == "mariadb":
		frappe.db.sql(f"select id from {table} force index ({index}) where code = 'c1'")
		return
	# PostgreSQL takes no index hint: its planner is told not to scan the table instead
	frappe.db.sql("set local enable_seqscan = off")
	frappe.db.sql(f"select id from {table} where code = 'c1'")
	frappe.db.commit()


# what the plan calls reading a whole table
FULL_SCAN = {"mariadb": "ALL", "postgres": "Seq Scan"}


def drop_tables():
	frappe.db.rollback()
	for table in TABLES:
		frappe.db.sql(f"drop table if exists {table}")
	frappe.db.commit()


@pytest.fixture
def db_health(default_settings):
	"""Small thresholds (the planted tables are small), no snapshots, no planted tables; and back."""
	drop_tables()
	frappe.db.delete(DATABASE_SNAPSHOT)
	config.update_config(
		{
			"db_min_executions": 10,
			"db_scan_ratio": 100,
			"db_fragmentation_min_mb": 1,
			"db_fragmentation_ratio": 0.1,
			"db_unused_index_min_hours": 0,
			"db_unused_index_min_mb": 0,
			"db_growth_min_mb": 0.01,
			"db_growth_ratio": 0.1,
			"db_cache_sample_s": 0.1,
			# a whole test session's statement shapes: the planted one's few milliseconds must not
			# fall behind the busiest 200
			"db_max_statements": 5000,
		}
	)
	frappe.db.commit()
	yield
	drop_tables()
	frappe.db.delete(DATABASE_SNAPSHOT)
	frappe.db.commit()


def take() -> dict:
	data = snapshot.take(snapshot.ON_DEMAND)
	frappe.db.commit()
	return data


def of_kind(data: dict, kind: str) -> list[dict]:
	return [r for r in data["recommendations"] if r["kind"] == kind]


def fill(table: str, rows: int, pad_chars: int) -> None:
	"""`rows` rows of `pad_chars` characters each, in batches."""
	batch = 1000
	for start in range(0, rows, batch):
		values = ", ".join(
			f"({i}, 'c{i % 500}', '{'x' * pad_chars}')"
			for i in range(start + 1, min(start + batch, rows) + 1)
		)
		frappe.db.sql(f"insert into {table} (id, code, pad) values {values}")
	frappe.db.commit()


def create(table: str, extra: str = "") -> None:
	frappe.db.sql(
		f"create table {table} (id integer primary key, code varchar(20) not null, pad varchar(300) not null{extra})"
	)
	frappe.db.commit()


def test_a_slow_statement_without_an_index_gets_one_named_until_the_index_exists(site, db_health):
	server_statistics_only()
	create("vperf_test_db_slow")
	fill("vperf_test_db_slow", 3000, 10)
	analyze("vperf_test_db_slow")
	for i in range(12):
		frappe.db.sql(f"select id, pad from vperf_test_db_slow where code = 'member-secret-{i}'")
	counted()
	data = take()
	found = [r for r in of_kind(data, "missing_index") if "vperf_test_db_slow" in r["subject"]]
	assert len(found) == 1, data["recommendations"]
	rec = found[0]
	# the digest's text, normalised (MariaDB writes names that are also keywords in capitals and a
	# space before a comma)
	subject = rec["subject"].lower().replace("`", "").replace(" ,", ",")
	assert subject == "select id, pad from vperf_test_db_slow where code = ?"
	assert rec["action"] == ACTIONS[frappe.db.db_type]["add_index"]
	evidence = rec["evidence"]
	assert evidence["executions"] >= 12 and evidence["rows_sent"] == 0
	if frappe.db.db_type == "mariadb":
		assert evidence["rows_examined"] >= 12 * 3000
	else:
		# PostgreSQL's figure is derived: calls times the rows a sequential scan of the table read
		(table,) = [t for t in data["tables"] if t["table"] == "vperf_test_db_slow"]
		per_scan = table["seq_rows_read"] / table["seq_scans"]
		assert evidence["rows_examined"] == round(evidence["executions"] * per_scan)
		assert per_scan >= 1000 and evidence["rows_examined_basis"]
	scan = FULL_SCAN[frappe.db.db_type]
	assert any(step["type"] == scan and step["table"] == "vperf_test_db_slow" for step in evidence["plan"])
	# a database alert rule watches the latest snapshot's figures
	rule = alert_rules.validate(
		{"name": "index wanted", "source": "database", "metric": "missing_indexes", "threshold": 0}
	)
	now = frappe.utils.now_datetime()
	(observed,) = alert_sources.observations(rule, alert_sources.read([rule], config.get_config(), now), now)
	assert observed.value == len(of_kind(data, "missing_index")) and alert_rules.breaches(rule, observed)
	# no literal of a statement is kept anywhere in the snapshot
	stored = frappe.db.get_value(DATABASE_SNAPSHOT, data["name"], "snapshot")
	assert "member-secret" not in stored
	frappe.db.sql("create index vperf_test_db_slow_code on vperf_test_db_slow (code)")
	frappe.db.commit()
	analyze("vperf_test_db_slow")
	after = take()
	assert not [r for r in of_kind(after, "missing_index") if "vperf_test_db_slow" in r["subject"]]


def test_a_planted_unused_index_is_reported_with_its_size_and_period(site, db_health):
	server_statistics_only()
	create("vperf_test_db_unused")
	frappe.db.sql("create index vperf_test_db_unused_code on vperf_test_db_unused (code)")
	fill("vperf_test_db_unused", 2000, 10)
	analyze("vperf_test_db_unused")
	for i in range(5):
		frappe.db.sql(f"select pad from vperf_test_db_unused where id = {i + 1}")
	counted()
	data = take()
	found = [r for r in of_kind(data, "unused_index") if r["subject"].startswith("vperf_test_db_unused.")]
	assert [r["subject"] for r in found] == ["vperf_test_db_unused.vperf_test_db_unused_code"]
	evidence = found[0]["evidence"]
	assert evidence["bytes"] > 0 and evidence["reads"] == 0 and evidence["columns"] == ["code"]
	assert evidence["unused_for_s"] == data["index_usage_period_s"] == data["server"]["uptime_s"]
	assert found[0]["action"] == ACTIONS[frappe.db.db_type]["drop_index"]
	# once read through, it is no longer unused
	read_through_index("vperf_test_db_unused", "vperf_test_db_unused_code")
	counted()
	assert not [
		r for r in of_kind(take(), "unused_index") if r["subject"].startswith("vperf_test_db_unused.")
	]


def test_a_table_grown_and_emptied_shows_fragmentation(site, db_health):
	create("vperf_test_db_frag")
	fill("vperf_test_db_frag", 20000, 250)
	# the last row keeps the table's last page in use: PostgreSQL's vacuum gives back only the empty
	# pages at a table's end, and may run at any moment
	frappe.db.sql("delete from vperf_test_db_frag where id < 20000")
	frappe.db.commit()
	subject = "(database file)" if frappe.db.db_type == "sqlite" else "vperf_test_db_frag"
	found = []
	for _attempt in range(30):
		# InnoDB returns the pages to the tablespace once its purge thread has run
		counted()
		found = [r for r in of_kind(take(), "fragmentation") if r["subject"] == subject]
		if found:
			break
		time.sleep(1)
	assert found, subject
	evidence = found[0]["evidence"]
	assert evidence["free_bytes"] >= 2 * MB and evidence["free_ratio"] >= 0.1
	assert found[0]["action"] == ACTIONS[frappe.db.db_type]["reclaim"]


def test_a_compare_shows_the_growth_the_test_made(site, db_health, http):
	create("vperf_test_db_growth")
	analyze("vperf_test_db_growth")
	counted()
	before = take()
	fill("vperf_test_db_growth", 5000, 100)
	# PostgreSQL: the inserts are counted before ANALYZE sets the live rows (counted after, they were
	# added to ANALYZE's count: 10,000 for 5,000 rows, seen on a v15 bench)
	counted()
	analyze("vperf_test_db_growth")
	counted()
	after = take()
	compared = snapshot.compare_snapshots(before, after, config.get_config())
	row = next(t for t in compared["tables"] if t["table"] == "vperf_test_db_growth")
	assert row["rows_before"] == 0 and abs(row["rows_change"] - 5000) <= 500
	assert row["bytes_change"] > 0.3 * MB and row["flagged"]
	# the API compares the latest snapshot against the pinned one
	admin = http("Administrator")
	assert admin.call(f"{API}.pin_snapshot", name=before["name"], pin_name="before growth").status_code == 200
	response = admin.call(f"{API}.compare_snapshots")
	assert response.status_code == 200, response.text[:300]
	answer = response.json()["message"]
	assert answer["old"] == before["name"] and answer["new"] == after["name"]
	assert any(t["table"] == "vperf_test_db_growth" and t["rows_change"] for t in answer["tables"])


def test_the_system_manager_takes_and_reads_snapshots_over_http(site, db_health, http):
	admin = http("Administrator")
	taken = admin.call(f"{API}.take_snapshot")
	assert taken.status_code == 200, taken.text[:300]
	summary = taken.json()["message"]
	assert summary["db_type"] == frappe.db.db_type and summary["tables"] > 100
	health = admin.call(f"{API}.database_health").json()["message"]
	assert health["snapshot"] == summary["snapshot"]
	if frappe.db.db_type == "sqlite":
		assert {u["what"] for u in health["unavailable"]} >= {"statements", "index usage"}
	else:
		assert health["cache_basis"] == "two readings of the same snapshot"
		assert health["buffer_pool_bytes"] > 0
	stored = admin.call(f"{API}.get_snapshot", name=summary["snapshot"]).json()["message"]
	if frappe.db.db_type != "sqlite":
		# a quiet server may read no page within the sample (and PostgreSQL's sessions report their
		# block reads at most once a second): the ratio is then "no data", and says why (the next
		# test judges a longer span)
		if health["cache_hit_ratio"] is None:
			assert stored["cache"]["delta_read_requests"] == 0 and health["cache_level"] == "no data"
		else:
			assert 0 <= health["cache_hit_ratio"] <= 1
	assert stored["name"] == summary["snapshot"] and json.dumps(stored)
	listed = admin.call(f"{API}.list_snapshots", limit=5).json()["message"]["snapshots"]
	assert [s["name"] for s in listed] == [summary["snapshot"]]
	assert admin.call(f"{API}.get_snapshot", name="no-such-snapshot").status_code == 404


def test_a_scheduled_snapshot_judges_the_cache_since_the_previous_one(site, db_health):
	server_statistics_only()
	first = snapshot.take(snapshot.SCHEDULED)
	frappe.db.commit()
	create("vperf_test_db_growth")
	fill("vperf_test_db_growth", 2000, 100)
	for _ in range(20):
		frappe.db.sql("select count(*) from vperf_test_db_growth where code = 'c1'")
	counted()
	second = snapshot.take(snapshot.SCHEDULED)
	frappe.db.commit()
	cache = second["cache"]
	assert cache["basis"] == f"since the previous snapshot {first['name']} ({first['taken_at']})"
	assert cache["delta_read_requests"] > 0 and 0 <= cache["ratio"] <= 1
	assert cache["ratio"] == round(1 - cache["delta_reads"] / cache["delta_read_requests"], 6)


def test_the_scheduled_snapshot_reports_to_the_meta_monitoring(site, db_health, run_scheduled_job):
	run_scheduled_job("verenigingen_perf.utils.performance.database.snapshot.snapshot_job")
	report = job_reports.read().by_job["snapshot"]
	latest = snapshot.latest()
	assert report["status"] == "ok" and report["snapshot"] == latest["name"]
	assert report["tables"] == len(latest["tables"]) and report["recommendations"] == len(
		latest["recommendations"]
	)
	sample = monitoring.collect(config.get_config())
	assert sample["snapshot_lag_s"] == 0


METHODS = (
	"database_health",
	"take_snapshot",
	"get_snapshot",
	"list_snapshots",
	"pin_snapshot",
	"compare_snapshots",
)


@pytest.mark.parametrize("method", METHODS)
def test_only_system_managers_may_call_the_database_api(site, http, make_user, method):
	for client in (http(None), http(make_user(PERFORMANCE_MANAGER)), http(make_user("Desk User"))):
		response = client.call(f"{API}.{method}", name="x", pin_name="y")
		assert response.status_code == 403, (client.user, method, response.status_code)
		assert "Traceback" not in response.text


@pytest.mark.parametrize(
	("method", "params", "named"),
	[
		("get_snapshot", {}, "name"),
		("get_snapshot", {"name": "x" * 141}, "name"),
		("get_snapshot", {"name": "two\nlines"}, "name"),
		("list_snapshots", {"limit": 0}, "limit"),
		("list_snapshots", {"limit": "many"}, "limit"),
		("pin_snapshot", {"name": "x"}, "pin_name"),
		("compare_snapshots", {"old": "y" * 200}, "old"),
	],
)
def test_bad_input_is_refused_naming_the_argument(site, http, method, params, named):
	response = http("Administrator").call(f"{API}.{method}", **params)
	assert response.status_code == 417, response.text[:300]
	assert named in response.text and "Traceback" not in response.text
