"""The shipped Prometheus rules and Grafana dashboard (verenigingen_perf/prometheus/) on a real
Prometheus (Debian's package) that scraped the site: it loads the rules and evaluates every one
without error, the alert on an open regression fires, and every expression of the rules and of the
dashboard evaluates without error and returns data wherever the series it reads were scraped."""

import json
import math
import re
import shutil
from datetime import timedelta
from pathlib import Path

import frappe
import pytest
import requests
import yaml

import verenigingen_perf
from tests.prometheus_server import PROMETHEUS, query, wait_for
from tests.test_export import roll_up_now, rotate_token
from verenigingen_perf.testing.fixtures import BENCH_SITE
from verenigingen_perf.utils.performance import buffer, capture, config, monitoring, rollup, timeutil
from verenigingen_perf.utils.performance.database import snapshot as database_snapshot
from verenigingen_perf.utils.performance.schema import DATABASE_SNAPSHOT, MONITOR_SAMPLE, OPEN, REGRESSION

PROMETHEUS_DIR = Path(verenigingen_perf.__file__).resolve().parent / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
DASHBOARD = PROMETHEUS_DIR / "grafana-dashboard.json"
OPERATION = "vperf.tests.prometheus_rules"
PER_HOUR = 40
# a series selector: a vperf series with its label matchers, if any
_SELECTOR = re.compile(r"\bvperf_[a-z_]+(?:\{[^}]*\})?")
# series a quiet test site has no figure for, and why
QUIET_SITE_GAPS = {
	"vperf_database_cache_hit_ratio": "SQLite has no buffer pool, so its snapshots have no cache ratio",
	'signal="buffer_age"': "nothing waits in the buffer",
	'signal="capture_cost"': "no request was drained between the two monitor samples",
	'signal="storage_days"': "no storage budget is set",
	"vperf_table_bytes": "no retention run has measured the tables",
}
# the comparison of an alert's expression (the first one)
_COMPARISON = re.compile(r"\s(<=|>=|<|>)\s")


def plant(moment, count: int) -> None:
	"""`count` API calls of OPERATION ingested at `moment`, every tenth a server error."""
	frappe.db.rollback()
	stamp = timeutil.format_datetime(moment)
	rows = []
	for i in range(count):
		values = {
			"operation": OPERATION,
			"operation_type": "api",
			"started_at": stamp,
			"duration_ms": 5.0 + 10 * i,
			"query_count": 3,
			"status": "error" if i % 10 == 0 else "ok",
			"http_status": 500 if i % 10 == 0 else 200,
		}
		rows.append(buffer.detail_row(capture.new_id(), stamp, values))
	buffer.insert_rows(rows)
	frappe.db.commit()


def open_regression() -> None:
	frappe.get_doc(
		{
			"doctype": REGRESSION,
			"name": frappe.generate_hash(length=20),
			"operation": OPERATION,
			"operation_type": "api",
			"metric": "duration_p95",
			"status": OPEN,
			"first_detected": frappe.utils.now_datetime(),
			"last_confirmed": frappe.utils.now_datetime(),
			"open_key": frappe.generate_hash(length=20),
		}
	).db_insert()
	frappe.db.commit()


def dashboard_queries(site_name: str) -> list[str]:
	"""Every query of the dashboard, its variables given their values (the window its default)."""
	board = json.loads(DASHBOARD.read_text())
	window = next(v for v in board["templating"]["list"] if v["name"] == "window")["current"]["value"]
	values = {"$site": site_name, "$window": window, "$__rate_interval": "1m"}
	queries = []
	for panel in board["panels"]:
		for target in panel.get("targets", []):
			expression = target["expr"]
			for variable, value in values.items():
				expression = expression.replace(variable, value)
			assert "$" not in expression, expression
			queries.append(expression)
	return queries


def evaluate(prometheus_url: str, expression: str) -> list[dict]:
	"""The expression's result; Prometheus refusing or failing to evaluate it fails the test."""
	response = requests.get(f"{prometheus_url}/api/v1/query", params={"query": expression}, timeout=10)
	assert response.status_code == 200, (expression, response.text)
	answer = response.json()
	assert answer["status"] == "success", (expression, answer)
	return answer["data"]["result"]


def scraped(prometheus_url: str, expression: str) -> bool:
	"""Whether every series the expression reads was scraped (each selector matches a series)."""
	return all(evaluate(prometheus_url, f"count({s})") for s in _SELECTOR.findall(expression))


