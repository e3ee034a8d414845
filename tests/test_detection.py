"""Baselines, regression and anomaly detection on a real site: the detection job over planted hourly
aggregates, the records it keeps, and the API."""

from datetime import datetime, timedelta

import frappe
import numpy as np
import pytest

from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.testing import query_budget
from verenigingen_perf.utils.performance import config, rollup
from verenigingen_perf.utils.performance.detection import baselines, job, reports
from verenigingen_perf.utils.performance.schema import ANOMALY, BASELINE, REGRESSION
from verenigingen_perf.utils.performance.sketch import Summary

API = "verenigingen_perf.api.detection"
OP = "/api/method/test.detection.steady"
HOUR = timedelta(hours=1)
# a Monday, so that every hour of the planted weeks is a known hour of the week
DAY = datetime(2026, 11, 16)


def plant(
	start: datetime,
	hours: int,
	count: int,
	slower: float = 1.0,
	statements: int = 10,
	operation: str = OP,
	seed: int = 1,
	every: int = 1,
) -> None:
	"""`hours` hourly aggregate rows from `start` (every `every`-th hour), as the rollup writes them:
	`count` log-normal durations each (median 50 ms, times `slower`)."""
	rng = np.random.default_rng(seed)
	summaries = {}
	for i in range(0, hours, every):
		at = start + HOUR * i
		durations = list(rng.lognormal(np.log(50.0 * slower), 0.5, count))
		summary = Summary()
		summary.add_many(durations, 0, [statements] * count, [1.0] * count, [0.0] * count)
		summaries[("api", operation, at)] = summary
	rollup.merge_into_aggregates("hour", summaries)
	frappe.db.commit()


def detect(until: datetime) -> job.DetectionReport:
	"""The detection job as the scheduler runs it, with the rollup's watermark at `until`."""
	rollup.set_watermark(until)
	frappe.db.commit()
	return job.run_detection(now=until + timedelta(minutes=5))


def regressions(operation: str = OP) -> list[dict]:
	return frappe.get_all(
		REGRESSION,
		filters={"operation": operation},
		fields=[
			"name",
			"metric",
			"status",
			"first_detected",
			"last_confirmed",
			"resolved_at",
			"open_key",
			"change_value",
		],
		order_by="metric",
	)


@pytest.fixture
def detection(clean_slate):
	yield
	frappe.db.rollback()


def test_a_planted_regression_is_recorded_once_updated_and_resolved(site, detection):
	plant(DAY - timedelta(days=8), 8 * 24 + 6, 300)
	plant(DAY + 6 * HOUR, 5, 300, slower=1.5, seed=2)
	plant(DAY + 11 * HOUR, 13, 300, seed=3)
	# first run: only the last complete hour (no history of the job)
	first = detect(DAY + 5 * HOUR)
	assert first.hours_evaluated == 1 and first.baselines_refreshed == 1
	assert regressions() == []
	second = detect(DAY + 9 * HOUR)
	assert second.hours_evaluated == 4  # 05:00 to 08:00
	found = regressions()
	assert {r["metric"] for r in found} >= {"duration_p50", "duration_p95"}
	# found in the slowdown's first hours (the first window holds one slower hour of three)
	assert all(
		r["status"] == "open" and DAY + 6 * HOUR <= r["first_detected"] <= DAY + 7 * HOUR for r in found
	)
	assert all(r["last_confirmed"] == DAY + 8 * HOUR for r in found)
	p95 = next(r for r in found if r["metric"] == "duration_p95")
	assert 0.3 < p95["change_value"] < 0.7
	# the same hours again, and the next ones: updated, never duplicated
	assert detect(DAY + 9 * HOUR).hours_evaluated == 0
	detect(DAY + 11 * HOUR)
	again = regressions()
	assert [r["name"] for r in again] == [r["name"] for r in found]
	assert all(r["last_confirmed"] == DAY + 10 * HOUR for r in again)
	# back to normal from 11:00: the window is within the threshold from 13:00 on, for 6 hours
	detect(DAY + 18 * HOUR)
	assert {r["status"] for r in regressions()} == {"open"}
	detect(DAY + 19 * HOUR)
	resolved = regressions()
	assert {r["status"] for r in resolved} == {"resolved"}
	assert all(r["resolved_at"] == DAY + 19 * HOUR and r["open_key"] is None for r in resolved)


