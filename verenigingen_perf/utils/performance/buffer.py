"""The measurement buffer: an in-process queue, a bounded Redis list, and the drain into the database.

- `add()` (request path): appends the finished measurement to a bounded in-process queue. Nothing else.
- A daemon thread per process (`flush()` on demand) cleans and encodes queued entries and pushes them
  to a Redis list through Frappe's cache connection, in one round trip per batch, never past
  `buffer_max_entries`; what does not fit, cannot be encoded, or cannot be sent because Redis is
  unreachable is dropped and counted. The thread survives any entry and any error (each is logged).
- `drain()` (scheduled every minute) claims batches atomically (moved to a per-claim list, recorded
  with a timestamp), bulk-inserts them with their span ids as row names, commits, then releases the
  claim. A drain that dies leaves its claim behind; the next drain takes over claims older than
  `drain_claim_timeout_s` and inserts them again, duplicates ignored by name: every measurement
  lands exactly once, also with two drains at the same time.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import frappe
import orjson
import redis

from verenigingen_perf.utils.performance import internal_errors, job_reports, operations
from verenigingen_perf.utils.performance.bulk import BulkWrite, Kind
from verenigingen_perf.utils.performance.config import MonitoringConfig, PerformanceConfig, get_config
from verenigingen_perf.utils.performance.redis_store import key as _key
from verenigingen_perf.utils.performance.redis_store import redis_client
from verenigingen_perf.utils.performance.schema import (
	API,
	CLIENT_ERROR,
	ERROR,
	METRIC,
	OK,
	OPERATION_TYPES,
	PAGE,
)
from verenigingen_perf.utils.performance.timeutil import format_datetime, from_epoch, system_zone

JOB_META_KEY = "verenigingen_perf_trace"
COLUMNS = (
	"operation",
	"operation_type",
	"started_at",
	"duration_ms",
	"query_count",
	"db_time_ms",
	"peak_rss_mb",
	"rss_growth_kb",
	"peak_alloc_kb",
	"capture_us",
	"status",
	"http_status",
	"user",
	"trace_id",
	"parent_span",
	"error",
	"context",
)
# Performance Metric column sizes (see its doctype), not tunable thresholds
_LIMITS = {"user": 140, "trace_id": 32, "parent_span": 32, "error": 500}
# entries per Redis command: keeps each Lua call well inside Lua's argument limits
_PUSH_CHUNK = 1000
# measurements one process holds before its flusher has sent them (Redis slow or down): a bound on
# its memory, not a threshold; what does not fit is dropped and counted
MAX_QUEUED = 10_000

# KEYS: buffer, dropped counter, flusher statistics; ARGV: room, encoding seconds, entries...
_PUSH = """
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local n = #ARGV - 2
local take = math.min(math.max(room, 0), n)
if take > 0 then redis.call('RPUSH', KEYS[1], unpack(ARGV, 3, take + 2)) end
if n > take then redis.call('INCRBY', KEYS[2], n - take) end
redis.call('HINCRBYFLOAT', KEYS[3], 'seconds', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'entries', n)
return take
"""

_CLAIM = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items == 0 then return items end
redis.call('LTRIM', KEYS[1], #items, -1)
for i = 1, #items, 1000 do
	redis.call('RPUSH', KEYS[2], unpack(items, i, math.min(i + 999, #items)))
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return items
"""

# KEYS: buffer, claim list, claims; ARGV: claim id
_GIVE_BACK = """
local items = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #items, 1, -1 do
	redis.call('LPUSH', KEYS[1], items[i])
end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
return #items
"""

