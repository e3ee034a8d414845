"""Hourly and daily aggregates of Performance Metric.

The rollup advances a watermark over *ingestion time* (a detail row's `creation`, stamped by the
drain) by whole hours, up to now minus the configured delay. Each fold (one or more complete hours of
ingestion, holding at most `rollup_fold_rows` rows unless one hour alone holds more) is merged, in one
transaction with the watermark's move, into the aggregates of the hours (and days) in which its rows
*started*. A row that arrives late, for an hour already aggregated, is therefore folded
into that hour's aggregate (merged, never overwritten), and every row is folded exactly once:

	aggregated count + detail rows created at or after the watermark == rows ingested.

An hour of ingestion is only folded when no drain still holds a batch it claimed before that hour's
end (the drain stamps `creation` after claiming and releases its claim after committing), so no row
can commit behind the watermark. A Redis lock keeps two workers apart; the watermark moves with a
compare-and-set, so even without the lock an hour is never folded twice. Without Redis (no lock, no
drain claims to read) the rollup still runs, degraded and saying so: it only folds hours that ended
longer ago than a drain may hold a claim.

Rows are grouped by the exact bytes of their operation name, never by the database's collation
(which may equate "cafe" and "café"), so no name a visitor can send can make two figures disagree.
At most `max_operations_per_hour` distinct operations are kept per hour: the rest of that hour's
measurements are merged into `(other operations)`.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import frappe
import redis

from verenigingen_perf.utils.performance import buffer, job_reports, redis_store
from verenigingen_perf.utils.performance.bulk import BulkWrite, Kind
from verenigingen_perf.utils.performance.config import PerformanceConfig, get_config
from verenigingen_perf.utils.performance.page_totals import BucketTotals, PageRow
from verenigingen_perf.utils.performance.schema import (
	AGGREGATE,
	ALL_OPERATIONS,
	METRIC,
	OVERFLOW_OPERATION,
	ROLLUP_STATE,
)
from verenigingen_perf.utils.performance.sketch import Summary
from verenigingen_perf.utils.performance.timeutil import (
	as_datetime,
	floor_day,
	floor_hour,
	format_datetime,
	from_epoch,
)

HOUR = timedelta(hours=1)
# hooks.py's wiring: functions given every fold's hourly summaries (by type, operation and started
# hour; the site-wide rows left out) and the configuration, inside the fold's transaction; each
# returns the rows it wrote. The rollup knows none of them (the exposition's counters are one)
ROLLUP_SINKS_HOOK = "vperf_rollup_sinks"
AGGREGATE_COLUMNS = (
	"operation",
	"operation_type",
	"granularity",
	"period_start",
	"count",
	"error_count",
	"client_error_count",
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
# how the bulk upsert unpacks each column; every other one is a float
_NOT_FLOAT: dict[str, Kind] = {
	**dict.fromkeys(("operation", "operation_type", "granularity"), "text"),
	"period_start": "datetime",
	**dict.fromkeys(("count", "error_count", "client_error_count", "query_sum", "query_max"), "integer"),
	"sketch": "long text",
}
_AGGREGATE_KINDS: dict[str, Kind] = {column: _NOT_FLOAT.get(column, "float") for column in AGGREGATE_COLUMNS}
# (operation type, operation, period start): what one aggregate row summarises
BucketKey = tuple[str, str, datetime]


@dataclass
class RollupReport:
	status: str = "ok"
	rows_aggregated: int = 0
	# ingested hours the watermark moved over (empty ones between folds are skipped, not counted)
	hours_folded: int = 0
	# transactions: each folds one or more whole hours (at most `rollup_fold_rows` rows, or one hour)
	folds: int = 0
	buckets_written: int = 0
	late_rows: int = 0
	operations_over_cap: int = 0
	watermark: str | None = None
	waiting_for_drain: bool = False
	duration_s: float = 0.0
	peak_buckets_in_memory: int = 0
	# rows the fold sinks wrote (the exposition's counters)
	sink_rows_written: int = 0
	errors: list[str] = field(default_factory=list)


def aggregate_name(granularity: str, period_start: datetime, operation_type: str, operation: str) -> str:
	"""Deterministic, so the primary key makes (type, operation, granularity, period start) unique."""
	digest = hashlib.sha1(f"{operation_type}\x1f{operation}".encode()).hexdigest()[:16]
	return f"{granularity}-{period_start:%Y%m%d%H}-{digest}"


# --- watermark ------------------------------------------------------------------------------------


def get_watermark() -> datetime | None:
	value = frappe.db.sql(
		"select value from `tabSingles` where doctype=%s and field='watermark'", (ROLLUP_STATE,)
	)
	return as_datetime(value[0][0]) if value and value[0][0] else None


def ensure_state_row() -> None:
	"""The watermark row exists from install on, so every later move is a compare-and-set UPDATE."""
	if not frappe.db.sql(
		"select 1 from `tabSingles` where doctype=%s and field='watermark'", (ROLLUP_STATE,)
	):
		frappe.db.sql(
			"insert into `tabSingles` (doctype, field, value) values (%s, 'watermark', NULL)",
			(ROLLUP_STATE,),
		)


_LOCKED_WATERMARK_SQL = {
	# a locking read returns the latest committed value and holds the row until this transaction
	# ends; SQLite has no row locks: a write takes its one writer's lock (and a transaction whose
	# snapshot went stale meanwhile is refused), so the second fold of an hour waits, then sees the
	# moved watermark, or fails; it never counts twice
	"mariadb": "select value from `tabSingles` where doctype=%s and field='watermark' for update",
	"postgres": "select value from `tabSingles` where doctype=%s and field='watermark' for update",
	"sqlite": "update `tabSingles` set value=value where doctype=%s and field='watermark' returning value",
}


def claim_watermark(expected: datetime | None) -> bool:
	"""Lock the watermark row for this transaction and check it still is `expected`: False means
	another run moved it since this one read it (then nothing may be folded)."""
	ensure_state_row()
	value = frappe.db.multisql(_LOCKED_WATERMARK_SQL, (ROLLUP_STATE,))
	current = as_datetime(value[0][0]) if value and value[0][0] else None
	return current == expected


def set_watermark(new: datetime) -> None:
	"""Move the watermark, inside the caller's transaction (after `claim_watermark`)."""
	frappe.db.sql(
		"update `tabSingles` set value=%s where doctype=%s and field='watermark'",
		(format_datetime(new), ROLLUP_STATE),
	)


