"""The app's bench commands (`bench --site S vperf ...`), run as a site operator runs them."""

import json
import re
from datetime import timedelta

import frappe
import pytest

from tests.planting import detail_row, detail_values
from verenigingen_perf.testing.fixtures import bench_mode
from verenigingen_perf.utils.performance import buffer, capture, health, timeutil
from verenigingen_perf.utils.performance.detection.baselines import pin_exists
from verenigingen_perf.utils.performance.schema import BASELINE, METRIC


def planted_rows(hours_back: int, operations: dict[str, float], per_operation: int = 10) -> list[tuple]:
	hour = timeutil.floor_hour(frappe.utils.now_datetime()) - timedelta(hours=hours_back)
	rows = []
	for operation, duration in operations.items():
		for i in range(per_operation):
			moment = timeutil.format_datetime(hour + timedelta(seconds=i))
			values = detail_values(operation, moment, duration + i, query_count=1, db_time_ms=0.1)
			rows.append(detail_row(values))
	return rows


@pytest.fixture
def planted(site, clean_slate, bench_command):
	"""Three operations' detail rows two hours ago, folded by `vperf rollup`."""
	rows = planted_rows(2, {"cmd.fast": 1.0, "cmd.middle": 100.0, "cmd.slow": 1000.0})
	buffer.insert_rows(rows)
	frappe.db.commit()
	result = bench_command("vperf", "rollup")
	assert result.returncode == 0, result.stderr
	assert "Rollup" in result.stdout and "status: ok" in result.stdout
	if not bench_mode():
		assert f"rows_aggregated: {len(rows)}" in result.stdout
	frappe.db.rollback()
	# on a bench the live scheduler's rollup may fold them first: the aggregates hold them either way
	hour = timeutil.floor_hour(frappe.utils.now_datetime()) - timedelta(hours=2)
	folded = {
		row["operation"]: row["count"]
		for row in health.read_aggregates("hour", hour)
		if row["operation"].startswith("cmd.") and row["period_start"] == hour
	}
	assert folded == {"cmd.fast": 10, "cmd.middle": 10, "cmd.slow": 10}
	return rows


def test_report_lists_the_slowest_operations_as_the_aggregates_rank_them(planted, bench_command):
	result = bench_command("vperf", "report", "--since", "24h", "--json")
	assert result.returncode == 0, result.stderr
	answer = json.loads(result.stdout)
	expected = health.slowest_since(timeutil.as_datetime(answer["since"]), 5)
	assert [op["operation"] for op in answer["operations"]] == ["cmd.slow", "cmd.middle", "cmd.fast"]
	assert answer["operations"] == json.loads(json.dumps(expected))
	text = bench_command("vperf", "report", "--since", "24h", "--limit", "2")
	assert text.returncode == 0, text.stderr
	lines = text.stdout.splitlines()
	# to the second, in the site's time zone, named (the stored text's microseconds misled operators)
	zone = frappe.utils.get_system_timezone()
	assert re.fullmatch(
		rf"Slowest operations since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {re.escape(zone)} \(.*\)", lines[0]
	), lines[0]
	assert lines[1].split() == ["operation", "type", "count", "p95", "ms", "error", "rate"]
	assert [line.split()[0] for line in lines[3:]] == ["cmd.slow", "cmd.middle"]
	assert lines[3].split()[2] == "10"


def test_report_of_a_window_without_data_says_so(site, clean_slate, bench_command):
	result = bench_command("vperf", "report", "--since", "90m")
	assert result.returncode == 0, result.stderr
	assert "no data" in result.stdout


@pytest.mark.parametrize("since", ["24", "5x", "0m", "3651d", "-1h"])
def test_report_refuses_a_bad_since(site, bench_command, since):
	result = bench_command("vperf", "report", "--since", since)
	assert result.returncode == 2
	assert "--since" in result.stderr and "Traceback" not in result.stderr


