"""The app's own failures: counted for meta-monitoring, logged with their traceback, raised under tests.

Instrumentation must never break the request or job it measures, but a failure that is only counted
is invisible (if the enqueue patch or the flusher breaks, every request goes unmeasured and nothing
says why). So each failure is logged with its traceback, at most once per place and kind of error per
`LOG_INTERVAL_S` in each process (a hook that fails on every request cannot flood the Error Log), and
re-raised where tests run (`frappe.flags.in_test`, or the site config key
`verenigingen_perf_raise_internal_errors` on a test site's web server).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

import frappe

# one log entry per place and kind of error per process in this period; not a judgement threshold
LOG_INTERVAL_S = 600
RAISE_CONFIG_KEY = "verenigingen_perf_raise_internal_errors"

_last_logged: dict[tuple[str, str], float] = {}
_lock = threading.Lock()
_logger = logging.getLogger("verenigingen_perf")


def should_raise() -> bool:
	try:
		return bool(frappe.flags.in_test or frappe.conf.get(RAISE_CONFIG_KEY))
	except Exception:
		return False


def report(
	where: str,
	error: BaseException,
	*,
	may_raise: bool = True,
	site: str | None = None,
	count_key: str | None = None,
) -> None:
	"""Record an internal failure at `where`; re-raises it under tests unless `may_raise` is False
	(a background thread must survive whatever happens).

	A failure with another site's measurement (the flusher sends every site's of its process) names
	that `site` and its counter `count_key`: it is counted there, and only written to the log file, not
	to the Error Log of the site the flushing thread happens to serve."""
	_count(count_key)
	if _due(where, error):
		_log(where, error, to_error_log=site is None or site == getattr(frappe.local, "site", None))
	if may_raise and should_raise():
		raise error


def _count(count_key: str | None = None) -> None:
	from verenigingen_perf.utils.performance.redis_store import key, redis_client

	try:
		redis_client().incrby(count_key or key("capture_errors"), 1)
	except Exception:
		pass


def _due(where: str, error: BaseException) -> bool:
	signature = (where, type(error).__name__)
	now = time.monotonic()
	with _lock:
		last = _last_logged.get(signature)
		if last is not None and now - last < LOG_INTERVAL_S:
			return False
		_last_logged[signature] = now
		return True


def _log(where: str, error: BaseException, to_error_log: bool = True) -> None:
	text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
	title = f"verenigingen_perf: internal error in {where}"
	_logger.error("%s\n%s", title, text)
	if not to_error_log:
		return
	try:
		# deferred: inserted by the framework's own job, so no request or hook writes to the database
		frappe.log_error(title=title, message=text, defer_insert=True)
	except Exception:
		_logger.exception("verenigingen_perf: could not write the Error Log for %s", where)


def reset_rate_limit() -> None:
	"""Forget when each failure was last logged (tests)."""
	with _lock:
		_last_logged.clear()