def move_watermark(old: datetime | None, new: datetime) -> bool:
	"""Compare-and-set, inside the caller's transaction. False: someone else moved it first."""
	if not claim_watermark(old):
		return False
	set_watermark(new)
	return True


# --- the job --------------------------------------------------------------------------------------


def rollup_job() -> dict[str, Any]:
	"""Scheduled every ten minutes (hooks.py). A failure is recorded in the job's report (with its reason) and raised."""
	return job_reports.run_and_record(
		"rollup", run_rollup, lambda errors: RollupReport(status="failed", errors=errors)
	)


def run_rollup(
	now: datetime | None = None, on_hour: Callable[[datetime], None] | None = None
) -> RollupReport:
	"""Fold every complete ingested hour; `on_hour` is told the last hour of each fold (a progress bar)."""
	started = time.monotonic()
	report = RollupReport()
	config = get_config()
	retention, monitoring = config.retention, config.monitoring
	with redis_store.exclusive("rollup", retention.job_lock_timeout_s) as acquired:
		if acquired is False:
			report.status = "skipped: another rollup is running"
			return report
		now = now or frappe.utils.now_datetime()
		limit = now - timedelta(minutes=retention.aggregation_delay_minutes)
		degraded = acquired is None
		while (hour := _next_ingested_hour(watermark := get_watermark())) is not None:
			end = hour + HOUR
			oldest_claim = None
			if not degraded:
				try:
					oldest_claim = _oldest_drain_claim()
				except redis.exceptions.RedisError:
					degraded = True
			if oldest_claim is not None and oldest_claim < end:
				report.waiting_for_drain = True
				break
			if degraded:
				report.status = (
					"degraded: Redis unreachable (no lock, drain claims unknown); only hours that ended "
					f"more than drain_claim_timeout_s ({monitoring.drain_claim_timeout_s} s) ago are folded"
				)
				limit = min(limit, now - timedelta(seconds=monitoring.drain_claim_timeout_s))
			if end > limit:
				break
			if time.monotonic() - started > retention.rollup_run_budget_s:
				report.status = "stopped: rollup_run_budget_s reached; the next run goes on"
				break
			furthest = floor_hour(min(limit, oldest_claim) if oldest_claim is not None else limit)
			end = _fold_end(hour, furthest, retention.rollup_fold_rows)
			if not _fold(watermark, hour, end, config, report):
				report.status = "stopped: the watermark moved under this run"
				break
			if on_hour is not None:
				on_hour(end - HOUR)
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
	return floor_hour(as_datetime(first[0][0])) if first and first[0][0] else None


