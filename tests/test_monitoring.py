"""Meta-monitoring: the monitor's own signals, their history, the heartbeat, and the health score's trust."""

import time

import frappe
import pytest

from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.utils.performance import buffer, capture, config, health, job_reports, monitoring
from verenigingen_perf.utils.performance.schema import MONITOR_SAMPLE

API = "verenigingen_perf.api.monitoring"


def jobs_on_time() -> None:
	for job in ("drain", "rollup", "retention", "monitor", "detection", "alerts"):
		job_reports.record(job, {"status": "ok"})


def signal(answer: dict, name: str) -> dict:
	return next(s for s in answer["signals"] if s["name"] == name)


@pytest.fixture
def quiet_buffer(clean_slate):
	buffer.drain()
	buffer.redis_client().delete(buffer.buffer_key())
	jobs_on_time()
	yield
	buffer.redis_client().delete(buffer.buffer_key())
	jobs_on_time()


def push_old_measurement(seconds_ago: float) -> None:
	entry = {
		"name": capture.new_id(),
		"operation": "test.old",
		"operation_type": "custom",
		"started_at": time.time() - seconds_ago,
		"status": "ok",
	}
	buffer.add(entry, config.get_config().monitoring)
	buffer.flush()


def test_a_sample_is_recorded_with_history_and_counts_what_was_dropped(site, quiet_buffer):
	config.update_config({"buffer_max_entries": 3})
	frappe.db.commit()
	monitoring.record_sample(config.get_config())
	for _ in range(5):
		push_old_measurement(1)
	sample = monitoring.record_sample(config.get_config())
	assert sample["dropped"] == 2 and sample["loss_rate"] > 0
	assert (
		signal({"signals": job_reports.read().by_job["monitor"]["signals"]}, "loss_rate")["level"]
		== "critical"
	)
	rows = frappe.get_all(
		MONITOR_SAMPLE, fields=["name", "dropped", "loss_rate"], order_by="sampled_at desc", limit=2
	)
	assert rows[0]["dropped"] == 2
	frappe.db.delete(MONITOR_SAMPLE, {"name": ("in", [r.name for r in rows])})
	frappe.db.commit()


def test_signals_move_when_a_job_stops_or_the_buffer_stalls(site, quiet_buffer):
	cfg = config.get_config()
	assert monitoring.heartbeat_verdict(cfg) == []
	# the drain last ran two hours ago
	job_reports.record("drain", {"status": "ok"}, finished_at=time.time() - 7200)
	live = monitoring.collect(cfg)
	assert live["drain_lag_s"] > cfg.thresholds.job_lag_s.critical
	assert monitoring.heartbeat_verdict(cfg) == ["drain"]
	jobs_on_time()
	# a measurement has waited in the buffer for an hour: the capture-to-drain path is stuck
	push_old_measurement(3600)
	assert monitoring.collect(cfg)["buffer_age_s"] >= 3600
	assert monitoring.heartbeat_verdict(cfg) == ["capture"]


def test_a_critical_monitor_caps_the_health_verdict(site, quiet_buffer):
	report = {
		"level": "healthy",
		"message": "healthy: the weakest component is error_rate (healthy)",
		"score": 99.0,
	}
	failing = {"trusted": False, "signals": [{"name": "loss_rate", "level": "critical"}]}
	capped = health.with_trust(report, failing)
	assert (capped["level"], capped["score"]) == ("warning", 99.0)
	assert "not trusted" in capped["message"] and "loss_rate" in capped["message"]
	assert health.with_trust(report, {"trusted": True, "signals": []})["level"] == "healthy"


def test_the_health_check_and_dashboard_carry_the_monitoring_section(site, quiet_buffer, http):
	monitoring.record_sample(config.get_config())
	answer = (
		http("Administrator").call("verenigingen_perf.api.performance.quick_health_check").json()["message"]
	)
	assert answer["system"]["monitoring"]["level"] in ("healthy", "warning", "critical", "no data")
	assert {s["name"] for s in answer["system"]["monitoring"]["signals"]} >= {"drain_job_lag", "capture_cost"}


@pytest.fixture
def heartbeat_token(default_settings):
	token = frappe.generate_hash(length=24)
	doc = frappe.get_single("Performance Settings")
	doc.heartbeat_token = token
	doc.save()
	frappe.db.commit()
	yield token
	doc = frappe.get_single("Performance Settings")
	doc.heartbeat_token = ""
	doc.save()
	frappe.db.commit()


