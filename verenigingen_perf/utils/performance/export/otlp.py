"""OpenTelemetry span export (optional, off by default): the drain hands over what it inserted, a
job of its own sends it to an OTLP/HTTP endpoint with `opentelemetry-sdk`'s exporter.

- `hand_over()` (the drain, after its commit): appends the inserted spans to a bounded Redis list, the
  backlog; past `otlp_backlog_max` the oldest are dropped and counted. One Redis call per batch; it
  never raises into the drain for an export reason, and the database copy is already committed.
- `export_job()` (every minute): takes up to `otlp_batch_size` spans from the head of the backlog,
  builds them as the SDK's `ReadableSpan` (explicit ids and timestamps) and sends them with
  `OTLPSpanExporter.export()` (which retries retryable answers with backoff within `otlp_timeout_s`).
  A batch the endpoint did not take goes back to the head and the run stops: the next run (a minute
  later) tries again, so a receiver that is down costs one timeout a minute and loses nothing but what
  a full backlog drops. A worker killed between taking and sending a batch loses that batch from the
  export (never from the database). A claim taken over by the drain may export a span twice.

Ids: the app's trace id (hex) is the OTLP trace id when it fits 128 bits (zero-padded on the left),
else its 16-byte BLAKE2b digest; span ids (24 hex digits, 96 bits) become their 8-byte BLAKE2b digest.
Both mappings are deterministic, so a parent id maps to the same id as the parent's own span.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import frappe
import orjson
from frappe.utils.password import get_decrypted_password

from verenigingen_perf.utils.performance import job_reports, redis_store
from verenigingen_perf.utils.performance.config import PerformanceConfig, get_config
from verenigingen_perf.utils.performance.messages import _
from verenigingen_perf.utils.performance.redis_store import key, redis_client
from verenigingen_perf.utils.performance.schema import SETTINGS
from verenigingen_perf.utils.performance.timeutil import as_datetime, to_epoch

# OTLP's sizes: a trace id is 16 bytes, a span id 8
_TRACE_ID_BYTES = 16
_SPAN_ID_BYTES = 8
_HEX = re.compile(r"^[0-9a-f]{1,32}$")
# the OTLP headers (a password field): how many, how long each name and value may be
_MAX_HEADERS = 20
_MAX_HEADER_NAME = 100
_MAX_HEADER_VALUE = 1000
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
# entries per Redis call (Lua's argument limit)
_CHUNK = 1000
SCOPE = "verenigingen_perf"

# KEYS: backlog, dropped; ARGV: most entries kept, entries... (pushed at the tail)
_PUSH = """
local n = #ARGV - 1
if n > 0 then redis.call('RPUSH', KEYS[1], unpack(ARGV, 2, #ARGV)) end
local over = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if over > 0 then
	redis.call('LTRIM', KEYS[1], over, -1)
	redis.call('INCRBY', KEYS[2], over)
	return over
end
return 0
"""
# KEYS: backlog; ARGV: how many: takes them from the head
_TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items > 0 then redis.call('LTRIM', KEYS[1], #items, -1) end
return items
"""
# KEYS: backlog, dropped; ARGV: most entries kept, entries in order (back to the head)
_PUT_BACK = """
for i = #ARGV, 2, -1 do redis.call('LPUSH', KEYS[1], ARGV[i]) end
local over = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[1])
if over > 0 then
	redis.call('LTRIM', KEYS[1], over, -1)
	redis.call('INCRBY', KEYS[2], over)
end
return over
"""


# --- ids and spans (pure) ---------------------------------------------------------------------------


def trace_id(app_id: str) -> int:
	"""The OTLP trace id (a non-zero 128-bit number) of an app trace id."""
	text = str(app_id).lower()
	if _HEX.match(text) and int(text, 16):
		return int(text, 16)
	return _digest(text, _TRACE_ID_BYTES)


def span_id(app_id: str) -> int:
	"""The OTLP span id (a non-zero 64-bit number) of an app span id."""
	return _digest(str(app_id), _SPAN_ID_BYTES)


def _digest(text: str, size: int) -> int:
	value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=size).digest(), "big")
	# zero is OTLP's "invalid id"; one digest in 2^64 is, so it is moved off it
	return value or 1


