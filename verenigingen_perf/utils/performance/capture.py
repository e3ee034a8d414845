"""Measuring requests, background jobs and code blocks.

A measurement is a span: wall time, the SQL statements that went through `frappe.db.sql` and the time
spent in them, a memory figure, status. Spans nest: a span opened inside a request (or a job enqueued
by it) carries the request's trace id, and the sampling decision is made once per trace.

The request path only appends the finished span to an in-process queue (see buffer.py); it never
touches the database and never lets an error of ours reach the user's request (the error is logged
with its traceback instead, see internal_errors.py).
"""

from __future__ import annotations

import functools
import random
import resource
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import frappe

from verenigingen_perf.utils.performance import buffer, internal_errors, operations
from verenigingen_perf.utils.performance.config import MonitoringConfig, PerformanceConfig, get_config
from verenigingen_perf.utils.performance.schema import API, CLIENT_ERROR, CUSTOM, ERROR, JOB, OK

TRACE_HEADER = "X-Vperf-Trace"

F = TypeVar("F", bound=Callable[..., Any])

# per site: one process of a bench serves the requests and jobs of every site on it
_local_config: dict[str, tuple[float, PerformanceConfig]] = {}
_config_lock = threading.Lock()


def _site() -> str:
	return getattr(frappe.local, "site", None) or ""


def current_config() -> PerformanceConfig:
	"""The effective configuration of the current site, re-read from the shared cache at most every
	`config_refresh_s`.

	Requests must not pay a Redis round trip for it; a saved change reaches every worker within
	that interval (and the saving worker at once).
	"""
	site = _site()
	cached = _local_config.get(site)
	now = time.monotonic()
	if cached is not None and now < cached[0]:
		return cached[1]
	with _config_lock:
		config = get_config()
		_local_config[site] = (now + config.monitoring.config_refresh_s, config)
		return config


def forget_local_config() -> None:
	"""Forget this process's copy of the current site's configuration."""
	_local_config.pop(_site(), None)


# --- SQL counting ---------------------------------------------------------------------------------


class SqlCounter:
	"""Counts statements and their time on one database connection object."""

	__slots__ = ("count", "seconds")

	def __init__(self) -> None:
		self.count = 0
		self.seconds = 0.0


# where a database connection object keeps its counter
_COUNTER_ATTRIBUTE = "_vperf_sql_counter"
_COUNTING_CLASS_FLAG = "_vperf_counts_sql"


def sql_counter() -> SqlCounter | None:
	"""The counter of the current connection (a new one for each connection object)."""
	db = getattr(frappe.local, "db", None)
	if db is None:
		return None
	counter = db.__dict__.get(_COUNTER_ATTRIBUTE)
	if counter is None:
		counter = db.__dict__[_COUNTER_ATTRIBUTE] = SqlCounter()
		_count_statements_of(type(db))
	return counter


def _count_statements_of(database_class: type) -> None:
	"""Wrap the connection class's `sql` once per process: each request has a connection object of
	its own, and wrapping every one cost the request path more than all its other bookkeeping. A
	connection without a counter runs the statement untouched."""
	if database_class.__dict__.get(_COUNTING_CLASS_FLAG):
		return
	original = database_class.sql

	@functools.wraps(original)
	def counted_sql(self: Any, *args: Any, **kwargs: Any) -> Any:
		counter = self.__dict__.get(_COUNTER_ATTRIBUTE)
		if counter is None:
			return original(self, *args, **kwargs)
		started = time.perf_counter()
		try:
			return original(self, *args, **kwargs)
		finally:
			counter.seconds += time.perf_counter() - started
			counter.count += 1

	database_class.sql = counted_sql
	setattr(database_class, _COUNTING_CLASS_FLAG, True)


# --- spans ----------------------------------------------------------------------------------------


def new_id(at_ns: int | None = None) -> str:
	"""Time-ordered and unique: rows then append to the primary key instead of splitting its pages.
	The time is now, or `at_ns` (nanoseconds since the epoch) for a span that started then.

	`random` is re-seeded in every forked worker, so two workers do not share the random part.
	"""
	return f"{time.time_ns() if at_ns is None else at_ns:016x}{random.getrandbits(32):08x}"