def test_no_flag_without_a_change_and_none_below_the_sample_minimum(site, detection):
	quiet = "/api/method/test.detection.quiet"
	plant(DAY - timedelta(days=8), 8 * 24 + 12, 300)
	# one request every other hour: 84 in the baseline's week, below baseline_min_samples (100)
	plant(DAY - timedelta(days=8), 8 * 24, 1, operation=quiet, every=2, seed=5)
	plant(DAY, 12, 40, slower=3.0, operation=quiet, seed=6)
	detect(DAY + 3 * HOUR)
	detect(DAY + 12 * HOUR)
	assert regressions() == [] and regressions(quiet) == []
	stored = reports.baselines(quiet)
	assert stored["status"] == "insufficient data"
	assert [(b["status"], b["p95_ms"], b["sample_count"]) for b in stored["baselines"]] == [
		("insufficient data", None, 84)
	]
	steady = frappe.get_all(
		BASELINE, filters={"operation": OP}, fields=["status", "sample_count", "period_end"]
	)
	assert steady == [{"status": "ok", "sample_count": 7 * 24 * 300, "period_end": DAY - 3 * HOUR}]


def test_a_pinned_baseline_is_used_when_asked(site, detection, default_settings):
	# a normal week, pinned; then a slower release for nine days: its rolling baseline is slow too
	plant(DAY - timedelta(days=16), 7 * 24, 300)
	pin = baselines.pin("v2.3 deploy", None, config.get_config().detection, DAY - timedelta(days=9))
	assert pin["operations"] == 1 and pin["insufficient_data"] == []
	frappe.db.commit()
	plant(DAY - timedelta(days=9), 9 * 24 + 6, 300, slower=1.4, seed=7)
	detect(DAY + 2 * HOUR)
	detect(DAY + 6 * HOUR)
	assert regressions() == []
	config.update_config({"regression_use_pinned_baseline": True})
	frappe.db.commit()
	frappe.db.sql(
		"update `tabSingles` set value=%s where doctype='Performance Rollup State' and field='detected_until'",
		(DAY + 2 * HOUR,),
	)
	detect(DAY + 6 * HOUR)
	found = frappe.get_all(
		REGRESSION,
		filters={"operation": OP, "metric": "duration_p95"},
		fields=["baseline_kind", "baseline_pin"],
	)
	assert found == [{"baseline_kind": "pinned", "baseline_pin": "v2.3 deploy"}]


def test_an_hour_far_from_its_weeks_is_an_anomaly_once(site, detection):
	spiky = "/api/method/test.detection.spiky"
	hour = DAY + 14 * HOUR
	for week in range(1, 5):
		plant(hour - timedelta(days=7 * week), 1, 100, operation=spiky, seed=week)
	plant(hour - HOUR * 3, 3, 100, operation=spiky, seed=9)
	plant(hour, 1, 500, operation=spiky, seed=10)
	detect(hour + HOUR)  # the job's first run: the last complete hour only
	recorded = frappe.get_all(
		ANOMALY,
		filters={"operation": spiky},
		fields=["metric", "period_start", "direction", "value", "expected", "history", "history_size"],
	)
	assert recorded == [
		{
			"metric": "count",
			"period_start": hour,
			"direction": "high",
			"value": 500.0,
			"expected": 100.0,
			"history": "same hour of the week",
			"history_size": 4,
		}
	]
	# the same hour evaluated again records nothing new
	frappe.db.sql(
		"update `tabSingles` set value=%s where doctype='Performance Rollup State' and field='detected_until'",
		(hour,),
	)
	detect(hour + HOUR)
	assert frappe.db.count(ANOMALY, {"operation": spiky}) == 1


def _detected_regression() -> str:
	"""A regression detected yesterday morning (so that a pin made now covers its baseline's days)."""
	day = frappe.utils.now_datetime().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
	plant(day - timedelta(days=8), 8 * 24 + 6, 300)
	plant(day + 6 * HOUR, 3, 300, slower=1.5, seed=2)
	detect(day + 5 * HOUR)
	detect(day + 9 * HOUR)
	name = next(r["name"] for r in regressions() if r["metric"] == "duration_p95")
	# a fresh snapshot for what follows (SQLite: a stale one cannot write once a server has)
	frappe.db.rollback()
	return name


