"""The measurement buffer: an in-process queue, a bounded Redis list, and the drain into the database.

- `add()` (request path): cleans the entry and appends it to an in-process queue. Nothing else.
- A daemon thread per process (`flush()` on demand) moves queued entries to a Redis list through
  Frappe's cache connection, in one round trip per batch, never past `buffer_max_entries`; what does
  not fit, or cannot be sent because Redis is unreachable, is dropped and counted.
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
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import frappe
import orjson
import redis

from verenigingen_perf.utils.performance.config import MonitoringConfig, get_config
from verenigingen_perf.utils.performance.redis_store import key as _key
from verenigingen_perf.utils.performance.redis_store import redis_client
from verenigingen_perf.utils.performance.schema import ALL_OPERATIONS

DOCTYPE = "Performance Metric"
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
	"status",
	"http_status",
	"user",
	"trace_id",
	"parent_span",
	"error",
	"context",
)
# Performance Metric column sizes (see its doctype), not tunable thresholds
_LIMITS = {"operation": 140, "user": 140, "trace_id": 32, "parent_span": 32, "error": 500}
# entries per Redis command: keeps each Lua call well inside Lua's argument limits
_PUSH_CHUNK = 1000

_PUSH = """
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local n = #ARGV - 1
local take = math.min(math.max(room, 0), n)
if take > 0 then redis.call('RPUSH', KEYS[1], unpack(ARGV, 2, take + 1)) end
if n > take then redis.call('INCRBY', KEYS[2], n - take) end
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

_TAKE_OVER = """
local claimed_at = redis.call('HGET', KEYS[1], ARGV[1])
if not claimed_at or tonumber(claimed_at) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


@contextlib.contextmanager
def exclusive(name: str, timeout_s: int) -> Iterator[bool]:
	"""A non-blocking Redis lock for one of the app's jobs: yields False when another run holds it.

	A run that dies keeps it until `timeout_s`; one that outlives it relies on its own
	compare-and-set checks, so releasing an expired lock is not an error."""
	lock = redis_client().lock(_key(f"{name}_lock"), timeout=timeout_s, blocking=False)
	acquired = lock.acquire()
	try:
		yield acquired
	finally:
		if acquired:
			try:
				lock.release()
			except redis.exceptions.LockError:
				pass


def buffer_key() -> str:
	return _key("buffer")


def dropped_key() -> str:
	return _key("dropped")


def claims_key() -> str:
	return _key("drain_claims")


def internal_errors_key() -> str:
	return _key("capture_errors")


def claim_list_key(claim_id: str) -> str:
	return _key(f"drain_claim:{claim_id}")


# --- cleaning -------------------------------------------------------------------------------------


def _bounded(value: Any, limit: int) -> Any:
	if value is None:
		return None
	text = value if isinstance(value, str) else str(value)
	return text if len(text) <= limit else text[: limit - 3] + "..."


def _context_text(context: Any, max_chars: int) -> str | None:
	if not context:
		return None
	text = orjson.dumps(context, default=str).decode()
	if len(text) > max_chars:
		marker = "...[truncated]"
		text = text[: max(max_chars - len(marker), 0)] + marker
	return text


def clean_entry(entry: dict[str, Any], monitoring: MonitoringConfig) -> dict[str, Any]:
	"""Bounded, serialisable: oversize names truncated, odd values stringified, never an exception."""
	clean = dict(entry)
	for column, limit in _LIMITS.items():
		clean[column] = _bounded(clean.get(column), limit)
	if clean["operation"] == ALL_OPERATIONS:
		clean["operation"] = f"{ALL_OPERATIONS} (measured)"
	clean["context"] = _context_text(clean.get("context"), monitoring.context_max_chars)
	return clean


# --- in-process queue and flusher -----------------------------------------------------------------


@dataclass
class _Pending:
	"""A finished measurement waiting for the flusher, which cleans and serialises it."""

	key: str
	dropped_key: str
	limit: int
	entry: dict[str, Any]
	monitoring: MonitoringConfig

	def payload(self) -> bytes:
		return orjson.dumps(clean_entry(self.entry, self.monitoring), default=str)


class _Flusher:
	def __init__(self) -> None:
		self.queue: deque[_Pending] = deque()
		self.lock = threading.Lock()
		self.wake = threading.Event()
		self.interval_s = 0.2
		self.pid = 0
		self.thread: threading.Thread | None = None
		self.unreported_drops: dict[str, int] = {}

	def add(self, pending: _Pending, interval_ms: int) -> None:
		self.queue.append(pending)
		self.interval_s = interval_ms / 1000
		if self.pid != os.getpid():
			self._start()

	def _start(self) -> None:
		with self.lock:
			if self.pid == os.getpid():
				return
			# after a fork the parent's thread does not exist here, and its queue is not ours
			self.pid = os.getpid()
			self.thread = threading.Thread(target=self._run, name="vperf-buffer-flusher", daemon=True)
			self.thread.start()

	def _run(self) -> None:
		while True:
			self.wake.wait(self.interval_s)
			self.wake.clear()
			self.flush()

	def flush(self) -> int:
		"""Send everything queued; returns how many entries reached Redis."""
		with self.lock:
			batch = []
			while self.queue:
				batch.append(self.queue.popleft())
			if not batch:
				self._report_drops()
				return 0
			by_key: dict[tuple[str, str, int], list[bytes]] = {}
			for item in batch:
				by_key.setdefault((item.key, item.dropped_key, item.limit), []).append(item.payload())
			sent = 0
			for (key, drops_key, limit), payloads in by_key.items():
				sent += self._push(key, drops_key, limit, payloads)
			self._report_drops()
			return sent

	def _push(self, key: str, drops_key: str, limit: int, payloads: list[bytes]) -> int:
		sent = 0
		try:
			script = redis_client().register_script(_PUSH)
			for start in range(0, len(payloads), _PUSH_CHUNK):
				chunk = payloads[start : start + _PUSH_CHUNK]
				sent += int(script(keys=[key, drops_key], args=[limit, *chunk]))
		except Exception:
			self.unreported_drops[drops_key] = self.unreported_drops.get(drops_key, 0) + len(payloads) - sent
		return sent

	def _report_drops(self) -> None:
		for drops_key, count in list(self.unreported_drops.items()):
			try:
				redis_client().incrby(drops_key, count)
			except Exception:
				return
			self.unreported_drops.pop(drops_key, None)


_flusher = _Flusher()
atexit.register(lambda: _flusher.flush())


def add(entry: dict[str, Any], monitoring: MonitoringConfig) -> None:
	"""Queue a finished measurement (request path: no I/O, no serialising here)."""
	keys = _site_keys()
	_flusher.add(
		_Pending(keys[0], keys[1], monitoring.buffer_max_entries, entry, monitoring),
		monitoring.flush_interval_ms,
	)


_keys_by_site: dict[str, tuple[str, str]] = {}


def _site_keys() -> tuple[str, str]:
	"""(buffer key, dropped key) of the current site, built once per site and process."""
	site = getattr(frappe.local, "site", None) or ""
	keys = _keys_by_site.get(site)
	if keys is None:
		keys = _keys_by_site[site] = (buffer_key(), dropped_key())
	return keys


def flush() -> int:
	"""Send queued measurements to Redis now (jobs and scripts call this before they end)."""
	return _flusher.flush()


def count_internal_error() -> None:
	"""Instrumentation failed somewhere; the user's operation went on. Counted for meta-monitoring."""
	try:
		redis_client().incrby(internal_errors_key(), 1)
	except Exception:
		pass


