"""Hourly and daily aggregates of Performance Metric.

The rollup advances a watermark over *ingestion time* (a detail row's `creation`, stamped by the
drain), one complete hour at a time, up to now minus the configured delay. Each hour of ingestion is
folded, in one transaction with the watermark's move, into the aggregates of the hours (and days) in
which its rows *started*. A row that arrives late, for an hour already aggregated, is therefore folded
into that hour's aggregate (merged, never overwritten), and every row is folded exactly once:

	aggregated count + detail rows created at or after the watermark == rows ingested.

An hour of ingestion is only folded when no drain still holds a batch it claimed before that hour's
end (the drain stamps `creation` after claiming and releases its claim after committing), so no row
can commit behind the watermark. A Redis lock keeps two workers apart; the watermark moves with a
compare-and-set, so even without the lock an hour is never folded twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import frappe

from verenigingen_perf.utils.performance import buffer
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.schema import ALL_OPERATIONS
from verenigingen_perf.utils.performance.sketch import Summary

METRIC = "Performance Metric"
AGGREGATE = "Performance Aggregate"
STATE = "Performance Rollup State"
HOUR = timedelta(hours=1)
AGGREGATE_COLUMNS = (
	"operation",
	"granularity",
	"period_start",
	"count",
	"error_count",
	"p50_ms",
	"p90_ms",
	"p95_ms",
	"p99_ms",
	"duration_min_ms",
	"duration_max_ms",
	"duration_mean_ms",
	"duration_sum_ms",
	"query_sum",
	"query_mean",
	"query_max",
	"db_time_sum_ms",
	"memory_max_mb",
	"sketch",
)


@dataclass
class RollupReport:
	status: str = "ok"
	rows_aggregated: int = 0
	hours_folded: int = 0
	buckets_written: int = 0
	late_rows: int = 0
	watermark: str | None = None
	waiting_for_drain: bool = False
	duration_s: float = 0.0
	peak_buckets_in_memory: int = 0
	errors: list[str] = field(default_factory=list)


def aggregate_name(granularity: str, period_start: datetime, operation: str) -> str:
	"""Deterministic, so the primary key makes (operation, granularity, period start) unique."""
	digest = hashlib.sha1(operation.encode()).hexdigest()[:16]
	return f"{granularity}-{period_start:%Y%m%d%H}-{digest}"


def floor_hour(moment: datetime) -> datetime:
	return moment.replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
	return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _as_datetime(value: Any) -> datetime:
	return value if isinstance(value, datetime) else frappe.utils.get_datetime(value)


# --- watermark ------------------------------------------------------------------------------------


def get_watermark() -> datetime | None:
	value = frappe.db.sql("select value from `tabSingles` where doctype=%s and field='watermark'", (STATE,))
	return _as_datetime(value[0][0]) if value and value[0][0] else None


def format_datetime(moment: datetime) -> str:
	"""How a datetime is written to and compared in the database: naive, microseconds."""
	return moment.isoformat(sep=" ", timespec="microseconds")


def ensure_state_row() -> None:
	"""The watermark row exists from install on, so every later move is a compare-and-set UPDATE."""
	if not frappe.db.sql("select 1 from `tabSingles` where doctype=%s and field='watermark'", (STATE,)):
		frappe.db.sql(
			"insert into `tabSingles` (doctype, field, value) values (%s, 'watermark', NULL)", (STATE,)
		)


def _move_watermark(old: datetime | None, new: datetime) -> bool:
	"""Compare-and-set, inside the caller's transaction. False: someone else moved it first."""
	ensure_state_row()
	if old is None:
		frappe.db.sql(
			"update `tabSingles` set value=%s where doctype=%s and field='watermark' and (value is null or value='')",
			(format_datetime(new), STATE),
		)
	else:
		frappe.db.sql(
			"update `tabSingles` set value=%s where doctype=%s and field='watermark' and value=%s",
			(format_datetime(new), STATE, format_datetime(old)),
		)
	return frappe.db._cursor.rowcount == 1


def record_report(field_name: str, report: dict[str, Any]) -> None:
	"""Persist a job's report on Performance Rollup State (and for meta-monitoring in Redis)."""
	payload = json.dumps(report, default=str)
	frappe.db.sql("delete from `tabSingles` where doctype=%s and field=%s", (STATE, field_name))
	frappe.db.sql(
		"insert into `tabSingles` (doctype, field, value) values (%s, %s, %s)", (STATE, field_name, payload)
	)
	frappe.db.commit()
	buffer.record_job_report(field_name, report)