_TAKE_OVER = """
local claimed_at = redis.call('HGET', KEYS[1], ARGV[1])
if not claimed_at or tonumber(claimed_at) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


def buffer_key() -> str:
	return _key("buffer")


def dropped_key() -> str:
	return _key("dropped")


def claims_key() -> str:
	return _key("drain_claims")


def internal_errors_key() -> str:
	return _key("capture_errors")


def unmeasured_key() -> str:
	return _key("unmeasured_requests")


def claim_list_key(claim_id: str) -> str:
	return _key(f"drain_claim:{claim_id}")


def flusher_stats_key() -> str:
	return _key("flusher_stats")


# --- cleaning -------------------------------------------------------------------------------------


def _bounded(value: Any, limit: int) -> Any:
	if value is None:
		return None
	text = value if isinstance(value, str) else str(value)
	return text if len(text) <= limit else text[: limit - 3] + "..."


def _encode_json(value: Any) -> str:
	"""JSON text of any value: keys and values that JSON cannot hold are written as text."""
	try:
		return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
	except (TypeError, orjson.JSONEncodeError):
		return orjson.dumps(_jsonable(value), default=str).decode()


def _jsonable(value: Any, depth: int = 0) -> Any:
	if depth > 20:
		return str(value)
	if isinstance(value, dict):
		return {str(k): _jsonable(v, depth + 1) for k, v in value.items()}
	if isinstance(value, list | tuple | set | frozenset):
		return [_jsonable(v, depth + 1) for v in value]
	if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
		return str(value)
	if value is None or isinstance(value, bool | int | float | str):
		return value
	return str(value)


def context_text(context: Any, max_chars: int) -> str | None:
	"""The context as JSON of at most `max_chars` characters. A context that does not fit is replaced
	by a valid JSON object that says so: {"truncated": true, "chars": N, "preview": "..."}."""
	if not context:
		return None
	text = _encode_json(context)
	if len(text) <= max_chars:
		return text
	preview_chars = max_chars
	while True:
		marked = orjson.dumps(
			{"truncated": True, "chars": len(text), "preview": text[:preview_chars]}
		).decode()
		if len(marked) <= max_chars or preview_chars == 0:
			return marked
		preview_chars = max(0, preview_chars - (len(marked) - max_chars) - 1)


def clean_entry(entry: dict[str, Any], monitoring: MonitoringConfig) -> dict[str, Any]:
	"""Bounded, serialisable: names normalised (see operations.clean_name), oversize text truncated,
	odd values stringified, never an exception for any value a caller passed."""
	clean = dict(entry)
	clean["operation"] = operations.clean_name(clean.get("operation") or "")
	for column, limit in _LIMITS.items():
		clean[column] = _bounded(clean.get(column), limit)
	clean["context"] = context_text(clean.get("context"), monitoring.context_max_chars)
	return clean


# --- in-process queue and flusher -----------------------------------------------------------------


@dataclass
class _Pending:
	"""A finished measurement waiting for the flusher, which cleans and serialises it."""

	key: str
	dropped_key: str
	stats_key: str
	limit: int
	entry: dict[str, Any]
	monitoring: MonitoringConfig
	# the site that measured it and its capture-errors counter: a flush may run for another site
	site: str = ""
	errors_key: str | None = None

	def payload(self) -> bytes:
		return orjson.dumps(clean_entry(self.entry, self.monitoring), default=str)


class _Flusher:
	def __init__(self) -> None:
		self.queue: deque[_Pending] = deque()
		self.lock = threading.Lock()
		self.wake = threading.Event()
		self.interval_s = 0.2
		# each site's flush_interval_ms: the thread flushes as often as the most demanding site served
		# by this process asks (one site's long interval must not hold back another's measurements)
		self.interval_s_by_site: dict[str, float] = {}
		self.interval_lock = threading.Lock()
		self.thread: threading.Thread | None = None
		self.unreported_drops: dict[str, int] = {}

	def forked(self) -> None:
		"""In a forked child (a web or job worker made from a preloaded parent): the parent's thread
		does not exist here, and its queue and locks are not ours."""
		self.queue = deque()
		self.lock = threading.Lock()
		self.wake = threading.Event()
		self.interval_lock = threading.Lock()
		self.thread = None
		self.unreported_drops = {}

	def add(self, pending: _Pending, interval_ms: int) -> None:
		if len(self.queue) >= MAX_QUEUED:
			self._count_drops(pending.dropped_key, 1)
			return
		self.queue.append(pending)
		seconds = interval_ms / 1000
		if self.interval_s_by_site.get(pending.site) != seconds:
			# rare (a site's first measurement, a changed setting): the request path takes no lock else
			with self.interval_lock:
				self.interval_s_by_site[pending.site] = seconds
				self.interval_s = min(self.interval_s_by_site.values())
		# no os.getpid() here (a system call on every request): a fork resets the thread (`forked`)
		if self.thread is None or not self.thread.is_alive():
			self._start()

	def _start(self) -> None:
		with self.lock:
			if self.thread is not None and self.thread.is_alive():
				return
			self.thread = threading.Thread(target=self._run, name="vperf-buffer-flusher", daemon=True)
			self.thread.start()

	def _run(self) -> None:
		while True:
			try:
				self.wake.wait(self.interval_s)
				self.wake.clear()
				self.flush()
			except Exception as error:
				internal_errors.report("buffer.flusher", error, may_raise=False)
				time.sleep(self.interval_s)

	def flush(self) -> int:
		"""Send everything queued; returns how many entries reached Redis."""
		with self.lock:
			batch = []
			while self.queue:
				batch.append(self.queue.popleft())
			if not batch:
				self._report_drops()
				return 0
			started = time.perf_counter()
			by_key: dict[tuple[str, str, str, int], list[bytes]] = {}
			for item in batch:
				try:
					payload = item.payload()
				except Exception as error:
					# one bad entry costs itself, never the batch or the thread
					self._count_drops(item.dropped_key, 1)
					internal_errors.report(
						"buffer.encode", error, may_raise=False, site=item.site, count_key=item.errors_key
					)
					continue
				by_key.setdefault((item.key, item.dropped_key, item.stats_key, item.limit), []).append(
					payload
				)
			# the worker's CPU the flusher spends per measurement (it shares the worker's GIL)
			encoding_s = (time.perf_counter() - started) / max(len(batch), 1)
			sent = 0
			for (key, drops_key, stats_key, limit), payloads in by_key.items():
				sent += self._push(key, drops_key, stats_key, limit, payloads, encoding_s * len(payloads))
			self._report_drops()
			return sent

	def _push(
		self, key: str, drops_key: str, stats_key: str, limit: int, payloads: list[bytes], encoding_s: float
	) -> int:
		sent = 0
		try:
			script = _push_script()
			for start in range(0, len(payloads), _PUSH_CHUNK):
				chunk = payloads[start : start + _PUSH_CHUNK]
				seconds = encoding_s * len(chunk) / len(payloads)
				sent += int(script(keys=[key, drops_key, stats_key], args=[limit, repr(seconds), *chunk]))
		except redis.exceptions.RedisError:
			self._count_drops(drops_key, len(payloads) - sent)
		return sent

	def _count_drops(self, drops_key: str, count: int) -> None:
		self.unreported_drops[drops_key] = self.unreported_drops.get(drops_key, 0) + count

	def _report_drops(self) -> None:
		for drops_key, count in list(self.unreported_drops.items()):
			try:
				redis_client().incrby(drops_key, count)
			except redis.exceptions.RedisError:
				return
			self.unreported_drops.pop(drops_key, None)


_scripts: dict[int, Any] = {}


def _push_script() -> Any:
	"""The push script registered on the current cache client, once per client (its hash once)."""
	client = redis_client()
	script = _scripts.get(id(client))
	if script is None:
		script = _scripts[id(client)] = client.register_script(_PUSH)
	return script


_flusher = _Flusher()
os.register_at_fork(after_in_child=_flusher.forked)
atexit.register(lambda: _flusher.flush())


def add(entry: dict[str, Any], monitoring: MonitoringConfig) -> None:
	"""Queue a finished measurement (request path: no I/O, no serialising here)."""
	site = getattr(frappe.local, "site", None) or ""
	keys = _site_keys(site)
	_flusher.add(
		_Pending(keys[0], keys[1], keys[2], monitoring.buffer_max_entries, entry, monitoring, site, keys[3]),
		monitoring.flush_interval_ms,
	)


_keys_by_site: dict[str, tuple[str, str, str, str]] = {}


def _site_keys(site: str) -> tuple[str, str, str, str]:
	"""(buffer, dropped, flusher statistics, capture errors) keys of the current site, built once per
	site and process."""
	keys = _keys_by_site.get(site)
	if keys is None:
		keys = _keys_by_site[site] = (buffer_key(), dropped_key(), flusher_stats_key(), internal_errors_key())
	return keys


def flush() -> int:
	"""Send queued measurements to Redis now (jobs and scripts call this before they end)."""
	return _flusher.flush()


def count_unmeasured_request() -> None:
	"""A request the framework refused before the app's hooks ran (one Redis call, on that path only)."""
	with contextlib.suppress(redis.exceptions.RedisError):
		redis_client().incrby(unmeasured_key(), 1)