def _oldest_drain_claim() -> datetime | None:
	"""When the oldest batch a drain has claimed and not yet committed and released was claimed: no
	hour ending after it may be folded yet (its rows may still commit with a creation before it)."""
	claims = buffer.redis_client().hvals(buffer.claims_key())
	return from_epoch(min(float(claimed_at) for claimed_at in claims)) if claims else None


def _fold_end(start: datetime, furthest: datetime, max_rows: int) -> datetime:
	"""Where a fold from `start` ends: whole ingested hours, up to `furthest`, holding at most
	`max_rows` detail rows, and at least the one hour from `start`.

	One transaction then folds a backlog of many hours, and each day's aggregates are read, merged
	and written once per fold instead of once per hour; `max_rows` bounds the fold's time and memory."""
	if furthest <= start + HOUR:
		return start + HOUR
	past_the_cap = frappe.db.sql(
		f"""select creation from `tab{METRIC}` where creation >= %s and creation < %s
		order by creation limit 1 offset %s""",
		(format_datetime(start), format_datetime(furthest), max_rows),
	)
	if not past_the_cap:
		return furthest
	# the rows before the hour of the first row past the cap are at most `max_rows`
	return max(start + HOUR, floor_hour(as_datetime(past_the_cap[0][0])))


def _fold(
	watermark: datetime | None,
	start: datetime,
	end: datetime,
	config: PerformanceConfig,
	report: RollupReport,
) -> bool:
	"""Fold the rows ingested in [start, end) (one or more whole hours) into their aggregates; move
	the watermark; commit.

	Every (type, operation, started hour)'s counts, sums, extremes and sketch are added up from pages
	of the rows (bounded memory; `page_totals`): no drain can add a row to an ingestion hour that is
	being folded (see `_oldest_drain_claim`).
	The watermark row is locked first, so a second run folding the same hour waits, then finds the
	watermark moved and folds nothing."""
	if not claim_watermark(watermark):
		frappe.db.rollback()
		return False
	totals = BucketTotals()
	rows = 0
	for page in _pages(start, end, config.retention.aggregation_page_size):
		totals.add_page(page)
		rows += len(page)
	hourly: dict[BucketKey, Summary] = {}
	hours: dict[str, datetime] = {}
	for text, summary in totals.summaries().items():
		operation_type, hour_key, operation = text.split(_SEPARATOR, 2)
		hour = hours.get(hour_key) or hours.setdefault(hour_key, _parse_hour_key(hour_key))
		hourly[(operation_type or None, operation, hour)] = summary
	report.late_rows += sum(s.count for (_type, _op, hour), s in hourly.items() if hour < start)
	by_hour = cap_operations(hourly, _operations_present(hourly), config.monitoring.max_operations_per_hour)
	report.operations_over_cap += len({key[1] for key in hourly} - {key[1] for key in by_hour})
	# what is built on every fold (the exposition's cumulative counters) grows with it, in its
	# transaction: exactly once, and a sink that fails fails the fold
	for sink in frappe.get_hooks(ROLLUP_SINKS_HOOK):
		report.sink_rows_written += frappe.get_attr(sink)(by_hour, config)
	by_hour.update(site_wide_summaries(by_hour))
	daily: defaultdict[BucketKey, Summary] = defaultdict(Summary)
	for (operation_type, operation, hour), summary in by_hour.items():
		daily[(operation_type, operation, floor_day(hour))].merge(summary)
	report.peak_buckets_in_memory = max(report.peak_buckets_in_memory, len(by_hour) + len(daily))
	written = merge_into_aggregates("hour", by_hour) + merge_into_aggregates("day", daily)
	# folding [start, end) also covers the empty hours skipped since the stored watermark
	set_watermark(end)
	frappe.db.commit()
	report.rows_aggregated += rows
	report.hours_folded += round((end - start) / HOUR)
	report.folds += 1
	report.buckets_written += written
	return True


