"""Database health benchmark: one on-demand snapshot on a site with `--tables` (200) extra tables and a
`--rows` (1,000,000) row detail table (Performance Metric).

	devruntime/run bench db_health --db mariadb      (or --db postgres, --db sqlite)

Creates the tables `vperf_bench_db_NNN` (a few rows each, an index each) and tops Performance Metric up
to `--rows` rows named `vperf-bench-db-*` (inserted by one SQL statement), takes one snapshot with every
statement it runs recorded, then removes what it added (`--keep` leaves it). Prints the snapshot's
duration, its statements, and which of them read a data table: the collectors read information_schema,
performance_schema, mysql.innodb_index_stats, status and EXPLAIN (MariaDB), the statistics views,
catalogues and generic plans (PostgreSQL) or pragmas and dbstat (SQLite), so `data_table_statements`
must be 0 (EXPLAIN plans a statement, it does not run it).
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import time

import frappe

from benchmarks import connect_site
from verenigingen_perf.utils.performance import statements
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.database import collectors, snapshot
from verenigingen_perf.utils.performance.schema import DATABASE_SNAPSHOT, METRIC

PREFIX = "vperf_bench_db_"
ROW_PREFIX = "vperf-bench-db-"
# what the collectors may read: catalogues, counters, plans
_CATALOGUE = re.compile(
	r"^\s*(explain|show|pragma)\b|information_schema|performance_schema|innodb_index_stats|dbstat|sqlite_master"
	r"|sqlite_version"
	# PostgreSQL: statistics views and catalogues, the generic plan's statements and its savepoint
	r"|\bpg_(stat_\w+|class|index|attribute|stats|settings|extension|database|backend_pid|postmaster_start_time)\b"
	r"|^\s*(prepare|deallocate|set local|reset|savepoint|release savepoint|rollback to savepoint)\b",
	re.I,
)


def plant_tables(count: int) -> None:
	for i in range(count):
		table = f"{PREFIX}{i:03d}"
		frappe.db.sql(
			f"create table if not exists {table} (id integer primary key, code varchar(20), n integer)"
		)
		frappe.db.sql(f"create index if not exists {table}_code on {table} (code)")
		frappe.db.sql(f"delete from {table}")
		frappe.db.sql(f"insert into {table} (id, code, n) values (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)")
		frappe.db.commit()


def top_up_details(rows: int) -> int:
	have = frappe.db.sql(f"select count(*) from `tab{METRIC}`")[0][0]
	missing = max(rows - have, 0)
	if missing:
		columns = """name, creation, modified, owner, modified_by, operation, operation_type, started_at,
			duration_ms, query_count, status"""
		frappe.db.multisql(
			{
				"mariadb": f"""insert into `tab{METRIC}` ({columns})
					select concat('{ROW_PREFIX}', seq), now(), now(), 'Administrator', 'Administrator',
					concat('/api/method/bench.op', mod(seq, 50)), 'api', now(), mod(seq, 997), mod(seq, 31), 'ok'
					from seq_1_to_{missing}""",
				"postgres": f"""insert into `tab{METRIC}` ({columns})
					select '{ROW_PREFIX}' || n, now(), now(), 'Administrator', 'Administrator',
					'/api/method/bench.op' || mod(n, 50), 'api', now(), mod(n, 997), mod(n, 31), 'ok'
					from generate_series(1, {missing}) as n""",
				"sqlite": f"""insert into `tab{METRIC}` ({columns})
					with recursive s(n) as (select 1 union all select n + 1 from s where n < {missing})
					select '{ROW_PREFIX}' || n, datetime('now'), datetime('now'), 'Administrator', 'Administrator',
					'/api/method/bench.op' || (n - 50 * (n / 50)), 'api', datetime('now'), n - 997 * (n / 997),
					n - 31 * (n / 31), 'ok' from s""",
			}
		)
		frappe.db.commit()
	return missing


def remove(tables: int, added: int) -> None:
	for i in range(tables):
		frappe.db.sql(f"drop table if exists {PREFIX}{i:03d}")
	if added:
		frappe.db.sql(f"delete from `tab{METRIC}` where name like %s", (ROW_PREFIX + "%",))
	frappe.db.commit()


def main() -> None:
	parser = argparse.ArgumentParser(
		description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
	)
	parser.add_argument("--db", default="mariadb", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--tables", type=int, default=200)
	parser.add_argument("--rows", type=int, default=1_000_000)
	parser.add_argument("--keep", action="store_true")
	args = parser.parse_args()
	connect_site(args.db)
	started = time.monotonic()
	plant_tables(args.tables)
	added = top_up_details(args.rows)
	print(
		f"set-up: {args.tables} tables, {added} detail rows added in {time.monotonic() - started:.1f} s",
		flush=True,
	)
	detail_rows = frappe.db.sql(f"select count(*) from `tab{METRIC}`")[0][0]
	try:
		config = get_config()
		frappe.get_meta(DATABASE_SNAPSHOT)
		with statements.recorded_statements() as recorded:
			started = time.monotonic()
			data = snapshot.take(snapshot.ON_DEMAND, config)
			elapsed = time.monotonic() - started
		frappe.db.commit()
		# the collector alone: every statement it runs reads a catalogue, a counter or a plan
		with statements.recorded_statements() as collected:
			collectors.collector()(config.database, None)
		reading = [q for q, _s in collected if not _CATALOGUE.search(q)]
		for query in reading:
			print("reads data:", statements.statement_shape(query)[:200])
		by_kind: dict[str, int] = {}
		for query, _seconds in recorded:
			word = query.split(None, 1)[0].lower()
			by_kind[word] = by_kind.get(word, 0) + 1
		print(
			json.dumps(
				{
					"db": args.db,
					"tables": len(data["tables"]),
					"detail_rows": detail_rows,
					"snapshot_s": round(elapsed, 3),
					"sample_s": data.get("cache", {}).get("interval_s") if args.db != "sqlite" else None,
					"snapshot_s_without_sample": round(
						elapsed - ((data.get("cache") or {}).get("first_reading") or {}).get("interval_s", 0),
						3,
					),
					"snapshot_statements": len(recorded),
					"statements_by_kind": by_kind,
					"collector_statements": len(collected),
					"data_table_statements": len(reading),
					"statement_shapes": len(data["statements"]),
					"indexes": len(data["indexes"]),
					"recommendations": len(data["recommendations"]),
				}
			)
		)
	finally:
		frappe.db.rollback()
		frappe.db.delete(DATABASE_SNAPSHOT, {"name": data["name"]}) if "data" in locals() else None
		frappe.db.commit()
		if not args.keep:
			remove(args.tables, added)


if __name__ == "__main__":
	main()