def oldest_buffered_age_s(now: float) -> float | None:
	"""Seconds since the oldest measurement waiting in the buffer started (None: the buffer is empty
	or Redis cannot be reached)."""
	try:
		oldest = redis_client().lindex(buffer_key(), 0)
	except redis.exceptions.RedisError:
		return None
	if oldest is None:
		return None
	try:
		return round(max(0.0, now - float(orjson.loads(oldest)["started_at"])), 1)
	except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
		return None


def flusher_us_per_measurement() -> float | None:
	"""The flushers' CPU time (cleaning and encoding) per measurement, since Redis started."""
	try:
		stats = redis_client().hgetall(flusher_stats_key())
	except redis.exceptions.RedisError:
		return None
	entries = int(stats.get(b"entries") or 0)
	return round(float(stats.get(b"seconds") or 0) / entries * 1e6, 3) if entries else None


def unreported_drops() -> int:
	return sum(_flusher.unreported_drops.values())


def queued() -> int:
	"""Measurements this process holds that its flusher has not sent yet."""
	return len(_flusher.queue)


@dataclass
class BufferState:
	buffered: int | None
	dropped: int | None
	claimed_batches: int | None
	capture_errors: int | None
	# requests refused before the app's hooks ran (never measured), since the counter began
	unmeasured_requests: int | None = None
	# what could not be read (Redis unreachable): the figures above are None then
	unavailable: list[str] = dataclasses.field(default_factory=list)