def _peak_rss_kb() -> int:
	# ru_maxrss is in KB on Linux; a syscall, far cheaper than reading /proc
	return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Trace:
	__slots__ = ("sampled", "trace_id")

	def __init__(self, trace_id: str, sampled: bool):
		self.trace_id = trace_id
		self.sampled = sampled


class Span:
	"""One measured operation; plain slots rather than a dataclass, since one is built per request."""

	__slots__ = (
		"context",
		"count_at_start",
		"counter",
		"operation",
		"operation_type",
		"parent_span",
		"rss_at_start",
		"seconds_at_start",
		"span_id",
		"started",
		"started_wall",
		"trace",
		"traces_allocations",
	)

	def __init__(
		self,
		operation: str,
		operation_type: str,
		trace: Trace,
		parent_span: str | None,
		context: dict[str, Any] | None = None,
	):
		self.operation = operation
		self.operation_type = operation_type
		self.trace = trace
		self.parent_span = parent_span
		self.context = context
		self.span_id = new_id()
		self.started_wall = time.time()
		self.started = time.perf_counter()
		self.counter: SqlCounter | None = None
		self.count_at_start = 0
		self.seconds_at_start = 0.0
		self.rss_at_start = 0
		self.traces_allocations = False

	def begin(self, monitoring: MonitoringConfig) -> Span:
		self.counter = sql_counter()
		if self.counter is not None:
			self.count_at_start = self.counter.count
			self.seconds_at_start = self.counter.seconds
		self.rss_at_start = _peak_rss_kb()
		if monitoring.capture_memory_peak:
			self.traces_allocations = True
			if not tracemalloc.is_tracing():
				tracemalloc.start()
			tracemalloc.reset_peak()
		return self

	def finish(
		self, status: str, http_status: int | None = None, error: BaseException | str | None = None
	) -> dict[str, Any]:
		duration = time.perf_counter() - self.started
		counter = self.counter
		queries = counter.count - self.count_at_start if counter else 0
		db_seconds = counter.seconds - self.seconds_at_start if counter else 0.0
		peak_rss = _peak_rss_kb()
		peak_alloc_kb = 0.0
		if self.traces_allocations and tracemalloc.is_tracing():
			peak_alloc_kb = tracemalloc.get_traced_memory()[1] / 1024
		return {
			"name": self.span_id,
			"operation": self.operation,
			"operation_type": self.operation_type,
			"started_at": self.started_wall,
			"duration_ms": duration * 1000,
			"query_count": queries,
			"db_time_ms": db_seconds * 1000,
			"peak_rss_mb": peak_rss / 1024,
			"rss_growth_kb": peak_rss - self.rss_at_start,
			"peak_alloc_kb": peak_alloc_kb,
			"status": status,
			"http_status": http_status or 0,
			"user": _current_user(),
			"trace_id": self.trace.trace_id,
			"parent_span": self.parent_span,
			"error": _describe_error(error),
			"context": self.context,
		}


def _current_user() -> str | None:
	session = getattr(frappe.local, "session", None)
	return session.get("user") if session else None


def _describe_error(error: BaseException | str | None) -> str | None:
	if error is None:
		return None
	if isinstance(error, BaseException):
		return f"{type(error).__name__}: {error}"
	return str(error)


def http_outcome(http_status: int) -> str:
	"""ok below 400; a 4xx is the caller's error; a 5xx is the site's."""
	if http_status >= 500:
		return ERROR
	return CLIENT_ERROR if http_status >= 400 else OK


class _TraceState:
	"""What frappe.local holds for the current request, job or script: its trace, open spans, and
	the time the app's own hooks took so far (meta-monitoring's capture cost)."""

	__slots__ = ("hook_s", "monitoring", "spans", "trace")

	def __init__(self, trace: Trace, monitoring: MonitoringConfig):
		self.trace = trace
		self.monitoring = monitoring
		self.spans: list[Span] = []
		self.hook_s = 0.0


def _state() -> _TraceState | None:
	return getattr(frappe.local, "vperf", None)


def _stack() -> list[Span]:
	state = _state()
	return state.spans if state else []


def active_trace() -> Trace | None:
	state = _state()
	return state.trace if state else None


def _start_trace(monitoring: MonitoringConfig, inherited: Trace | None = None) -> _TraceState:
	trace = inherited or Trace(new_id(), random.random() < monitoring.sampling_rate)
	state = frappe.local.vperf = _TraceState(trace, monitoring)
	return state


def _end_trace() -> None:
	frappe.local.vperf = None


