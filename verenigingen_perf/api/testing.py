"""Endpoints the integration tests drive over HTTP. Refused unless the site allows tests
(`allow_tests` in its config, as `bench run-tests` requires), so a production site never runs them."""

import frappe


def _require_test_site() -> None:
	if not frappe.conf.get("allow_tests"):
		frappe.throw("Test endpoints are disabled on this site (allow_tests is off)", frappe.PermissionError)


@frappe.whitelist(allow_guest=True)
def run_statements(count: str | int = 0) -> int:
	"""Run exactly `count` SQL statements."""
	_require_test_site()
	count = int(count)
	for _ in range(count):
		frappe.db.sql("select 1")
	return count


@frappe.whitelist()
def fail(kind: str = "server") -> None:
	"""Raise: a validation error (HTTP 417) or an unexpected exception (HTTP 500)."""
	_require_test_site()
	if kind == "validation":
		frappe.throw("planted validation failure", frappe.ValidationError)
	raise RuntimeError("planted server failure")


@frappe.whitelist()
def enqueue_probe(statements: str | int = 0, fail: str | int = 0) -> str:
	"""Enqueue `probe_job` from inside this request; returns the RQ job id."""
	_require_test_site()
	job = frappe.enqueue(
		"verenigingen_perf.api.testing.probe_job", statements=int(statements), fail=int(fail), queue="short"
	)
	return job.id


def probe_job(statements: int = 0, fail: int = 0) -> None:
	for _ in range(statements):
		frappe.db.sql("select 1")
	if fail:
		raise RuntimeError("planted job failure")