def test_detection_api_permissions_answers_and_bad_input(site, detection, http, make_user):
	name = _detected_regression()
	allowed = {
		"Administrator": http("Administrator"),
		"System Manager": http(make_user("System Manager")),
		"Performance Manager": http(make_user(PERFORMANCE_MANAGER)),
	}
	refused = {"plain user": http(make_user()), "Guest": http(None)}
	calls = {
		"get_baselines": {},
		"list_regressions": {},
		"list_anomalies": {},
		"pin_baseline": {"name": "refused pin"},
		"acknowledge_regression": {"name": name, "note": "refused"},
	}
	for who, client in refused.items():
		for method, params in calls.items():
			response = client.call(f"{API}.{method}", **params)
			assert response.status_code == 403, (who, method, response.status_code)
			assert "Traceback" not in response.text
	frappe.db.rollback()
	assert frappe.db.get_value(REGRESSION, name, "status") == "open"
	assert not frappe.db.exists(BASELINE, {"pin_name": "refused pin"})
	frappe.db.rollback()
	admin = allowed["Administrator"]
	for who, client in allowed.items():
		listed = client.call(f"{API}.list_regressions", "GET", status="open").json()["message"]
		assert name in [r["name"] for r in listed["regressions"]], who
	answer = admin.call(f"{API}.get_baselines", "GET", operation=OP).json()["message"]
	assert answer["status"] == "ok" and answer["baselines"][0]["baseline_kind"] == "rolling"
	assert admin.call(f"{API}.get_baselines", "GET", operation="/nothing").json()["message"]["status"] == (
		"insufficient data"
	)
	pinned = admin.call(f"{API}.pin_baseline", name="release 7", operations=[OP]).json()["message"]
	assert pinned["operations"] == 1
	again = admin.call(f"{API}.pin_baseline", name="release 7")
	assert again.status_code == 417 and "already pinned" in again.text
	frappe.db.rollback()
	assert frappe.db.count(BASELINE, {"pin_name": "release 7"}) == 1
	frappe.db.rollback()
	acknowledged = admin.call(f"{API}.acknowledge_regression", name=name, note="looking into it")
	assert acknowledged.json()["message"]["status"] == "acknowledged"
	twice = admin.call(f"{API}.acknowledge_regression", name=name, note="again")
	assert twice.status_code == 417 and "only an open regression" in twice.text
	missing = admin.call(f"{API}.acknowledge_regression", name="no-such-regression")
	assert missing.status_code == 404
	bad = [
		("list_regressions", {"status": "broken"}, "status: must be one of"),
		("list_regressions", {"limit": "0"}, "limit: must be a whole number"),
		("list_regressions", {"limit": "501"}, "limit: must be a whole number"),
		("list_regressions", {"operation": "x" * 141}, "operation: at most 140 characters"),
		("list_anomalies", {"since": "yesterday"}, "since: must be a date and time"),
		("list_anomalies", {"since": "2999-01-01 00:00:00"}, "since: must not be in the future"),
		("list_anomalies", {"since": "2026-11-01T00:00:00+01:00"}, "since: give the site's local time"),
		("pin_baseline", {"name": " "}, "name: must not be empty"),
		("pin_baseline", {"name": "a\nb"}, "name: must not contain control characters"),
		("pin_baseline", {"name": "p", "operations": '{"a": 1}'}, "operations: must be a list"),
		("pin_baseline", {"name": "p", "operations": "[1,"}, "operations: starts like a JSON list"),
		("pin_baseline", {"name": "p", "operations": "[" * 100_000}, "operations: nested more than 20"),
		("pin_baseline", {"name": "p", "operations": ",".join(["o"] * 1001)}, "operations: at most 1000"),
		("acknowledge_regression", {"name": name, "note": "n" * 2001}, "note: at most 2000 characters"),
	]
	for method, params, rule in bad:
		response = admin.call(f"{API}.{method}", **params)
		assert response.status_code == 417 and rule in response.text, (method, params, response.text[:300])
	assert not frappe.db.exists(BASELINE, {"pin_name": "p"})
	frappe.db.rollback()
	assert frappe.db.get_value(REGRESSION, name, "note") == "looking into it"


def test_detection_calls_statement_budgets_and_health_section(site, detection):
	from verenigingen_perf.api import detection as api
	from verenigingen_perf.utils.performance import health

	name = _detected_regression()
	api.list_regressions()  # the session's roles, cached
	with query_budget(1):
		listed = api.list_regressions(status="open")
	assert name in [r["name"] for r in listed["regressions"]]
	with query_budget(1):
		api.list_anomalies()
	with query_budget(1):
		assert api.get_baselines(operation=OP)["status"] == "ok"
	with query_budget(2):
		api.get_baselines()
	section = health.system_health(config.get_config())["detection"]
	assert section["open_regressions"] == len(regressions())
	assert section["worst_regressions"][0]["operation"] == OP


def test_old_anomalies_and_long_resolved_regressions_are_pruned(site, detection):
	now = DAY
	for days, operation in ((91, "old"), (89, "kept")):
		frappe.get_doc(
			{
				"doctype": ANOMALY,
				"name": f"ano-{operation}",
				"operation": operation,
				"metric": "count",
				"period_start": now - timedelta(days=days),
			}
		).db_insert()
	for status, days, operation in (
		("resolved", 731, "old"),
		("resolved", 729, "kept"),
		("open", 900, "open"),
	):
		frappe.get_doc(
			{
				"doctype": REGRESSION,
				"operation": operation,
				"metric": "duration_p95",
				"status": status,
				"first_detected": now - timedelta(days=days + 1),
				"resolved_at": now - timedelta(days=days) if status == "resolved" else None,
			}
		).insert(ignore_permissions=True)
	report = job.DetectionReport()
	job.prune(now, config.get_config(), report)
	assert (report.anomalies_deleted, report.regressions_deleted) == (1, 1)
	assert frappe.get_all(ANOMALY, pluck="operation") == ["kept"]
	assert sorted(frappe.get_all(REGRESSION, pluck="operation")) == ["kept", "open"]


