"""Endpoints the integration tests drive over HTTP. Refused unless the site allows tests
(`allow_tests` in its config, as `bench run-tests` requires), so a production site never runs them,
and even there only for System Managers, with bounded, validated arguments."""

from typing import Any

import frappe
from frappe import _

from verenigingen_perf.api import arguments, begin_api_call

# the most statements one call may run, and the kinds of planted failure
MAX_STATEMENTS = 1000
FAILURE_KINDS = ("validation", "server")


def _require_test_site() -> None:
	frappe.flags.disable_traceback = True
	if not frappe.conf.get("allow_tests"):
		frappe.throw(
			_("Test endpoints are disabled on this site (allow_tests is off)"), frappe.PermissionError
		)
	begin_api_call("System Manager")


@frappe.whitelist(methods=["GET", "POST"])
def run_statements(count: Any = 0) -> int:
	"""Run exactly `count` SQL statements."""
	_require_test_site()
	count = arguments.whole_number(count, "count", 0, MAX_STATEMENTS)
	for _statement in range(count):
		frappe.db.sql("select 1")
	return count


@frappe.whitelist(methods=["POST"])
def fail(kind: Any = "server") -> None:
	"""Raise: a validation error (HTTP 417) or an unexpected exception (HTTP 500)."""
	_require_test_site()
	if kind not in FAILURE_KINDS:
		frappe.throw(_("kind: must be one of {0}").format(", ".join(FAILURE_KINDS)), frappe.ValidationError)
	if kind == "validation":
		frappe.throw("planted validation failure", frappe.ValidationError)
	raise RuntimeError("planted server failure")


@frappe.whitelist(methods=["POST"])
def enqueue_probe(statements: Any = 0, fail: Any = 0, chain: Any = 0) -> str:
	"""Enqueue `probe_job` from inside this request; returns the RQ job id. With `chain`, the job
	enqueues one more probe job itself."""
	_require_test_site()
	job = frappe.enqueue(
		"verenigingen_perf.api.testing.probe_job",
		statements=arguments.whole_number(statements, "statements", 0, MAX_STATEMENTS),
		fail=arguments.whole_number(fail, "fail", 0, 1),
		chain=arguments.whole_number(chain, "chain", 0, 1),
		queue="short",
	)
	return job.id


def probe_job(statements: int = 0, fail: int = 0, chain: int = 0) -> None:
	for _statement in range(statements):
		frappe.db.sql("select 1")
	if chain:
		frappe.enqueue("verenigingen_perf.api.testing.probe_job", statements=1, queue="short")
	if fail:
		raise RuntimeError("planted job failure")