def _guarded(where: str) -> Callable[[F], F]:
	"""Instrumentation never breaks the operation it measures: a failure is reported (counted,
	logged with its traceback, re-raised under tests) and the operation goes on."""

	def decorate(fn: F) -> F:
		@functools.wraps(fn)
		def wrapper(*args: Any, **kwargs: Any) -> Any:
			try:
				return fn(*args, **kwargs)
			except Exception as error:
				internal_errors.report(where, error)
				return None

		return wrapper  # type: ignore[return-value]

	return decorate


# --- requests -------------------------------------------------------------------------------------


def is_excluded(path: str, monitoring: MonitoringConfig) -> bool:
	return path.startswith(monitoring.excluded_paths)


@_guarded("capture.before_request")
def before_request() -> None:
	"""Hook: start measuring this request (sampling and exclusions from the configuration)."""
	entered = time.perf_counter()
	local = frappe.local
	monitoring = current_config().monitoring
	request = getattr(local, "request", None)
	if not monitoring.enabled or request is None or is_excluded(request.path, monitoring):
		local.vperf = None
		return
	install_job_trace_propagation()
	trace = Trace(new_id(), random.random() < monitoring.sampling_rate)
	state = local.vperf = _TraceState(trace, monitoring)
	if trace.sampled:
		# named when it ends: the name depends on whether the route existed (see operations.py)
		span = Span(request.path, API, trace, None)
		state.spans.append(span.begin(monitoring))
	state.hook_s = time.perf_counter() - entered


_NOT_STARTED = object()


@_guarded("capture.after_request")
def after_request(response: Any = None, request: Any = None) -> None:
	"""Hook: finish the request's span and hand it to the buffer, whatever the outcome."""
	entered = time.perf_counter()
	local = frappe.local
	state = getattr(local, "vperf", _NOT_STARTED)
	if state is _NOT_STARTED:
		# refused before the before_request hooks ran (a CSRF or login failure, a rate limit):
		# nothing was measured, but such requests are counted, not silently lost
		buffer.count_unmeasured_request()
		return
	if state is None:
		return
	local.vperf = None
	request = request or getattr(local, "request", None)
	if not state.spans or state.spans[0].operation_type == CUSTOM or request is None:
		return
	span = state.spans[0]
	# no response object means the framework itself failed to build one
	http_status = getattr(response, "status_code", None) or 500
	status = http_outcome(http_status)
	error = _response_error(http_status) if status != OK else None
	measured = span.finish(status, http_status, error)
	measured["operation"], measured["operation_type"] = operations.request_operation(
		request.method, request.path, http_status
	)
	measured["capture_us"] = (state.hook_s + time.perf_counter() - entered) * 1e6
	buffer.add(measured, state.monitoring)
	if response is not None:
		response.headers[TRACE_HEADER] = state.trace.trace_id


def _response_error(http_status: int) -> str:
	response = getattr(frappe.local, "response", None) or {}
	return response.get("exc_type") or f"HTTP {http_status}"


# --- background jobs ------------------------------------------------------------------------------


@_guarded("capture.before_job")
def before_job(method: str | None = None, kwargs: dict | None = None, transaction_type: str = "job") -> None:
	"""Hook: start measuring a background job, in the trace of the request that enqueued it."""
	_end_trace()
	forget_local_config()  # a job reads the configuration fresh; it pays no request's latency
	monitoring = current_config().monitoring
	if not monitoring.enabled:
		return
	# a job may enqueue jobs of its own, also in a worker that never served a request
	install_job_trace_propagation()
	inherited, parent_span = _trace_from_job_meta()
	state = _start_trace(monitoring, inherited)
	if state.trace.sampled:
		job = getattr(frappe.local, "job", None) or {}
		operation = operations.job_operation(method or job.get("method"), kwargs or job.get("kwargs"))
		state.spans.append(Span(operation, JOB, state.trace, parent_span).begin(monitoring))


@_guarded("capture.after_job")
def after_job(method: str | None = None, kwargs: dict | None = None, result: Any = None) -> None:
	"""Hook: finish the job's span (error status when the job raised) and push it at once."""
	state = _state()
	try:
		if state and state.spans and state.spans[0].operation_type == JOB:
			error = sys.exc_info()[1]
			# the configuration the job started with, already read in before_job
			buffer.add(state.spans[0].finish(ERROR if error else OK, None, error), state.monitoring)
			# a job's work-horse process may exit without running atexit handlers
			buffer.flush()
	finally:
		_end_trace()