# --- the job --------------------------------------------------------------------------------------


def rollup_job() -> dict[str, Any]:
	"""Scheduled hourly."""
	report = run_rollup()
	record_report("last_rollup", asdict(report))
	return asdict(report)


def run_rollup(now: datetime | None = None) -> RollupReport:
	started = time.monotonic()
	report = RollupReport()
	retention = get_config().retention
	with buffer.exclusive("rollup", retention.job_lock_timeout_s) as acquired:
		if not acquired:
			report.status = "skipped: another rollup is running"
			return report
		now = now or frappe.utils.now_datetime()
		limit = now - timedelta(minutes=retention.aggregation_delay_minutes)
		while (hour := _next_ingested_hour(watermark := get_watermark())) is not None:
			end = hour + HOUR
			if end > limit:
				break
			if _drain_holds_rows_before(end):
				report.waiting_for_drain = True
				break
			if not _fold_hour(watermark, hour, end, retention.aggregation_page_size, report):
				report.status = "stopped: the watermark moved under this run"
				break
		watermark = get_watermark()
		report.watermark = format_datetime(watermark) if watermark else None
	report.duration_s = round(time.monotonic() - started, 3)
	return report


def _next_ingested_hour(watermark: datetime | None) -> datetime | None:
	"""The first hour, at or after the watermark, in which any detail row was ingested.

	Hours with nothing ingested are skipped; the drain-claim check keeps that safe."""
	if watermark is None:
		first = frappe.db.sql(f"select min(creation) from `tab{METRIC}`")
	else:
		first = frappe.db.sql(
			f"select min(creation) from `tab{METRIC}` where creation >= %s", (format_datetime(watermark),)
		)
	return floor_hour(_as_datetime(first[0][0])) if first and first[0][0] else None


def _drain_holds_rows_before(end: datetime) -> bool:
	"""True while a drain that claimed a batch before `end` has not committed and released it."""
	client = buffer.redis_client()
	end_epoch = end.replace(tzinfo=ZoneInfo(frappe.utils.get_system_timezone())).timestamp()
	return any(float(claimed_at) < end_epoch for claimed_at in client.hvals(buffer.claims_key()))


def _fold_hour(
	watermark: datetime | None, start: datetime, end: datetime, page_size: int, report: RollupReport
) -> bool:
	"""Fold the rows ingested in [start, end) into their aggregates; move the watermark; commit.

	Counts, sums and extremes per (operation, started hour) come from one GROUP BY; the durations
	for the sketches are streamed in pages (bounded memory). Both read the same rows: no drain can
	add a row to an ingestion hour that is being folded (see `_drain_holds_rows_before`)."""
	hourly: dict[tuple[str, str], Summary] = {}
	for row in _group_totals(start, end):
		operation, hour_key = row[0], row[1]
		hourly[(operation, hour_key)] = Summary(
			count=int(row[2]),
			error_count=int(row[3] or 0),
			duration_min_ms=float(row[4] or 0),
			duration_max_ms=float(row[5] or 0),
			duration_sum_ms=float(row[6] or 0),
			query_sum=int(row[7] or 0),
			query_max=int(row[8] or 0),
			db_time_sum_ms=float(row[9] or 0),
			memory_max_mb=operation_memory_mb(row[10], row[11]),
		)
	start_key = _hour_key_of(start)
	report.late_rows += sum(s.count for (_op, key), s in hourly.items() if key < start_key)
	rows = 0
	for page in _stream_durations(start, end, page_size):
		groups: dict[tuple[str, str], list[float]] = {}
		for operation, hour_key, duration, _creation, _name in page:
			group = groups.get((operation, hour_key))
			if group is None:
				group = groups[(operation, hour_key)] = []
			group.append(float(duration or 0))
		for key, durations in groups.items():
			hourly[key].add_durations(durations)
		rows += len(page)
	by_hour = {(op, _parse_hour_key(key)): summary for (op, key), summary in hourly.items()}
	by_hour.update(site_wide_summaries(by_hour))
	daily: defaultdict[tuple[str, datetime], Summary] = defaultdict(Summary)
	for (operation, hour), summary in by_hour.items():
		daily[(operation, floor_day(hour))].merge(summary)
	report.peak_buckets_in_memory = max(report.peak_buckets_in_memory, len(by_hour) + len(daily))
	written = _merge_into_aggregates("hour", by_hour) + _merge_into_aggregates("day", daily)
	# folding [start, end) also covers the empty hours skipped since the stored watermark
	if not _move_watermark(watermark, end):
		frappe.db.rollback()
		return False
	frappe.db.commit()
	report.rows_aggregated += rows
	report.hours_folded += 1
	report.buckets_written += written
	return True