def unreported_drops() -> int:
	return sum(_flusher.unreported_drops.values())


@dataclass
class BufferState:
	buffered: int
	dropped: int
	claimed_batches: int
	capture_errors: int


def state() -> BufferState:
	cache = redis_client()
	return BufferState(
		buffered=int(cache.llen(buffer_key())),
		dropped=int(cache.get(dropped_key()) or 0),
		claimed_batches=int(cache.hlen(claims_key())),
		capture_errors=int(cache.get(internal_errors_key()) or 0),
	)


# --- drain ----------------------------------------------------------------------------------------


@dataclass
class DrainReport:
	rows_inserted: int
	entries_read: int
	batches: int
	claims_taken_over: int
	malformed: int
	duration_s: float
	buffered_after: int


def drain(max_batches: int | None = None) -> DrainReport:
	"""Move buffered measurements into Performance Metric rows; safe to run concurrently."""
	started = time.monotonic()
	monitoring = get_config().monitoring
	report = DrainReport(0, 0, 0, 0, 0, 0.0, 0)
	for claim_id in _stale_claims(monitoring):
		_insert_claim(claim_id, _read_claim(claim_id), report)
		report.claims_taken_over += 1
	claim = redis_client().register_script(_CLAIM)
	while max_batches is None or report.batches < max_batches:
		claim_id = os.urandom(8).hex()
		items = claim(
			keys=[buffer_key(), claim_list_key(claim_id), claims_key()],
			args=[monitoring.drain_batch_size, claim_id, time.time()],
		)
		if not items:
			break
		_insert_claim(claim_id, items, report)
	report.duration_s = time.monotonic() - started
	report.buffered_after = int(redis_client().llen(buffer_key()))
	return report


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


