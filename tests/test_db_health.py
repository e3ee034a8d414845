"""Database health on a real site, on each backend with a collector (MariaDB with performance_schema
on, SQLite; PostgreSQL has none yet, issue #17, and skips the tests that take snapshots): planted tables (`vperf_test_db_*`, raw DDL, dropped afterwards) show up in snapshots as a
DBA would see them; the API is for System Managers only and refuses bad input."""

import json
import time

import frappe
import pytest

from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.database import collectors, snapshot
from verenigingen_perf.utils.performance.schema import DATABASE_SNAPSHOT

API = "verenigingen_perf.api.database"
TABLES = ("vperf_test_db_slow", "vperf_test_db_unused", "vperf_test_db_frag", "vperf_test_db_growth")
MB = 1024 * 1024


def mariadb_only():
	if frappe.db.db_type != "mariadb":
		pytest.skip("SQLite keeps no statement statistics and no index usage (the snapshot says so)")


def drop_tables():
	frappe.db.rollback()
	for table in TABLES:
		frappe.db.sql(f"drop table if exists {table}")
	frappe.db.commit()


@pytest.fixture
def db_health(default_settings):
	"""Small thresholds (the planted tables are small), no snapshots, no planted tables; and back."""
	if collectors.collector() is None:
		pytest.skip(f"no database health collector for {frappe.db.db_type} yet (PostgreSQL: issue #17)")
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
	mariadb_only()
	create("vperf_test_db_slow")
	fill("vperf_test_db_slow", 3000, 10)
	for i in range(12):
		frappe.db.sql(f"select id, pad from vperf_test_db_slow where code = 'member-secret-{i}'")
	data = take()
	found = [r for r in of_kind(data, "missing_index") if "vperf_test_db_slow" in r["subject"]]
	assert len(found) == 1, data["recommendations"]
	rec = found[0]
	# the digest's text, normalised (MariaDB writes names that are also keywords in capitals)
	assert rec["subject"].lower().replace("`", "") == "select id , pad from vperf_test_db_slow where code = ?"
	assert rec["action"] == "ALTER TABLE `vperf_test_db_slow` ADD INDEX `vperf_idx_code` (`code`)"
	evidence = rec["evidence"]
	assert evidence["executions"] >= 12 and evidence["rows_sent"] == 0
	assert evidence["rows_examined"] >= 12 * 3000
	assert any(step["type"] == "ALL" and step["table"] == "vperf_test_db_slow" for step in evidence["plan"])
	# no literal of a statement is kept anywhere in the snapshot
	stored = frappe.db.get_value(DATABASE_SNAPSHOT, data["name"], "snapshot")
	assert "member-secret" not in stored
	frappe.db.sql("create index vperf_test_db_slow_code on vperf_test_db_slow (code)")
	frappe.db.commit()
	after = take()
	assert not [r for r in of_kind(after, "missing_index") if "vperf_test_db_slow" in r["subject"]]


def test_a_planted_unused_index_is_reported_with_its_size_and_period(site, db_health):
	mariadb_only()
	create("vperf_test_db_unused", ", key vperf_test_db_unused_code (code)")
	fill("vperf_test_db_unused", 2000, 10)
	for i in range(5):
		frappe.db.sql(f"select pad from vperf_test_db_unused where id = {i + 1}")
	data = take()
	found = [r for r in of_kind(data, "unused_index") if r["subject"].startswith("vperf_test_db_unused.")]
	assert [r["subject"] for r in found] == ["vperf_test_db_unused.vperf_test_db_unused_code"]
	evidence = found[0]["evidence"]
	assert evidence["bytes"] > 0 and evidence["reads"] == 0 and evidence["columns"] == ["code"]
	assert evidence["unused_for_s"] == data["index_usage_period_s"] == data["server"]["uptime_s"]
	assert found[0]["action"] == "ALTER TABLE `vperf_test_db_unused` DROP INDEX `vperf_test_db_unused_code`"
	# once read through, it is no longer unused
	frappe.db.sql(
		"select id from vperf_test_db_unused force index (vperf_test_db_unused_code) where code = 'c1'"
	)
	assert not [
		r for r in of_kind(take(), "unused_index") if r["subject"].startswith("vperf_test_db_unused.")
	]


def test_a_table_grown_and_emptied_shows_fragmentation(site, db_health):
	create("vperf_test_db_frag")
	fill("vperf_test_db_frag", 20000, 250)
	frappe.db.sql("delete from vperf_test_db_frag")
	frappe.db.commit()
	subject = "vperf_test_db_frag" if frappe.db.db_type == "mariadb" else "(database file)"
	found = []
	for _attempt in range(30):
		# InnoDB returns the pages to the tablespace once its purge thread has run
		found = [r for r in of_kind(take(), "fragmentation") if r["subject"] == subject]
		if found:
			break
		time.sleep(1)
	assert found, subject
	evidence = found[0]["evidence"]
	assert evidence["free_bytes"] >= 2 * MB and evidence["free_ratio"] >= 0.1
	expected = "OPTIMIZE TABLE `vperf_test_db_frag`" if frappe.db.db_type == "mariadb" else "VACUUM"
	assert found[0]["action"] == expected


def test_a_compare_shows_the_growth_the_test_made(site, db_health, http):
	create("vperf_test_db_growth")
	frappe.db.sql("analyze table vperf_test_db_growth") if frappe.db.db_type == "mariadb" else None
	before = take()
	fill("vperf_test_db_growth", 5000, 100)
	frappe.db.sql("analyze table vperf_test_db_growth") if frappe.db.db_type == "mariadb" else None
	frappe.db.commit()
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
		assert 0 <= health["cache_hit_ratio"] <= 1 and health["buffer_pool_bytes"] > 0
	stored = admin.call(f"{API}.get_snapshot", name=summary["snapshot"]).json()["message"]
	assert stored["name"] == summary["snapshot"] and json.dumps(stored)
	listed = admin.call(f"{API}.list_snapshots", limit=5).json()["message"]["snapshots"]
	assert [s["name"] for s in listed] == [summary["snapshot"]]
	assert admin.call(f"{API}.get_snapshot", name="no-such-snapshot").status_code == 404


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