def operation_memory_mb(rss_growth_kb: float | None, peak_alloc_kb: float | None) -> float:
	"""The memory one run of an operation took: its peak Python allocation where that is captured,
	else how much it raised its worker's peak RSS (the larger, where both are there).

	Not the worker's RSS itself: a worker holds the framework whatever the operation, so its RSS says
	nothing about one operation and would fail per-operation thresholds on every site."""
	return max(float(rss_growth_kb or 0), float(peak_alloc_kb or 0)) / 1024


def site_wide_summaries(
	summaries: dict[tuple[str, datetime], Summary],
) -> dict[tuple[str, datetime], Summary]:
	"""Per period, the merge of the summaries under ALL_OPERATIONS: the dashboard's series and
	windows then read one row per period instead of one per operation. (Capture never writes a
	detail row under that name; one written past it is counted in the site-wide row, not lost.)"""
	site_wide: defaultdict[tuple[str, datetime], Summary] = defaultdict(Summary)
	for (_operation, period), summary in summaries.items():
		site_wide[(ALL_OPERATIONS, period)].merge(summary)
	return site_wide


def backfill_site_wide(periods_per_transaction: int = 100) -> int:
	"""Site-wide rows for the periods aggregated before the rollup wrote them (a migration patch):
	each merged from the rows of every operation of its period. Returns the rows written."""
	written = 0
	for granularity in ("hour", "day"):
		missing = [
			_as_datetime(row[0])
			for row in frappe.db.sql(
				f"""select distinct period_start from `tab{AGGREGATE}`
				where granularity = %(granularity)s and operation != %(all)s and period_start not in (
					select period_start from `tab{AGGREGATE}`
					where granularity = %(granularity)s and operation = %(all)s)""",
				{"granularity": granularity, "all": ALL_OPERATIONS},
			)
		]
		for first in range(0, len(missing), periods_per_transaction):
			chunk = missing[first : first + periods_per_transaction]
			rows = frappe.get_all(
				AGGREGATE,
				filters={
					"granularity": granularity,
					"operation": ("!=", ALL_OPERATIONS),
					"period_start": ("in", [format_datetime(period) for period in chunk]),
				},
				fields=list(AGGREGATE_COLUMNS),
				limit=0,
			)
			summaries = {
				(row.operation, _as_datetime(row.period_start)): Summary.from_values(row) for row in rows
			}
			written += _merge_into_aggregates(granularity, site_wide_summaries(summaries))
			frappe.db.commit()
	return written


def _hour_key_sql(column: str) -> str:
	"""SQL for a datetime column's hour as text ('YYYY-MM-DD HH'): grouping by it in the database
	spares converting every row's datetime in Python."""
	if frappe.db.db_type == "mariadb":
		return f"date_format(`{column}`, '%%Y-%%m-%%d %%H')"
	if frappe.db.db_type == "postgres":
		return f"to_char(\"{column}\", 'YYYY-MM-DD HH24')"
	return f"substr(`{column}`, 1, 13)"


def _text_sql(column: str) -> str:
	"""SQL for a datetime column as text, so the driver does not convert it."""
	if frappe.db.db_type == "mariadb":
		return f"cast(`{column}` as char)"
	if frappe.db.db_type == "postgres":
		return f'cast("{column}" as text)'
	return f"cast(`{column}` as text)"


def _hour_key_of(moment: datetime) -> str:
	return f"{moment:%Y-%m-%d %H}"


def _parse_hour_key(key: str) -> datetime:
	return datetime.strptime(key, "%Y-%m-%d %H")


