"""Unit tests of the capture's pure parts: operation names, cleaning, exclusions. No site."""

import json
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verenigingen_perf.utils.performance import buffer, capture, operations
from verenigingen_perf.utils.performance.config import build_config
from verenigingen_perf.utils.performance.schema import (
	ALL_OPERATIONS,
	NOT_FOUND_OPERATION,
	OVERFLOW_OPERATION,
)

MONITORING = build_config("production", "default").monitoring


@pytest.mark.parametrize(
	("method", "path", "operation", "operation_type"),
	[
		("POST", "/api/method/verenigingen.api.member.get", "verenigingen.api.member.get", "api"),
		("GET", "/api/v2/method/frappe.auth.get_logged_user", "frappe.auth.get_logged_user", "api"),
		("GET", "/api/resource/Member", "GET /api/resource/Member", "api"),
		("GET", "/api/resource/Member/MEM-0001", "GET /api/resource/Member/{name}", "api"),
		("GET", "/api/resource/User/jane.doe@example.com", "GET /api/resource/User/{name}", "api"),
		("PUT", "/api/v2/document/Member/x y", "PUT /api/document/Member/{name}", "api"),
		(
			"POST",
			"/api/v2/document/Member/a/b/method/renew",
			"POST /api/document/Member/{name}/method/renew",
			"api",
		),
		("GET", "/api/v2/document/Member/a/copy", "GET /api/document/Member/{name}/copy", "api"),
		("POST", "/api/v2/method/Member/renew_all", "POST /api/method/Member/renew_all", "api"),
		("GET", "/api/v2/doctype/Member/count", "GET /api/doctype/Member/count", "api"),
		("GET", "/api/resource/<script>", NOT_FOUND_OPERATION, "api"),
		("GET", "/api/xyz/anything", NOT_FOUND_OPERATION, "api"),
		("GET", "/app/member/1234", "GET /app", "page"),
		("GET", "/app/user/jane.doe@example.com", "GET /app", "page"),
		("GET", "/app", "GET /app", "page"),
		("GET", "/blog/my-first-post", "GET /blog/*", "page"),
		("GET", "/about", "GET /about", "page"),
		("GET", "/", "GET /", "page"),
		("BREW", "/", "OTHER /", "page"),
	],
)
def test_operation_names_are_bounded_and_carry_no_record_name(method, path, operation, operation_type):
	route = operations.route_for(method, path)
	assert (route.name, route.operation_type) == (operation, operation_type)


def test_a_not_found_answer_is_never_an_operation_of_its_own():
	for path in ("/xyz-0f3c9a1b", "/jane.doe@example.com", "/api/resource/Nope", "/app/x"):
		assert operations.request_operation("GET", path, 404)[0] == NOT_FOUND_OPERATION
	for status in (400, 403, 500, 503):
		assert operations.request_operation("GET", "/xyz-0f3c9a1b", status) == ("(failed page)", "page")
	assert operations.request_operation("GET", "/app/user/x", 500) == ("GET /app", "page")


def test_a_failed_document_method_is_filed_under_its_route():
	route = operations.route_for("POST", "/api/v2/document/Member/a/method/renew")
	assert (route.name, route.on_error) == (
		"POST /api/document/Member/{name}/method/renew",
		"POST /api/document/Member/{name}/method/{method}",
	)
	assert route.doctype == "Member"
	junk = operations.route_for("POST", "/api/v2/document/Member/a/method/<junk>")
	assert junk.name == "POST /api/document/Member/{name}/method/{method}"


def test_failed_requests_for_what_does_not_exist_are_not_found(site):
	"""(A site: whether a doctype exists is asked of the database.)"""
	import importlib

	# as the framework's handler does before it refuses or runs a method
	importlib.import_module("frappe.auth")
	user_method = "/api/v2/document/User/a/method/random-junk-123"
	assert operations.request_operation("POST", user_method, 417)[0] == (
		"POST /api/document/User/{name}/method/{method}"
	)
	assert operations.request_operation("GET", "/api/resource/User", 403)[0] == "GET /api/resource/User"
	for path in (
		"/api/resource/No Such Doctype",
		"/api/v2/document/Nope/x/method/m",
		"/api/v2/doctype/Nope/count",
	):
		assert operations.request_operation("GET", path, 403)[0] == NOT_FOUND_OPERATION
	assert operations.request_operation("GET", "/api/method/no.such.module.fn", 417)[0] == "(unknown method)"
	assert operations.request_operation("GET", "/api/method/frappe.auth.get_logged_user", 403)[0] == (
		"frappe.auth.get_logged_user"
	)