def test_the_heartbeat_needs_a_token_or_a_reader_and_tells_nothing_else(
	site, quiet_buffer, http, make_user, heartbeat_token
):
	guest = http(None)
	url = f"{guest.base_url}/api/method/{API}.heartbeat"
	assert guest.session.get(url, timeout=30).status_code == 403
	assert guest.session.get(url, params={"token": "wrong"}, timeout=30).status_code == 403
	# longer than any token may be (gunicorn refuses a request line past 4 KB before the app sees it)
	assert guest.session.get(url, params={"token": "x" * 1000}, timeout=30).status_code == 403
	fresh = guest.session.get(url, params={"token": heartbeat_token}, timeout=30)
	assert fresh.status_code == 200, fresh.text[:300]
	assert fresh.json()["message"] == {"status": "ok"}
	reader = http(make_user(PERFORMANCE_MANAGER))
	assert reader.session.get(url, timeout=30).status_code == 200
	plain = http(make_user())
	assert plain.session.get(url, timeout=30).status_code == 403
	# the oldest measurement waiting (the first in the buffer) is an hour old: the drain is stuck
	time.sleep(1)  # the server's flusher has pushed what these requests measured
	buffer.redis_client().delete(buffer.buffer_key())
	push_old_measurement(3600)
	stale = guest.session.get(url, params={"token": heartbeat_token}, timeout=30)
	assert stale.status_code == 503
	assert stale.json()["message"] == {"status": "stale", "stale": ["capture"]}


def test_monitoring_status_permissions_and_bad_input(site, quiet_buffer, http, make_user):
	allowed = {
		"Administrator": http("Administrator"),
		"System Manager": http(make_user("System Manager")),
		"Performance Manager": http(make_user(PERFORMANCE_MANAGER)),
	}
	refused = {"plain user": http(make_user()), "Guest": http(None)}
	for who, client in allowed.items():
		response = client.call(f"{API}.monitoring_status", hours=2)
		assert response.status_code == 200, (who, response.text[:300])
		body = response.json()["message"]
		assert {s["name"] for s in body["signals"]} >= {
			"drain_job_lag",
			"buffer_age",
			"loss_rate",
			"capture_cost",
		}
		assert body["history"]["columns"][0] == "sampled_at"
	for who, client in refused.items():
		response = client.call(f"{API}.monitoring_status")
		assert response.status_code == 403, (who, response.status_code)
		assert "Traceback" not in response.text
	for hours in ("0", "169", "1.5", "lots"):
		response = allowed["Administrator"].call(f"{API}.monitoring_status", hours=hours)
		assert response.status_code == 417 and "hours: must be a whole number" in response.text


def test_requests_carry_the_capture_cost(site, http, make_user, default_settings):
	config.update_config({"sampling_rate": 1, "config_refresh_s": 1})
	frappe.db.commit()
	client = http(make_user("System Manager"))
	deadline = time.monotonic() + 30
	while capture.TRACE_HEADER not in client.call("verenigingen_perf.api.testing.run_statements").headers:
		assert time.monotonic() < deadline
		time.sleep(0.3)
	response = client.call("verenigingen_perf.api.testing.run_statements", count=2)
	trace = response.headers[capture.TRACE_HEADER]
	deadline = time.monotonic() + 30
	while not (
		rows := frappe.get_all(
			"Performance Metric", filters={"trace_id": trace}, fields=["capture_us", "duration_ms"]
		)
	):
		assert time.monotonic() < deadline
		buffer.drain()
		time.sleep(0.2)
	# the hooks' own time can exceed the span they measure (a configuration reload in before_request
	# is the app's cost, not the request's), never the whole round trip the client saw
	assert 0 < rows[0]["capture_us"] < response.elapsed.total_seconds() * 1e6


def test_storage_growth_gives_the_days_until_the_budget(site, quiet_buffer, default_settings):
	"""Growth from the sample of a day ago to the sizes the retention job last measured."""
	from datetime import timedelta

	from verenigingen_perf.utils.performance import timeutil

	config.update_config({"storage_budget_mb": 1000})
	frappe.db.commit()
	mb = 2**20
	job_reports.record(
		"retention",
		{
			"status": "ok",
			"storage": [
				{"doctype": "Performance Metric", "rows": 1, "bytes": 300 * mb},
				{"doctype": "Performance Aggregate", "rows": 1, "bytes": 100 * mb},
			],
		},
	)
	day_ago = timeutil.format_datetime(frappe.utils.now_datetime() - timedelta(days=1, minutes=1))
	frappe.get_doc(
		{"doctype": MONITOR_SAMPLE, "name": capture.new_id(), "sampled_at": day_ago, "storage_mb": 300.0}
	).db_insert()
	frappe.db.commit()
	try:
		live = monitoring.collect(config.get_config())
		assert live["storage_mb"] == 400.0
		assert live["storage_growth_mb_per_day"] == pytest.approx(100.0, rel=0.01)
		assert live["storage_days"] == pytest.approx(6.0, rel=0.01)
		assert (
			signal(
				{"signals": [s.__dict__ for s in monitoring.signals(live, config.get_config())]},
				"storage_days",
			)["level"]
			== "critical"
		)
	finally:
		frappe.db.delete(MONITOR_SAMPLE, {"sampled_at": day_ago})
		job_reports.record("retention", {"status": "ok"})