def _group_totals(start: datetime, end: datetime) -> list[tuple]:
	"""Count, errors, duration min/max/sum, statements sum/max, DB time and the largest RSS growth
	and Python allocation peak per (operation, hour)."""
	return frappe.db.sql(
		f"""select operation, {_hour_key_sql("started_at")} as hour_key, count(*),
			sum(case when status = 'error' then 1 else 0 end), min(duration_ms), max(duration_ms),
			sum(duration_ms), sum(query_count), max(query_count), sum(db_time_ms), max(rss_growth_kb),
			max(peak_alloc_kb)
		from `tab{METRIC}`
		where creation >= %(start)s and creation < %(end)s
		group by operation, hour_key""",
		{"start": format_datetime(start), "end": format_datetime(end)},
	)


def _stream_durations(start: datetime, end: datetime, page_size: int):
	"""Pages of (operation, hour, duration) of the rows ingested in [start, end), keyset on
	(creation, name): bounded memory."""
	after_creation, after_name = format_datetime(start), ""
	while True:
		page = frappe.db.sql(
			f"""select operation, {_hour_key_sql("started_at")}, duration_ms, {_text_sql("creation")}, name
			from `tab{METRIC}`
			where creation >= %(start)s and creation < %(end)s
				and (creation > %(after_creation)s or (creation = %(after_creation)s and name > %(after_name)s))
			order by creation, name
			limit %(page_size)s""",
			{
				"start": format_datetime(start),
				"end": format_datetime(end),
				"after_creation": after_creation,
				"after_name": after_name,
				"page_size": page_size,
			},
		)
		if page:
			yield page
		if len(page) < page_size:
			return
		after_creation, after_name = page[-1][3], page[-1][4]


def _merge_into_aggregates(granularity: str, summaries: dict[tuple[str, datetime], Summary]) -> int:
	"""Merge the new summaries into the stored aggregates (or create them), in one upsert."""
	if not summaries:
		return 0
	by_name = {
		aggregate_name(granularity, period, op): (op, period, s) for (op, period), s in summaries.items()
	}
	existing = {
		row.name: row
		for row in frappe.get_all(
			AGGREGATE, filters={"name": ("in", list(by_name))}, fields=["name", *AGGREGATE_COLUMNS], limit=0
		)
	}
	now = frappe.utils.now()
	rows = []
	for name, (operation, period, summary) in by_name.items():
		created = now
		if name in existing:
			merged = Summary.from_values(existing[name])
			merged.merge(summary)
			summary = merged
		values = {
			"operation": operation,
			"granularity": granularity,
			"period_start": format_datetime(period),
			**summary.as_values(),
		}
		rows.append(
			(name, created, now, "Administrator", "Administrator", 0, *(values[c] for c in AGGREGATE_COLUMNS))
		)
	_upsert(rows)
	return len(rows)


_UPSERT_COLUMNS = ("name", "creation", "modified", "owner", "modified_by", "docstatus", *AGGREGATE_COLUMNS)
# columns an upsert refreshes on an existing row (creation and owner stay as first written)
_REFRESHED = ("modified", *AGGREGATE_COLUMNS)


def _upsert(rows: list[tuple]) -> None:
	"""One multi-row INSERT that updates rows already present (MariaDB ON DUPLICATE KEY UPDATE;
	SQLite and PostgreSQL ON CONFLICT): one statement per bucket instead of one per aggregate."""
	columns = ", ".join(f"`{c}`" for c in _UPSERT_COLUMNS)
	placeholder = "(" + ", ".join(["%s"] * len(_UPSERT_COLUMNS)) + ")"
	if frappe.db.db_type == "mariadb":
		update = "on duplicate key update " + ", ".join(f"`{c}`=values(`{c}`)" for c in _REFRESHED)
	else:
		update = "on conflict (name) do update set " + ", ".join(f"`{c}`=excluded.`{c}`" for c in _REFRESHED)
	for start in range(0, len(rows), _UPSERT_CHUNK):
		chunk = rows[start : start + _UPSERT_CHUNK]
		frappe.db.sql(
			f"insert into `tab{AGGREGATE}` ({columns}) values {', '.join([placeholder] * len(chunk))} {update}",
			[value for row in chunk for value in row],
		)


# rows per upsert: 25 parameters a row stays under SQLite's 32,766-variable limit
_UPSERT_CHUNK = 1000