def test_scheduled_jobs_are_named_after_the_job_they_run():
	wrapper = "frappe.core.doctype.scheduled_job_type.scheduled_job_type.run_scheduled_job"
	job = "verenigingen_perf.utils.performance.buffer.drain_job"
	assert operations.job_operation(wrapper, {"job_type": job}) == job
	assert operations.job_operation(wrapper, {"job_type": job, "scheduled_job_type": job}) == job
	assert operations.job_operation("app.tasks.send", {}) == "app.tasks.send"
	assert operations.job_operation(None, None) == "unknown job"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=400))
def test_any_name_is_cleaned_into_a_bounded_stable_name(raw):
	name = operations.clean_name(raw)
	assert 1 <= len(name) <= operations.NAME_MAX_CHARS
	assert name == name.strip() and "  " not in name
	assert not any(unicodedata.category(c) == "Cc" for c in name)
	assert unicodedata.normalize("NFC", name) == name
	assert name not in (ALL_OPERATIONS, OVERFLOW_OPERATION)
	assert operations.clean_name(name) == name


def test_static_assets_and_probes_are_excluded_by_default():
	assert capture.is_excluded("/assets/frappe/dist/js/desk.bundle.js", MONITORING)
	assert capture.is_excluded("/api/method/ping", MONITORING)
	assert not capture.is_excluded("/api/method/verenigingen.api.member.get", MONITORING)


def test_http_outcomes():
	assert [capture.http_outcome(s) for s in (200, 302, 404, 417, 500, 503)] == [
		"ok",
		"ok",
		"client_error",
		"client_error",
		"error",
		"error",
	]


def test_clean_entry_truncates_and_stringifies():
	entry = {
		"operation": "x" * 500,
		"user": None,
		"error": "e" * 2000,
		"context": {"blob": "y" * 5000, "when": object()},
		"trace_id": "t" * 64,
	}
	clean = buffer.clean_entry(entry, MONITORING)
	assert len(clean["operation"]) == 140 and clean["operation"].endswith("...")
	assert len(clean["error"]) == 500
	assert len(clean["trace_id"]) == 32
	assert len(clean["context"]) <= MONITORING.context_max_chars
	marked = json.loads(clean["context"])
	assert marked["truncated"] is True and marked["chars"] > MONITORING.context_max_chars
	json.dumps(clean)  # serialisable


@settings(max_examples=200, deadline=None)
@given(
	context=st.recursive(
		st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
		lambda inner: (
			st.lists(inner, max_size=5)
			| st.dictionaries(
				st.one_of(st.text(max_size=5), st.integers(), st.tuples(st.integers())), inner, max_size=5
			)
		),
		max_leaves=40,
	),
	max_chars=st.integers(min_value=64, max_value=400),
)
def test_any_context_becomes_valid_json_within_the_limit(context, max_chars):
	text = buffer.context_text(context, max_chars)
	if text is not None:
		assert len(text) <= max_chars
		json.loads(text)


def test_a_measured_operation_never_takes_the_rollups_names():
	for reserved in (ALL_OPERATIONS, OVERFLOW_OPERATION):
		clean = buffer.clean_entry({"operation": reserved}, MONITORING)
		assert clean["operation"] != reserved and clean["operation"].startswith(reserved)


def test_small_context_is_kept_whole():
	clean = buffer.clean_entry({"context": {"member": "MEM-1", "n": 3}}, MONITORING)
	assert json.loads(clean["context"]) == {"member": "MEM-1", "n": 3}


def test_entries_of_the_previous_version_are_upgraded():
	old_page = {
		"operation": "GET /app/member",
		"operation_type": "request",
		"status": "error",
		"http_status": 404,
	}
	old_api = {
		"operation": "frappe.client.get",
		"operation_type": "request",
		"status": "error",
		"http_status": 500,
	}
	assert buffer.upgraded_type_and_status(old_page) == ("page", "client_error")
	assert buffer.upgraded_type_and_status(old_api) == ("api", "error")
	with pytest.raises(ValueError):
		buffer.upgraded_type_and_status({"operation": "x", "operation_type": "bogus", "status": "ok"})