def cap_operations(
	summaries: dict[BucketKey, Summary], present: dict[datetime, set[str]], cap: int
) -> dict[BucketKey, Summary]:
	"""At most `cap` distinct operations per hour: those the hour's aggregates already hold stay;
	new ones are admitted busiest first while there is room; the rest are merged, per type, into
	OVERFLOW_OPERATION (which is not counted against the cap)."""
	traffic: defaultdict[tuple[datetime, str], int] = defaultdict(int)
	for (_type, operation, hour), summary in summaries.items():
		traffic[(hour, operation)] += summary.count
	admitted: dict[datetime, set[str]] = {}
	for hour in {hour for (_type, _op, hour) in summaries}:
		kept = set(present.get(hour, ())) - {OVERFLOW_OPERATION}
		new = sorted(
			(op for (h, op) in traffic if h == hour and op not in kept and op != OVERFLOW_OPERATION),
			key=lambda op: (-traffic[(hour, op)], op),
		)
		admitted[hour] = kept | set(new[: max(0, cap - len(kept))]) | {OVERFLOW_OPERATION}
	capped: defaultdict[BucketKey, Summary] = defaultdict(Summary)
	for (operation_type, operation, hour), summary in summaries.items():
		name = operation if operation in admitted[hour] else OVERFLOW_OPERATION
		capped[(operation_type, name, hour)].merge(summary)
	return dict(capped)


def _operations_present(summaries: dict[BucketKey, Summary]) -> dict[datetime, set[str]]:
	"""The operations the hourly aggregates already hold for the hours these summaries touch."""
	hours = sorted({hour for (_type, _op, hour) in summaries})
	if not hours:
		return {}
	rows = frappe.db.sql(
		f"""select period_start, operation from `tab{AGGREGATE}`
		where granularity = 'hour' and operation != %s
			and period_start in ({", ".join(["%s"] * len(hours))})""",
		(ALL_OPERATIONS, *(format_datetime(hour) for hour in hours)),
	)
	present: defaultdict[datetime, set[str]] = defaultdict(set)
	for period_start, operation in rows:
		present[as_datetime(period_start)].add(operation)
	return present


def site_wide_summaries(summaries: dict[BucketKey, Summary]) -> dict[BucketKey, Summary]:
	"""Per type and period, the merge of the summaries under ALL_OPERATIONS: the dashboard's series
	and windows then read one row per type and period instead of one per operation. (Capture never
	writes a detail row under that name; one written past it is counted in the site-wide row.)"""
	site_wide: defaultdict[BucketKey, Summary] = defaultdict(Summary)
	for (operation_type, _operation, period), summary in summaries.items():
		site_wide[(operation_type, ALL_OPERATIONS, period)].merge(summary)
	return site_wide


def backfill_site_wide(periods_per_transaction: int = 100) -> int:
	"""Site-wide rows for the periods aggregated before the rollup wrote them (a migration patch):
	each merged from the rows of every operation of its type and period. Returns the rows written."""
	written = 0
	for granularity in ("hour", "day"):
		missing = [
			as_datetime(row[0])
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
				(row.operation_type, row.operation, as_datetime(row.period_start)): Summary.from_values(row)
				for row in rows
			}
			written += merge_into_aggregates(granularity, site_wide_summaries(summaries))
			frappe.db.commit()
	return written


def _parse_hour_key(key: str) -> datetime:
	return datetime.strptime(key, "%Y-%m-%d %H")