def _trace_from_job_meta() -> tuple[Trace | None, str | None]:
	from rq import get_current_job

	job = get_current_job()
	meta = (job.meta or {}).get(buffer.JOB_META_KEY) if job else None
	if not isinstance(meta, dict) or not meta.get("trace_id"):
		return None, None
	return Trace(str(meta["trace_id"]), bool(meta.get("sampled"))), meta.get("parent_span")


# RQ major versions whose `Queue.enqueue_call` takes `meta` (Frappe v15 pins 1.15, v16 uses 2.x)
SUPPORTED_RQ_MAJORS = (1, 2)
_propagation_lock = threading.Lock()
_propagation_installed = False


def install_job_trace_propagation() -> None:
	"""Jobs enqueued inside a trace carry it in their RQ job meta, so the job joins the trace.

	Frappe's enqueue has no hook for this in v15 or v16; RQ's `Queue.enqueue_call` (which Frappe's
	enqueue calls in both) takes a `meta` argument, so it is wrapped once per process, after checking
	that the installed RQ is a version whose `enqueue_call` has that argument."""
	global _propagation_installed
	if _propagation_installed:
		return
	with _propagation_lock:
		if _propagation_installed:
			return
		_propagation_installed = True
		_wrap_enqueue_call()


def _wrap_enqueue_call() -> None:
	import inspect
	from importlib.metadata import version

	from rq.queue import Queue

	installed = version("rq")
	original = Queue.enqueue_call
	if (
		int(installed.split(".")[0]) not in SUPPORTED_RQ_MAJORS
		or "meta" not in inspect.signature(original).parameters
	):
		raise RuntimeError(
			f"rq {installed}: Queue.enqueue_call cannot carry the trace (supported majors "
			f"{SUPPORTED_RQ_MAJORS}); jobs will start traces of their own"
		)

	@functools.wraps(original)
	def enqueue_call(self: Any, *args: Any, **kwargs: Any) -> Any:
		meta = _guarded("capture.enqueue_call")(trace_meta_for_enqueue)()
		if meta is not None:
			kwargs["meta"] = {**(kwargs.get("meta") or {}), buffer.JOB_META_KEY: meta}
		return original(self, *args, **kwargs)

	Queue.enqueue_call = enqueue_call


def trace_meta_for_enqueue() -> dict[str, Any] | None:
	"""What a job enqueued now must carry to join the current trace (None outside a trace)."""
	trace = active_trace()
	if trace is None:
		return None
	stack = _stack()
	return {
		"trace_id": trace.trace_id,
		"sampled": trace.sampled,
		"parent_span": stack[-1].span_id if stack else None,
	}


# --- code blocks ----------------------------------------------------------------------------------


@contextmanager
def measure(operation: str, context: dict[str, Any] | None = None) -> Iterator[Span | None]:
	"""Measure a block: `with measure("member.load"): ...`, or decorate: `@measure("member.load")`.

	Inside a request or job the span joins its trace (and its sampling decision); elsewhere it starts
	its own trace and is flushed when the outermost span ends.
	"""
	span = _open_custom_span(operation, context)
	try:
		yield span
	except BaseException as error:
		_close_custom_span(span, error)
		raise
	else:
		_close_custom_span(span, None)


@_guarded("capture.measure")
def _open_custom_span(operation: str, context: dict[str, Any] | None) -> Span | None:
	monitoring = current_config().monitoring
	if not monitoring.enabled:
		return None
	install_job_trace_propagation()
	state = _state() or _start_trace(monitoring)
	if not state.trace.sampled:
		return None
	stack = state.spans
	span = Span(operation, CUSTOM, state.trace, stack[-1].span_id if stack else None, context=context)
	stack.append(span.begin(monitoring))
	return span


@_guarded("capture.measure")
def _close_custom_span(span: Span | None, error: BaseException | None) -> None:
	if span is None:
		return
	state = _state()
	stack = state.spans if state else []
	if span in stack:
		stack.remove(span)
	monitoring = state.monitoring if state else current_config().monitoring
	buffer.add(span.finish(ERROR if error else OK, None, error), monitoring)
	if not stack:
		_end_trace()
		buffer.flush()
