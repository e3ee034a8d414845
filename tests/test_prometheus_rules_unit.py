"""The shipped Prometheus rules and Grafana dashboard (verenigingen_perf/prometheus/), without a site:
promtool checks the rules and runs their unit tests; each alert is the equivalent of a shipped app
rule (its severity, its `for`, the setting its level comes from) and compares against the exported
level, never a number of its own; every expression reads series the exposition has; the dashboard
has its variables and a query on every panel."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.test_export_unit import snapshot
from verenigingen_perf.utils.performance import config
from verenigingen_perf.utils.performance.alerts.store import SHIPPED_RULES
from verenigingen_perf.utils.performance.export import prometheus

PROMETHEUS_DIR = Path(prometheus.__file__).resolve().parents[3] / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
DASHBOARD = PROMETHEUS_DIR / "grafana-dashboard.json"
NEEDS_PROMTOOL = pytest.mark.skipif(
	shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) is not installed"
)
LEVEL_SETTINGS = {key for warning, critical, _ in config.LEVEL_PAIRS for key in (warning, critical)}
# a selector's label matchers and a quoted string: what is left of an expression are names and numbers
_MATCHERS = re.compile(r"\{[^}]*\}|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")
_SERIES = re.compile(r"\bvperf_[a-z_]+")


def rules() -> list[dict]:
	return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
	return [rule for rule in rules() if "alert" in rule]


def dashboard() -> dict:
	return json.loads(DASHBOARD.read_text())


def dashboard_expressions() -> list[str]:
	return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def run_promtool(*args: str) -> subprocess.CompletedProcess:
	return subprocess.run(
		["promtool", *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
	)


@NEEDS_PROMTOOL
def test_promtool_checks_the_rules():
	result = run_promtool("check", "rules", RULES.name)
	assert result.returncode == 0, result.stdout + result.stderr


@NEEDS_PROMTOOL
def test_the_rules_pass_their_promtool_unit_tests():
	result = run_promtool("test", "rules", RULES_TEST.name)
	assert result.returncode == 0, result.stdout + result.stderr


@NEEDS_PROMTOOL
def test_the_unit_tests_cover_every_alert_firing_and_not_firing():
	tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
	cases = [case for test in tests for case in test.get("alert_rule_test", [])]
	for alert in alerts():
		own = [case for case in cases if case["alertname"] == alert["alert"]]
		assert any(case["exp_alerts"] for case in own), f"{alert['alert']}: no firing case"
		assert any(not case["exp_alerts"] for case in own), f"{alert['alert']}: no case that stays silent"


def test_each_shipped_app_rule_has_its_prometheus_alert_with_its_severity_and_for():
	by_rule = {alert["labels"]["rule"]: alert for alert in alerts()}
	assert set(by_rule) == {rule["name"] for rule in SHIPPED_RULES}
	for shipped in SHIPPED_RULES:
		alert = by_rule[shipped["name"]]
		assert alert["labels"]["severity"] == shipped["severity"], shipped["name"]
		assert alert["for"] == f"{shipped.get('for_minutes', 0)}m", shipped["name"]
		assert {"summary", "description"} <= set(alert["annotations"]), shipped["name"]


def test_every_alert_compares_against_the_site_s_exported_level_never_a_number_of_its_own():
	for alert in alerts():
		expression = alert["expr"]
		settings = re.findall(r'vperf_threshold\{setting="([a-z_]+)"\}', expression)
		numbers = _NUMBER.findall(_MATCHERS.sub("", expression))
		if alert["labels"]["rule"] == "New regression":
			# the shipped rule's own threshold: any open regression
			shipped = next(r for r in SHIPPED_RULES if r["name"] == "New regression")
			assert not settings and [float(n) for n in numbers] == [shipped["threshold"]]
			continue
		assert len(settings) == 1 and settings[0] in LEVEL_SETTINGS, alert["alert"]
		assert not numbers, f"{alert['alert']}: a number of its own: {numbers}"
		# the description names the setting the level comes from, as the shipped rule's does
		assert settings[0] in alert["annotations"]["description"], alert["alert"]
		# and it is the setting the shipped rule's own description names
		shipped = next(r for r in SHIPPED_RULES if r["name"] == alert["labels"]["rule"])
		assert settings[0] in shipped["description"], (settings[0], shipped["description"])


def exposed_series() -> set[str]:
	body, _type = prometheus.render(snapshot(), None)
	names = set()
	for family in text_string_to_metric_families(body.decode()):
		names.add(family.name)
		names.update(sample.name for sample in family.samples)
	return names


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_expression_reads_series_the_exposition_has(source):
	expressions = [rule["expr"] for rule in rules()] if source == "rules" else dashboard_expressions()
	exposed = exposed_series()
	for expression in expressions:
		read = set(_SERIES.findall(expression))
		assert read, expression
		assert read <= exposed, (expression, read - exposed)
		for setting in re.findall(r'setting=~?"([^"]+)"', expression):
			assert any(re.fullmatch(setting, key) for key in LEVEL_SETTINGS), (expression, setting)


def test_the_dashboard_has_its_variables_and_a_query_on_every_panel():
	board = dashboard()
	assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 39
	variables = {v["name"]: v for v in board["templating"]["list"]}
	assert (
		variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
	)
	site = variables["site"]
	assert site["type"] == "query" and site["datasource"]["uid"] == "${datasource}"
	assert re.fullmatch(r"label_values\(vperf_[a-z_]+, site\)", site["query"]["query"])
	panels = [p for p in board["panels"] if p["type"] != "row"]
	assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
	for panel in panels:
		assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
		for target in panel["targets"]:
			assert target["datasource"]["uid"] == "${datasource}", panel["title"]
			# every query is of the chosen site
			assert 'site="$site"' in target["expr"], (panel["title"], target["expr"])
	titles = " ".join(p["title"] for p in panels).lower()
	for subject in ("health score", "rate", "p95", "error ratio", "slowest", "job lag", "loss rate"):
		assert subject in titles, subject