def state() -> BufferState:
	try:
		pipe = redis_client().pipeline(transaction=False)
		pipe.llen(buffer_key()).get(dropped_key()).hlen(claims_key()).get(internal_errors_key())
		pipe.get(unmeasured_key())
		buffered, dropped, claims, errors, unmeasured = pipe.execute()
	except redis.exceptions.RedisError:
		return BufferState(None, None, None, None, None, ["buffer state: Redis unreachable"])
	return BufferState(int(buffered), int(dropped or 0), int(claims), int(errors or 0), int(unmeasured or 0))


# --- drain ----------------------------------------------------------------------------------------


@dataclass
class DrainReport:
	status: str = "ok"
	rows_inserted: int = 0
	entries_read: int = 0
	batches: int = 0
	claims_taken_over: int = 0
	malformed: int = 0
	duration_s: float = 0.0
	buffered_after: int | None = 0
	errors: list[str] = dataclasses.field(default_factory=list)


@dataclass
class _Batch:
	"""A claimed batch, its entries made into rows (and how many of them were malformed)."""

	claim_id: str
	items: list[bytes]
	rows: list[tuple]
	malformed: int


@dataclass(frozen=True)
class _Claimer:
	"""Claims the next batch and makes its rows, in the drain's prefetching thread: everything it
	needs is read in the job's own thread first (the framework's per-site state is not visible from
	another thread)."""

	claim: Any  # the registered _CLAIM script (redis-py's scripts are safe across threads)
	buffer_key: str
	claims_key: str
	batch_size: int
	zone: ZoneInfo

	def next_batch(self, claim_id: str, claim_list: str) -> _Batch | None:
		items = self.claim(
			keys=[self.buffer_key, claim_list, self.claims_key], args=[self.batch_size, claim_id, time.time()]
		)
		if not items:
			return None
		# stamped after the claim, as the rollup's watermark expects (see rollup.py)
		created = format_datetime(from_epoch(time.time(), self.zone))
		return _Batch(claim_id, items, *_rows(items, created, self.zone))