@pytest.mark.skipif(not shutil.which(PROMETHEUS), reason="Prometheus (Debian's package) is not installed")
def test_every_rule_and_dashboard_query_evaluates_on_a_prometheus_that_scraped_the_site(
	site, clean_slate, http, server_url, prometheus_server
):
	if not BENCH_SITE and frappe.db.db_type != "sqlite":
		pytest.skip(
			"the rules and the dashboard read the exposition, the same on every backend: run on SQLite"
		)
	site_name = frappe.local.site
	started = frappe.utils.now_datetime()
	token = rotate_token(http("Administrator"))
	current_hour = started.replace(minute=0, second=0, microsecond=0)
	# the previous hour, folded before Prometheus starts, and this hour, folded after its first
	# scrape: the counters move while Prometheus watches, so rates and quantiles have data
	plant(current_hour - timedelta(minutes=30), PER_HOUR)
	plant(started, PER_HOUR)
	delay = config.get_config().retention.aggregation_delay_minutes
	frappe.db.rollback()
	assert not rollup.run_rollup(current_hour + timedelta(minutes=delay + 1)).errors
	# two samples of the monitor (the second measures since the first: loss rate, capture cost)
	for _ in range(2):
		monitoring.record_sample(config.get_config())
	open_regression()
	taken = database_snapshot.take(database_snapshot.ON_DEMAND)
	frappe.db.commit()

	try:
		prometheus_url = prometheus_server(server_url, token, rule_files=[RULES])
		selector = f'{{site="{site_name}", operation="{OPERATION}"}}'
		wait_for(prometheus_url, f"vperf_operations_total{selector}", bool, "the first fold's counter")
		roll_up_now()
		wait_for(
			prometheus_url,
			f"vperf_operations_total{selector}",
			lambda r: r and float(r[0]["value"][1]) == 2 * PER_HOUR,
			"the second fold's counter",
		)
		# the recording rules evaluated after that scrape: the p95 from the moved buckets
		p95 = wait_for(
			prometheus_url,
			f"site_type_operation:vperf_operation_duration_seconds:p95_2h{selector}",
			lambda r: r and not math.isnan(float(r[0]["value"][1])),
			"the recorded p95",
		)
		# interpolated within the bucket that holds the planted calls' p95
		durations = sorted([5.0 + 10 * i for i in range(PER_HOUR)] * 2)
		true_p95 = durations[math.ceil(0.95 * len(durations)) - 1]
		bounds = (0.0, *config.get_config().export.prometheus_buckets_ms)
		upper = next(i for i, bound in enumerate(bounds) if bound >= true_p95)
		assert bounds[upper - 1] / 1000 <= float(p95[0]["value"][1]) <= bounds[upper] / 1000
		# Prometheus loaded every rule and evaluated each without an error
		groups = requests.get(f"{prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
		loaded = [rule for group in groups for rule in group["rules"]]
		rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
		assert len(loaded) == len(rules)
		assert all(rule["health"] == "ok" for rule in loaded), [
			(r["name"], r.get("lastError")) for r in loaded
		]
		# the open regression's alert fires (for: 0m), with the operation and metric as labels
		wait_for(
			prometheus_url,
			f'ALERTS{{alertname="VperfNewRegression", alertstate="firing", site="{site_name}",'
			f' operation="{OPERATION}", metric="duration_p95", severity="warning"}}',
			bool,
			"the firing VperfNewRegression",
		)
		# "no ratio" (SQLite has no buffer pool) is no series, never a ratio of 0 that would alert
		ratio = (taken.get("cache") or {}).get("ratio")
		exposed_ratio = query(prometheus_url, f'vperf_database_cache_hit_ratio{{site="{site_name}"}}')
		assert [float(r["value"][1]) for r in exposed_ratio] == ([] if ratio is None else [ratio])
		assert query(prometheus_url, f'vperf_database_snapshot_timestamp_seconds{{site="{site_name}"}}')
		assert (
			site_name
			in requests.get(
				f"{prometheus_url}/api/v1/label/site/values",
				params={"match[]": "vperf_threshold"},
				timeout=10,
			).json()["data"]
		)

		unscraped = []
		for rule in rules:
			expression = rule["expr"]
			result = evaluate(prometheus_url, expression)
			if not scraped(prometheus_url, expression):
				unscraped.append(expression)
				continue
			if "alert" in rule and rule["alert"] != "VperfNewRegression":
				# a healthy site does not alert: the comparison as 0 or 1 shows that both sides
				# join on the scraped series' labels
				joined = evaluate(prometheus_url, _COMPARISON.sub(r" \1 bool ", expression, count=1))
				assert joined, expression
			else:
				assert result, expression
		for expression in dashboard_queries(site_name):
			result = evaluate(prometheus_url, expression)
			if scraped(prometheus_url, expression):
				assert result, expression
			else:
				unscraped.append(expression)
		# only what a quiet test site has no figure for went unchecked for data
		assert all(any(gap in e for gap in QUIET_SITE_GAPS) for e in unscraped), "\n".join(unscraped)
	finally:
		frappe.db.rollback()
		frappe.db.delete(DATABASE_SNAPSHOT, {"name": taken["name"]})
		frappe.db.delete(MONITOR_SAMPLE, {"sampled_at": (">=", started)})
		frappe.db.commit()