def test_a_second_open_record_of_one_operation_and_metric_is_refused_by_the_database(site, detection):
	"""What keeps two evaluations at once from opening a regression twice: the unique open key."""
	from verenigingen_perf.utils.performance import records
	from verenigingen_perf.utils.performance.detection import regressions

	key = regressions.open_key("api", OP, "duration_p95")

	def record():
		return frappe.get_doc(
			{
				"doctype": REGRESSION,
				"name": frappe.generate_hash(length=20),
				"operation": OP,
				"metric": "duration_p95",
				"status": "open",
				"open_key": key,
			}
		)

	assert records.insert_once(record()) is True
	assert records.insert_once(record()) is False
	# the transaction goes on after the refusal
	assert frappe.db.count(REGRESSION, {"open_key": key}) == 1
	frappe.db.commit()


def test_a_regression_that_starts_under_an_open_record_is_not_lost(site, detection):
	plant(DAY - timedelta(days=8), 8 * 24 + 6, 300)
	plant(DAY + 6 * HOUR, 6, 300, slower=1.3, seed=2)
	# a second, larger slowdown while the first record is still open
	plant(DAY + 12 * HOUR, 4, 300, slower=1.3 * 1.5, seed=3)
	detect(DAY + 5 * HOUR)
	detect(DAY + 16 * HOUR)
	p50 = frappe.get_all(
		REGRESSION,
		filters={"operation": OP, "metric": "duration_p50"},
		fields=["name", "status", "first_detected", "resolved_at", "superseded_by", "level_value"],
		order_by="first_detected",
	)
	assert [r["status"] for r in p50] == ["resolved", "open"]
	first, second = p50
	assert first["superseded_by"] == second["name"] and first["resolved_at"] == second["first_detected"]
	assert DAY + 6 * HOUR <= first["first_detected"] < DAY + 9 * HOUR
	assert DAY + 12 * HOUR <= second["first_detected"] < DAY + 15 * HOUR
	# the first record's level is its slowdown's (the window wholly inside it), not the second's
	assert 1.2 < first["level_value"] / 50.0 < 1.45


def test_an_anomaly_of_an_open_regressions_change_is_folded_into_it(site, detection):
	# steady traffic, then every request slower: the p95 anomaly of each hour is the regression's
	plant(DAY - timedelta(days=8), 8 * 24 + 6, 300)
	plant(DAY + 6 * HOUR, 6, 300, slower=1.6, seed=2)
	detect(DAY + 5 * HOUR)
	report = detect(DAY + 12 * HOUR)
	open_p95 = frappe.get_all(
		REGRESSION,
		filters={"operation": OP, "metric": "duration_p95", "status": "open"},
		fields=["first_detected", "folded_anomalies"],
	)
	assert len(open_p95) == 1
	p95_anomalies = frappe.get_all(
		ANOMALY, filters={"operation": OP, "metric": "p95_ms"}, pluck="period_start"
	)
	# only hours before the regression opened can hold a record of their own
	assert all(start < open_p95[0]["first_detected"] for start in p95_anomalies)
	assert open_p95[0]["folded_anomalies"] >= 3 and report.anomalies_folded >= 3


def test_a_baseline_keeps_the_dispersion_and_day_to_day_spread_its_data_showed(site, detection):
	bursty = "/api/method/test.detection.bursty"
	plant(DAY - timedelta(days=8), 8 * 24, 300)
	# one hour in three carries a batch's requests, the others none
	plant(DAY - timedelta(days=8), 8 * 24, 600, operation=bursty, every=3, seed=4)
	detect(DAY + HOUR)
	stored = {
		row["operation"]: row
		for row in frappe.get_all(
			BASELINE,
			filters={"baseline_kind": "rolling"},
			fields=["operation", "count_dispersion", "p50_day_spread", "error_rate_sd"],
		)
	}
	# constant counts vary less than Poisson ones: no dispersion below 1
	assert stored[OP]["count_dispersion"] == 1.0 and stored[OP]["p50_day_spread"] < 0.02
	# an operation idle in most hours has no usual volume: its count is not judged, no dispersion
	assert stored[bursty]["count_dispersion"] == 1.0