def drain(max_batches: int | None = None) -> DrainReport:
	"""Move buffered measurements into Performance Metric rows; safe to run concurrently.

	While one batch is inserted, a second thread claims the next and makes its rows: the database
	works while Python parses (the drivers release the GIL while they wait), so a drain takes about
	as long as its inserts instead of inserts and parsing one after the other."""
	started = time.monotonic()
	config = get_config()
	monitoring = config.monitoring
	report = DrainReport()
	zone = system_zone()
	for claim_id in _stale_claims(monitoring):
		items = _read_claim(claim_id)
		_insert_batch(_Batch(claim_id, items, *_rows(items, frappe.utils.now(), zone)), report, config)
		report.claims_taken_over += 1
	claimer = _Claimer(
		redis_client().register_script(_CLAIM), buffer_key(), claims_key(), monitoring.drain_batch_size, zone
	)

	def prefetch(pool: ThreadPoolExecutor) -> Future:
		claim_id = os.urandom(8).hex()
		return pool.submit(claimer.next_batch, claim_id, claim_list_key(claim_id))

	with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vperf-drain") as pool:
		batch = prefetch(pool).result() if max_batches is None or max_batches > 0 else None
		while batch is not None:
			more = max_batches is None or report.batches + 1 < max_batches
			following = prefetch(pool) if more else None
			try:
				_insert_batch(batch, report, config)
			except BaseException:
				if following is not None:
					_give_back(following)
				raise
			batch = following.result() if following is not None else None
	report.duration_s = round(time.monotonic() - started, 3)
	report.buffered_after = int(redis_client().llen(buffer_key()))
	return report


def _give_back(claimed: Future) -> None:
	"""A batch claimed ahead of a failed insert goes back to the head of the buffer, in order, at
	once (left claimed, it would wait `drain_claim_timeout_s` for the next drain to take it over)."""
	try:
		batch = claimed.result()
		if batch is not None:
			redis_client().register_script(_GIVE_BACK)(
				keys=[buffer_key(), claim_list_key(batch.claim_id), claims_key()], args=[batch.claim_id]
			)
	except Exception as error:
		# the claim stays behind and is taken over later: nothing is lost; the insert's own failure
		# is the one the caller sees
		internal_errors.report("buffer.drain.give_back", error, may_raise=False)


def _stale_claims(monitoring: MonitoringConfig) -> list[str]:
	take_over = redis_client().register_script(_TAKE_OVER)
	now = time.time()
	stale = []
	for raw_id, claimed_at in redis_client().hgetall(claims_key()).items():
		claim_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
		if float(claimed_at) > now - monitoring.drain_claim_timeout_s:
			continue
		# re-stamp atomically, so two drains never take over the same claim
		if take_over(keys=[claims_key()], args=[claim_id, now - monitoring.drain_claim_timeout_s, now]):
			stale.append(claim_id)
	return stale


def _read_claim(claim_id: str) -> list[bytes]:
	return redis_client().lrange(claim_list_key(claim_id), 0, -1)


def _insert_batch(batch: _Batch, report: DrainReport, config: PerformanceConfig) -> None:
	claim_id, items, rows, malformed = batch.claim_id, batch.items, batch.rows, batch.malformed
	insert_rows(rows)
	frappe.db.commit()
	# the database copy is committed: the sinks get the rows from here, never from the request path,
	# and nothing they do can undo the insert
	_hand_to_sinks(rows, config, report)
	# released only after the commit: a crash before this line leaves the claim to be taken over
	pipe = redis_client().pipeline(transaction=False)
	pipe.delete(claim_list_key(claim_id)).hdel(claims_key(), claim_id).execute()
	report.batches += 1
	report.entries_read += len(items)
	report.rows_inserted += len(rows)
	report.malformed += malformed


# hooks.py's wiring: functions given every batch of rows the drain has committed (dicts by column)
# and the site's configuration, e.g. the OpenTelemetry span export; the drain knows none of them
DRAIN_SINKS_HOOK = "vperf_drain_sinks"


def _hand_to_sinks(rows: list[tuple], config: PerformanceConfig, report: DrainReport) -> None:
	"""Each registered sink gets the committed rows; one that fails costs only itself (logged with its
	traceback, or noted in the report when Redis refused it)."""
	sinks = frappe.get_hooks(DRAIN_SINKS_HOOK)
	if not sinks:
		return
	values = [row_values(row) for row in rows]
	for path in sinks:
		try:
			frappe.get_attr(path)(values, config)
		except redis.exceptions.RedisError as error:
			report.errors.append(f"{path}: {type(error).__name__}")
		except Exception as error:
			internal_errors.report(f"buffer.drain_sink {path}", error)


