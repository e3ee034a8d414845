"""Unit tests of the capture's pure parts: operation names, cleaning, exclusions. No site."""

import json

import pytest

from verenigingen_perf.utils.performance import buffer, capture
from verenigingen_perf.utils.performance.config import build_config
from verenigingen_perf.utils.performance.schema import ALL_OPERATIONS

MONITORING = build_config("production", "default").monitoring


@pytest.mark.parametrize(
	("method", "path", "operation"),
	[
		("POST", "/api/method/verenigingen.api.member.get", "verenigingen.api.member.get"),
		("GET", "/api/v2/method/frappe.auth.get_logged_user", "frappe.auth.get_logged_user"),
		("GET", "/api/resource/Member", "GET /api/resource/Member"),
		("GET", "/api/resource/Member/MEM-0001", "GET /api/resource/Member/{name}"),
		("PUT", "/api/v2/document/Member/x y", "PUT /api/document/Member/{name}"),
		("GET", "/app/member/1234", "GET /app/member/{id}"),
		("GET", "/orders/0f3c9a1b2c3d4e5f/items", "GET /orders/{id}/items"),
		("GET", "/", "GET /"),
	],
)
def test_operation_names_are_stable(method, path, operation):
	assert capture.operation_for_request(method, path) == operation


def test_static_assets_and_probes_are_excluded_by_default():
	assert capture.is_excluded("/assets/frappe/dist/js/desk.bundle.js", MONITORING)
	assert capture.is_excluded("/api/method/ping", MONITORING)
	assert not capture.is_excluded("/api/method/verenigingen.api.member.get", MONITORING)


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
	assert len(clean["context"]) == MONITORING.context_max_chars
	assert clean["context"].endswith("...[truncated]")
	json.dumps(clean)  # serialisable


def test_a_measured_operation_never_takes_the_site_wide_name():
	clean = buffer.clean_entry({"operation": ALL_OPERATIONS}, MONITORING)
	assert clean["operation"] != ALL_OPERATIONS and clean["operation"].startswith(ALL_OPERATIONS)


def test_small_context_is_kept_whole():
	clean = buffer.clean_entry({"context": {"member": "MEM-1", "n": 3}}, MONITORING)
	assert json.loads(clean["context"]) == {"member": "MEM-1", "n": 3}