def test_health_and_status_print_what_the_api_answers(planted, bench_command):
	as_json = bench_command("vperf", "health", "--json")
	assert as_json.returncode == 0, as_json.stderr
	answer = json.loads(as_json.stdout)
	assert {c["name"] for c in answer["components"]} >= {"api_response_p95", "error_rate"}
	text = bench_command("vperf", "health")
	assert text.returncode == 0, text.stderr
	assert text.stdout.startswith("Health: ") and "component" in text.stdout.splitlines()[1]
	status = bench_command("vperf", "status")
	assert status.returncode == 0, status.stderr
	assert re.fullmatch(
		rf"Monitoring: [a-z ]+ \(measured at \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d "
		rf"{re.escape(frappe.utils.get_system_timezone())}\)",
		status.stdout.splitlines()[0],
	), status.stdout.splitlines()[0]
	assert "buffer_age" in status.stdout and "rollup_job_lag" in status.stdout


def test_drain_moves_buffered_measurements_and_prints_its_report(site, clean_slate, bench_command):
	before = frappe.db.count(METRIC)
	result = bench_command("vperf", "drain")
	assert result.returncode == 0, result.stderr
	assert result.stdout.startswith("Drain\n") and "status: ok" in result.stdout
	inserted = int(next(line for line in result.stdout.splitlines() if "rows_inserted" in line).split(":")[1])
	frappe.db.rollback()
	# on a bench the scheduled drain may move more at the same time
	assert frappe.db.count(METRIC) >= before + inserted


def test_a_pinned_baseline_is_frozen_and_a_second_pin_of_that_name_fails(planted, bench_command):
	name = f"cmd pin {capture.new_id()}"
	try:
		first = bench_command("vperf", "pin-baseline", name, "--operation", "cmd.slow")
		assert first.returncode == 0, first.stderr
		assert f"Pinned baseline {name!r}" in first.stdout
		frappe.db.rollback()
		assert pin_exists(name)
		again = bench_command("vperf", "pin-baseline", name)
		assert again.returncode == 1 and "already pinned" in again.stderr
		too_long = bench_command("vperf", "pin-baseline", "x" * 141)
		assert too_long.returncode == 2 and "NAME" in too_long.stderr
		# the API's bounds, on every argument
		for operation, rule in (("o" * 5000, "at most 140 characters"), ("a\x01b", "control characters")):
			refused = bench_command("vperf", "pin-baseline", "cmd refused", "--operation", operation)
			assert refused.returncode == 2 and "--operation[0]" in refused.stderr and rule in refused.stderr
		assert not pin_exists("cmd refused")
	finally:
		frappe.db.rollback()
		frappe.db.delete(BASELINE, {"pin_name": ("in", [name, "x" * 141])})
		frappe.db.commit()


@pytest.mark.parametrize(
	("content", "exit_code", "rule"),
	[
		(b"\x89PNG\r\n\x1a\n\x00\xff\xfe", 2, "must be UTF-8 text (byte 0 is not)"),
		(b'a: &a ["x", "x"]\nb: [*a, *a]\n', 2, "yaml: anchors and aliases"),
		(b"rules: [1", 2, "yaml: not valid YAML"),
	],
)
def test_a_rules_file_that_is_no_rules_file_is_refused_and_changes_nothing(
	site, bench_command, tmp_path, content, exit_code, rule
):
	path = tmp_path / "rules.yaml"
	path.write_bytes(content)
	result = bench_command("vperf", "import-alert-rules", str(path))
	assert result.returncode == exit_code and rule in result.stderr, result.stderr
	assert "Traceback" not in result.stderr


def test_a_rules_file_too_large_is_refused_before_it_is_read(site, bench_command, tmp_path):
	from verenigingen_perf.utils.performance.alerts import store

	path = tmp_path / "large.yaml"
	with open(path, "wb") as f:
		f.truncate(4 * store.MAX_YAML_CHARS + 1)  # sparse: nothing is written
	result = bench_command("vperf", "import-alert-rules", str(path))
	assert result.returncode == 2 and "at most 1,000,000 characters" in result.stderr