_KINDS: dict[str, Kind] = {
	**dict.fromkeys(("operation", "operation_type", "status", "user", "trace_id", "parent_span"), "text"),
	**dict.fromkeys(("error", "context"), "long text"),
	"started_at": "datetime",
	**dict.fromkeys(("query_count", "rss_growth_kb", "http_status"), "integer"),
	**dict.fromkeys(("duration_ms", "db_time_ms", "peak_rss_mb", "peak_alloc_kb", "capture_us"), "float"),
}
# a re-drained claim inserts nothing twice: rows already stored are skipped by name
_DETAIL_ROWS = BulkWrite(METRIC, tuple((column, _KINDS[column]) for column in COLUMNS), chunk=5000)
_ROW_COLUMNS = ("name", "creation", *COLUMNS)


def row_values(row: tuple) -> dict[str, Any]:
	"""A row as `detail_row` builds it, by column name."""
	return dict(zip(_ROW_COLUMNS, row, strict=True))


def insert_rows(rows: list[tuple]) -> None:
	"""Rows as `detail_row` builds them, in as few statements as `bulk` allows; names already
	stored are skipped (a re-drained claim inserts nothing twice)."""
	_DETAIL_ROWS.write(rows)


_NUMBERS = {"integer": int, "float": float}
_CONVERTERS = tuple((column, _NUMBERS.get(_KINDS[column])) for column in COLUMNS)


def detail_row(name: str, created: str, values: dict[str, Any]) -> tuple:
	"""One Performance Metric row in the column order `insert_rows` writes (`started_at` and
	`created` already formatted as database datetimes). A number that is missing is 0: the columns
	are NOT NULL (MariaDB's INSERT IGNORE would store 0 with a mere warning, the others would refuse
	the whole batch)."""
	get = values.get
	return (
		name,
		created,
		*[convert(get(column) or 0) if convert else get(column) for column, convert in _CONVERTERS],
	)


def _rows(items: list[bytes], created: str, zone: ZoneInfo) -> tuple[list[tuple], int]:
	"""The rows of a batch's entries, stamped `created` (no framework call: it runs in the drain's
	prefetching thread), and how many entries were malformed."""
	# a batch repeats a few hundred names: each is cleaned once
	clean_names: dict[str, str] = {}
	rows, malformed = [], 0
	for raw in items:
		try:
			entry = orjson.loads(raw)
			# stored as Frappe stores datetimes: naive, in the system time zone
			started = from_epoch(float(entry["started_at"]), zone)
			entry["started_at"] = started.isoformat(sep=" ", timespec="microseconds")
			operation = entry["operation"]
			if isinstance(operation, str):
				cleaned = clean_names.get(operation)
				if cleaned is None:
					cleaned = clean_names[operation] = operations.clean_name(operation)
			else:
				cleaned = operations.clean_name(operation)
			entry["operation"] = cleaned
			entry["operation_type"], entry["status"] = upgraded_type_and_status(entry)
			rows.append(detail_row(str(entry["name"])[:32], created, entry))
		except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, OverflowError, OSError):
			malformed += 1
	return rows, malformed


def upgraded_type_and_status(entry: dict[str, Any]) -> tuple[str, str]:
	"""Type and status as this version writes them, also for what an earlier version measured (type
	`request`; status `error` for every HTTP error). Anything else unknown is refused (ValueError)."""
	operation_type, status = entry.get("operation_type"), entry.get("status")
	http_status = int(entry.get("http_status") or 0)
	if operation_type == "request":
		operation_type = PAGE if operations.is_page_name(str(entry.get("operation"))) else API
	if status == ERROR and 400 <= http_status < 500:
		status = CLIENT_ERROR
	if operation_type not in OPERATION_TYPES or status not in (OK, CLIENT_ERROR, ERROR):
		raise ValueError(f"unknown operation type {operation_type!r} or status {status!r}")
	return operation_type, status


def drain_job() -> dict[str, Any]:
	"""Scheduled every minute: drain the buffer. Without Redis there is nothing to drain: the run is
	reported as skipped (with the reason) instead of failing."""
	try:
		report = drain()
	except redis.exceptions.RedisError as error:
		report = DrainReport(status="skipped: Redis unreachable", errors=[f"{type(error).__name__}: {error}"])
	except Exception as error:
		frappe.db.rollback()
		report = DrainReport(status="failed", errors=[f"{type(error).__name__}: {error}"])
		job_reports.record("drain", dataclasses.asdict(report))
		internal_errors.report("buffer.drain_job", error)
		raise
	return job_reports.record("drain", dataclasses.asdict(report))