def _insert_claim(claim_id: str, items: list[bytes], report: DrainReport) -> None:
	rows, malformed = _rows(items)
	insert_rows(rows)
	frappe.db.commit()
	# released only after the commit: a crash before this line leaves the claim to be taken over
	redis_client().delete(claim_list_key(claim_id))
	redis_client().hdel(claims_key(), claim_id)
	report.batches += 1
	report.entries_read += len(items)
	report.rows_inserted += len(rows)
	report.malformed += malformed


_STANDARD = ("creation", "modified", "owner", "modified_by", "docstatus")
_ROW_COLUMNS = ("name", *_STANDARD, *COLUMNS)
# rows per INSERT statement: 22 parameters a row stays under SQLite's 32,766-variable limit
_INSERT_CHUNK = 1000
# rows per JSON_TABLE statement on MariaDB: one parameter, so only max_allowed_packet bounds it
_JSON_CHUNK = 5000


def insert_rows(rows: list[tuple]) -> None:
	"""Multi-row INSERT that skips names already present (a re-drained claim inserts nothing twice).

	Written out rather than through `frappe.db.bulk_insert`, whose query builder renders every value
	as a term object (six times slower at these volumes, see benchmarks/capture.py). On MariaDB the
	rows travel as one JSON parameter read by JSON_TABLE: the driver escapes one string per chunk
	instead of one value per column and row, which was most of the drain's time.
	"""
	if not rows:
		return
	db_type = frappe.db.db_type
	columns = ", ".join(f"`{c}`" for c in _ROW_COLUMNS)
	size = _JSON_CHUNK if db_type == "mariadb" else _INSERT_CHUNK
	for start in range(0, len(rows), size):
		chunk = rows[start : start + size]
		if db_type == "mariadb":
			frappe.db.sql(
				f"INSERT IGNORE INTO `tab{DOCTYPE}` ({columns}) SELECT * FROM JSON_TABLE(%s, '$[*]' "
				f"COLUMNS ({_JSON_TABLE_COLUMNS})) AS measurements",
				(orjson.dumps(chunk).decode(),),
			)
			continue
		verb = "INSERT OR IGNORE" if db_type == "sqlite" else "INSERT"
		conflict = " ON CONFLICT (name) DO NOTHING" if db_type == "postgres" else ""
		placeholder = "(" + ", ".join(["%s"] * len(_ROW_COLUMNS)) + ")"
		frappe.db.sql(
			f"{verb} INTO `tab{DOCTYPE}` ({columns}) VALUES {', '.join([placeholder] * len(chunk))}{conflict}",
			[value for row in chunk for value in row],
		)


def _json_table_type(column: str) -> str:
	if column in ("creation", "modified", "started_at"):
		return "DATETIME(6)"
	if column in ("docstatus", "query_count", "rss_growth_kb", "http_status"):
		return "BIGINT"
	if column in ("duration_ms", "db_time_ms", "peak_rss_mb", "peak_alloc_kb"):
		return "DOUBLE"
	if column in ("error", "context"):
		return "LONGTEXT"
	return "VARCHAR(140)"


_JSON_TABLE_COLUMNS = ", ".join(
	f"`{column}` {_json_table_type(column)} PATH '$[{i}]'" for i, column in enumerate(_ROW_COLUMNS)
)


def detail_row(name: str, created: str, values: dict[str, Any]) -> tuple:
	"""One Performance Metric row in the column order `insert_rows` writes (`started_at` and
	`created` already formatted as database datetimes)."""
	return (name, created, created, "Administrator", "Administrator", 0, *(values.get(c) for c in COLUMNS))


def _rows(items: list[bytes]) -> tuple[list[tuple], int]:
	now = frappe.utils.now()
	system_zone = ZoneInfo(frappe.utils.get_system_timezone())
	rows, malformed = [], 0
	for raw in items:
		try:
			entry = orjson.loads(raw)
			# stored as Frappe stores datetimes: naive, in the system time zone
			started = datetime.fromtimestamp(float(entry["started_at"]), system_zone).replace(tzinfo=None)
			entry["started_at"] = started.isoformat(sep=" ", timespec="microseconds")
			rows.append(detail_row(entry["name"], now, entry))
		except (orjson.JSONDecodeError, ValueError, KeyError, TypeError):
			malformed += 1
	return rows, malformed


def drain_job() -> dict[str, Any]:
	"""Scheduled every minute: drain the buffer; the report is kept for meta-monitoring."""
	report = drain()
	record_job_report("drain", dataclasses.asdict(report))
	return dataclasses.asdict(report)


def record_job_report(job: str, report: dict[str, Any]) -> None:
	"""The last run of each of the app's jobs, readable by meta-monitoring (Redis hash, JSON)."""
	redis_client().hset(_key("job_reports"), job, json.dumps({**report, "finished_at": time.time()}))


def job_reports() -> dict[str, dict[str, Any]]:
	raw = redis_client().hgetall(_key("job_reports"))
	return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}