def span_record(values: Mapping[str, Any], started_ns: int) -> bytes:
	"""What the backlog keeps of one inserted detail row (no user, no context, no error text)."""
	return orjson.dumps(
		[
			values["name"],
			values.get("trace_id") or values["name"],
			values.get("parent_span") or None,
			values["operation"],
			values["operation_type"],
			started_ns,
			float(values.get("duration_ms") or 0),
			values["status"],
			int(values.get("http_status") or 0),
			int(values.get("query_count") or 0),
			float(values.get("db_time_ms") or 0),
		]
	)


def build_span(record: bytes, resource: Any) -> Any:
	"""A backlog entry as the SDK's ReadableSpan, with its own ids, parent and timestamps."""
	from opentelemetry.sdk.trace import ReadableSpan
	from opentelemetry.sdk.util.instrumentation import InstrumentationScope
	from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
	from opentelemetry.trace.status import Status, StatusCode

	(name, app_trace, parent, operation, operation_type, started_ns, duration_ms, status, http_status,
	 statements, db_time_ms) = orjson.loads(record)  # fmt: skip
	trace = trace_id(app_trace)
	context = SpanContext(trace, span_id(name), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
	parent_context = (
		SpanContext(trace, span_id(parent), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
		if parent
		else None
	)
	attributes: dict[str, Any] = {
		"vperf.operation": operation,
		"vperf.operation_type": operation_type,
		"vperf.status": status,
		"vperf.statements": int(statements),
		"vperf.db_time_ms": float(db_time_ms),
		"vperf.span_id": str(name),
		"vperf.trace_id": str(app_trace),
	}
	if http_status:
		attributes["http.response.status_code"] = int(http_status)
	kinds = {"api": SpanKind.SERVER, "page": SpanKind.SERVER, "job": SpanKind.CONSUMER}
	return ReadableSpan(
		name=operation,
		context=context,
		parent=parent_context,
		resource=resource,
		attributes=attributes,
		kind=kinds.get(operation_type, SpanKind.INTERNAL),
		status=Status(StatusCode.ERROR) if status == "error" else Status(StatusCode.UNSET),
		start_time=int(started_ns),
		end_time=int(started_ns) + int(float(duration_ms) * 1_000_000),
		instrumentation_scope=InstrumentationScope(SCOPE),
	)


def parse_headers(text: str | None) -> dict[str, str]:
	"""`name=value` pairs separated by commas or lines (OTEL_EXPORTER_OTLP_HEADERS' form). Errors
	name the field and the rule, never a value (a header usually carries a secret)."""
	headers: dict[str, str] = {}
	for number, item in enumerate(re.split(r"[,\n]", text or ""), start=1):
		if not item.strip():
			continue
		name, separator, value = item.partition("=")
		name, value = name.strip(), value.strip()
		if not separator or not _HEADER_NAME.match(name) or len(name) > _MAX_HEADER_NAME:
			raise ValueError(
				_(
					"otlp_headers: entry {number} must be name=value with a header name of at most {limit} "
					"characters",
					number=number,
					limit=_MAX_HEADER_NAME,
				)
			)
		if len(value) > _MAX_HEADER_VALUE or any(ord(c) < 32 or ord(c) == 127 for c in value):
			raise ValueError(
				_(
					"otlp_headers: the value of {name} must be at most {limit} characters without control "
					"characters",
					name=name,
					limit=_MAX_HEADER_VALUE,
				)
			)
		headers[name.lower()] = value
	if len(headers) > _MAX_HEADERS:
		raise ValueError(
			_("otlp_headers: at most {limit} headers, got {count}", limit=_MAX_HEADERS, count=len(headers))
		)
	return headers


# --- the backlog (Redis) ----------------------------------------------------------------------------


def backlog_key() -> str:

	return key("otlp_backlog")


def dropped_key() -> str:

	return key("otlp_dropped")


def exported_key() -> str:

	return key("otlp_exported")


def hand_over(rows: Iterable[Mapping[str, Any]], config: PerformanceConfig) -> int:
	"""A drain sink (hooks.py `vperf_drain_sinks`): append the spans the drain just inserted (and
	committed) to the backlog, when the export is on. Returns how many were dropped from a full
	backlog (they are counted in Redis too, for the exposition)."""
	export = config.export
	if not export.otlp_enabled:
		return 0

	records = [span_record(row, int(to_epoch(as_datetime(row["started_at"])) * 1e9)) for row in rows]
	client = redis_client()
	push = client.register_script(_PUSH)
	dropped = 0
	for start in range(0, len(records), _CHUNK):
		dropped += int(
			push(
				keys=[backlog_key(), dropped_key()],
				args=[export.otlp_backlog_max, *records[start : start + _CHUNK]],
			)
		)
	return dropped


def backlog_state() -> tuple[int | None, int | None, int | None]:
	"""(spans waiting, spans dropped, spans exported); None for each when Redis cannot be read."""
	import redis

	try:
		pipe = redis_client().pipeline(transaction=False)
		waiting, dropped, exported = pipe.llen(backlog_key()).get(dropped_key()).get(exported_key()).execute()
	except redis.exceptions.RedisError:
		return None, None, None
	return int(waiting), int(dropped or 0), int(exported or 0)


# --- the export job ---------------------------------------------------------------------------------


@dataclasses.dataclass
class ExportReport:
	status: str = "ok"
	spans_exported: int = 0
	batches: int = 0
	failed_batches: int = 0
	malformed: int = 0
	backlog_after: int | None = None
	duration_s: float = 0.0
	errors: list[str] = dataclasses.field(default_factory=list)


def export_job() -> dict[str, Any]:
	"""Scheduled every minute. An endpoint that is down is reported (status), not raised: its spans
	wait in the backlog; the app's own failures are recorded and raised."""

	return job_reports.run_and_record(
		"otlp", run_export, lambda errors: ExportReport(status="failed", errors=errors)
	)


def run_export() -> ExportReport:

	started = time.monotonic()
	config = get_config()
	export = config.export
	report = ExportReport()
	client = redis_client()
	if not export.otlp_enabled:
		report.status = "disabled"
		report.backlog_after = int(client.llen(backlog_key()))
		return report
	# the app's `otlp` extra, needed only once the export is on (the settings refuse it without)
	from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
	from opentelemetry.sdk.resources import Resource
	from opentelemetry.sdk.trace.export import SpanExportResult

	headers = parse_headers(get_decrypted_password(SETTINGS, SETTINGS, "otlp_headers", raise_exception=False))
	with redis_store.exclusive("otlp", config.retention.job_lock_timeout_s) as acquired:
		if acquired is False:
			report.status = "skipped: another export is running"
			return report
		take = client.register_script(_TAKE)
		put_back = client.register_script(_PUT_BACK)
		exporter = OTLPSpanExporter(
			endpoint=export.otlp_endpoint, headers=headers, timeout=export.otlp_timeout_s
		)
		resource = Resource({"service.name": frappe.local.site, "vperf.site": frappe.local.site})
		# at most what was waiting when the run began: spans arriving meanwhile go next run
		rounds = -(-int(client.llen(backlog_key())) // export.otlp_batch_size)
		try:
			for _round in range(rounds):
				items = take(keys=[backlog_key()], args=[export.otlp_batch_size])
				if not items:
					break
				spans, kept = [], []
				for item in items:
					try:
						spans.append(build_span(item, resource))
						kept.append(item)
					except (orjson.JSONDecodeError, ValueError, TypeError, OverflowError):
						report.malformed += 1
				try:
					result = exporter.export(spans) if spans else SpanExportResult.SUCCESS
				except Exception:
					put_back(keys=[backlog_key(), dropped_key()], args=[export.otlp_backlog_max, *kept])
					raise
				if result is not SpanExportResult.SUCCESS:
					put_back(keys=[backlog_key(), dropped_key()], args=[export.otlp_backlog_max, *kept])
					report.failed_batches += 1
					report.status = "endpoint did not accept the spans: kept in the backlog for the next run"
					break
				client.incrby(exported_key(), len(spans))
				report.batches += 1
				report.spans_exported += len(spans)
		finally:
			exporter.shutdown()
	report.backlog_after = int(client.llen(backlog_key()))
	report.duration_s = round(time.monotonic() - started, 3)
	return report
