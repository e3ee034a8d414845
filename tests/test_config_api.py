"""The configuration API over HTTP against the site's real web server."""

import json

import frappe
import pytest

from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.utils.performance import config

API = "verenigingen_perf.api.config"


@pytest.fixture
def clients(site, make_user, http):
	"""HTTP clients for the permission matrix: who -> (client, allowed)."""
	return {
		"Administrator": (http("Administrator"), True),
		"System Manager": (http(make_user("System Manager")), True),
		PERFORMANCE_MANAGER: (http(make_user(PERFORMANCE_MANAGER)), False),
		"plain user": (http(make_user()), False),
		"Guest": (http(None), False),
	}


def message(response) -> dict:
	return response.json()["message"]


def error_text(response) -> str:
	body = response.json()
	messages = []
	for raw in json.loads(body.get("_server_messages", "[]")):
		shown = json.loads(raw).get("message", "")
		messages.extend(shown if isinstance(shown, list) else [shown])
	return " ".join([*messages, body.get("exception", "")])


@pytest.mark.parametrize(
	("method", "params"),
	[
		("get_config", {}),
		("validate_config", {"values": {"sampling_rate": 0.5}}),
		("update_config", {"values": {"sampling_rate": 0.5}}),
	],
)
def test_permission_matrix(clients, default_settings, method, params):
	for who, (client, allowed) in clients.items():
		response = client.call(f"{API}.{method}", **params)
		if allowed:
			assert response.status_code == 200, (who, response.text[:300])
			assert "environment" in message(response) or "valid" in message(response)
		else:
			assert response.status_code == 403, (who, response.status_code, response.text[:300])
			assert "message" not in response.json()
			assert "Traceback" not in response.text


def test_get_config_reports_environment_source_and_values(clients, default_settings):
	client, _ = clients["System Manager"]
	body = message(client.call(f"{API}.get_config", "GET"))
	assert body["environment"] in config.ENVIRONMENTS
	assert body["environment_source"] in ("site_config", "environment_variable", "developer_mode", "default")
	assert set(body["values"]) == set(config.SETTINGS)
	assert body["overrides"] == {}


def test_update_config_persists_and_clears(clients, default_settings):
	client, _ = clients["Administrator"]
	body = message(
		client.call(f"{API}.update_config", values={"sampling_rate": "0.3"}, environment="staging")
	)
	assert (body["environment"], body["environment_source"]) == ("staging", "performance_settings")
	assert body["values"]["sampling_rate"] == 0.3
	assert config.get_config().monitoring.sampling_rate == 0.3
	body = message(client.call(f"{API}.update_config", values={"sampling_rate": ""}, environment=""))
	assert "sampling_rate" not in body["overrides"]


@pytest.mark.parametrize(
	("params", "expected"),
	[
		({"values": {"sampling_rate": 2}}, "sampling_rate"),
		({"values": {"api_response_warning_ms": 5000}}, "api_response_warning_ms"),
		({"values": {"detail_retention_days": 1e308}}, "detail_retention_days: must be between 1 and 3650"),
		({"values": {"buffer_max_entries": 1e20}}, "buffer_max_entries: must be between 1 and 1e+07"),
		({"values": {"daily_retention_days": 1000000}}, "daily_retention_days: must be between 1 and 7300"),
		(
			{"values": {"member_doctype": "Not A Doctype"}},
			"member_doctype: the doctype 'Not A Doctype' does not exist",
		),
		(
			{"values": {"member_doctype": "Performance Settings"}},
			"member_doctype: 'Performance Settings' is a Single",
		),
		({"values": {"member_doctype": "Has Role"}}, "member_doctype: 'Has Role' is a child table"),
		({"values": {"detail_retention_days": 0}}, "detail_retention_days"),
		({"values": {"bogus": 1}}, "bogus: unknown setting"),
		({"values": "[1, 2]"}, "values: must be an object"),
		({"values": "{not json"}, "values: must be a JSON object"),
		({"values": {}, "environment": "prod"}, "environment: must be blank or one of"),
	],
)
def test_bad_updates_are_refused_clearly_and_change_nothing(clients, default_settings, params, expected):
	client, _ = clients["System Manager"]
	before = frappe.db.get_singles_dict("Performance Settings")
	response = client.call(f"{API}.update_config", **params)
	assert response.status_code == 417, response.text[:300]
	assert expected in error_text(response)
	assert "Traceback" not in response.text
	frappe.db.rollback()
	assert frappe.db.get_singles_dict("Performance Settings") == before


def test_validate_config_reports_without_saving(clients, default_settings):
	client, _ = clients["System Manager"]
	report = message(client.call(f"{API}.validate_config", values={"api_queries_warning": 500}))
	assert report["valid"] is False
	assert any(e.startswith("api_queries_warning:") for e in report["errors"])
	report = message(client.call(f"{API}.validate_config", values={"api_queries_warning": 3}))
	assert report == {
		"valid": True,
		"errors": [],
		"environment": report["environment"],
		"overrides": {"api_queries_warning": 3.0},
	}
	assert "api_queries_warning" not in config.read_stored_settings()[1]


def test_a_refused_huge_number_leaves_the_site_answering(clients, default_settings):
	"""A number past every bound is refused, and the site answers the next save at once (it used to
	leave the request's transaction open: every later request locked or timed out)."""
	client, _ = clients["System Manager"]
	for values in (
		{"detail_retention_days": 1e308},
		{"buffer_max_entries": 1e20},
		{"sampling_rate": 10**400},
	):
		assert client.call(f"{API}.update_config", values=values).status_code == 417
	response = client.call(f"{API}.update_config", values={"sampling_rate": "0.4"})
	assert response.status_code == 200, response.text[:300]
	assert response.elapsed.total_seconds() < 30
	assert message(response)["values"]["sampling_rate"] == 0.4


def test_a_desk_save_reports_every_broken_rule_as_a_list(clients, default_settings):
	"""The desk's own save answers with one message per broken rule, not HTML joined with <br>."""
	client, _ = clients["System Manager"]
	response = client.call(
		"frappe.client.set_value",
		doctype="Performance Settings",
		name="Performance Settings",
		fieldname={"sampling_rate": "2", "memory_warning_mb": "-1"},
	)
	assert response.status_code == 417, response.text[:300]
	assert "<br>" not in response.text
	[shown] = [json.loads(m) for m in json.loads(response.json()["_server_messages"])]
	assert isinstance(shown["message"], list)
	assert any(m.startswith("sampling_rate:") for m in shown["message"])
	assert any(m.startswith("memory_warning_mb:") for m in shown["message"])