_INGESTED = "creation >= %(start)s and creation < %(end)s"
# a page row (`page_totals.PageRow`), per backend: the text that names the row's bucket (its type, the
# hour it started in as 'YYYY-MM-DD HH' and its operation, apart by a separator no type or hour holds;
# the operation last, as a name may hold any character), one text instead of three, which Python
# groups by its exact bytes, never by the database's collation; then the duration, the outcome, the
# statements, the database time and the larger of the RSS growth and the allocation peak
_SEPARATOR = "\x1f"
_OUTCOME = "case status when 'error' then 1 when 'client_error' then 2 else 0 end"
_PAGE_SQL = {
	"mariadb": f"""select concat(coalesce(operation_type, ''), char(31 using utf8mb4),
		date_format(started_at, '%%Y-%%m-%%d %%H'), char(31 using utf8mb4), operation), duration_ms,
		{_OUTCOME}, query_count, db_time_ms, greatest(coalesce(rss_growth_kb, 0), coalesce(peak_alloc_kb, 0))
		from `tab{METRIC}` where {_INGESTED}""",
	"sqlite": f"""select coalesce(operation_type, '') || char(31) || substr(started_at, 1, 13) || char(31)
		|| operation, duration_ms, {_OUTCOME}, query_count, db_time_ms,
		max(coalesce(rss_growth_kb, 0), coalesce(peak_alloc_kb, 0))
		from `tab{METRIC}` where {_INGESTED}""",
	"postgres": f"""select coalesce(operation_type, '') || chr(31) || to_char(started_at, 'YYYY-MM-DD HH24')
		|| chr(31) || operation, duration_ms, {_OUTCOME}, query_count, db_time_ms,
		greatest(coalesce(rss_growth_kb, 0), coalesce(peak_alloc_kb, 0))
		from `tab{METRIC}` where {_INGESTED}""",
}
# the creation time comes back as text, so the driver does not convert it and it is passed back as it
# is stored
_AS_TEXT = {"mariadb": "char", "sqlite": "text", "postgres": "text"}
_PAGE_END_SQL = {
	dialect: f"""select cast(creation as {text}) from `tab{METRIC}` where {_INGESTED}
		order by creation limit 1 offset %(page_size)s"""
	for dialect, text in _AS_TEXT.items()
}
_NEXT_CREATION_SQL = {
	dialect: f"""select cast(min(creation) as {text}) from `tab{METRIC}`
		where creation > %(start)s and creation < %(end)s"""
	for dialect, text in _AS_TEXT.items()
}


def _pages(start: datetime, end: datetime, page_size: int) -> Iterator[list[PageRow]]:
	"""Pages of the rows ingested in [start, end) (`page_totals.PageRow`): bounded memory.

	Each page is the rows of a range of creation times: those before the creation of the row
	`page_size` places on, or, where more rows than that share one creation (a drain stamps its whole
	batch with one), that creation's rows: at most max(page_size, drain_batch_size) rows. No page
	sorts its rows or sends their keyset columns; the range's end is found on the creation index."""
	after, last = format_datetime(start), format_datetime(end)
	while after is not None:
		bound = frappe.db.multisql(_PAGE_END_SQL, {"start": after, "end": last, "page_size": page_size})
		until = bound[0][0] if bound else last
		if until == after:
			following = frappe.db.multisql(_NEXT_CREATION_SQL, {"start": after, "end": last})
			until = following[0][0] if following and following[0][0] else last
		page = frappe.db.multisql(_PAGE_SQL, {"start": after, "end": until})
		if page:
			yield page
		after = until if until != last else None


def merge_into_aggregates(granularity: str, summaries: dict[BucketKey, Summary]) -> int:
	"""Merge the new summaries into the stored aggregates (or create them), in one upsert."""
	if not summaries:
		return 0
	by_name = {
		aggregate_name(granularity, period, operation_type, op): (operation_type, op, period, s)
		for (operation_type, op, period), s in summaries.items()
	}
	existing = _existing_aggregates(list(by_name))
	now = frappe.utils.now()
	rows = []
	for name, (operation_type, operation, period, summary) in by_name.items():
		if name in existing:
			merged = Summary.from_values(existing[name])
			merged.merge(summary)
			summary = merged
		values = {
			"operation": operation,
			"operation_type": operation_type,
			"granularity": granularity,
			"period_start": format_datetime(period),
			**summary.as_values(),
		}
		rows.append((name, now, *(values[c] for c in AGGREGATE_COLUMNS)))
	_AGGREGATE_ROWS.write(rows)
	return len(rows)


def _existing_aggregates(names: list[str]) -> dict[str, dict[str, Any]]:
	"""The stored rows of these names (one statement per thousand names)."""
	columns = ", ".join(f"`{c}`" for c in ("name", *AGGREGATE_COLUMNS))
	existing = {}
	for start in range(0, len(names), _READ_CHUNK):
		chunk = names[start : start + _READ_CHUNK]
		rows = frappe.db.sql(
			f"select {columns} from `tab{AGGREGATE}` where name in ({', '.join(['%s'] * len(chunk))})",
			chunk,
			as_dict=True,
		)
		existing.update({row["name"]: row for row in rows})
	return existing


# names per read: keeps a statement's parameters well inside SQLite's limit
_READ_CHUNK = 1000
# one statement per bucket, not one per aggregate; an aggregate already stored gets the merged
# figures (its creation and owner stay as first written)
_AGGREGATE_ROWS = BulkWrite(
	AGGREGATE,
	tuple((column, _AGGREGATE_KINDS[column]) for column in AGGREGATE_COLUMNS),
	update=AGGREGATE_COLUMNS,
)
