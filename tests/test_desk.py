"""The desk's data contract: the workspace and its cards and chart, the operation and trace views' API,
the boot information of the member form's action, permissions and bad input."""

import json
from datetime import timedelta

import frappe
import pytest

from tests.planting import detail_values
from verenigingen_perf import boot
from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.utils.performance import buffer, capture, config, dashboard, rollup, timeutil
from verenigingen_perf.utils.performance.schema import ALERT

DESK = "verenigingen_perf.api.desk"
EVALUATION_JOB = "verenigingen_perf.utils.performance.alerts.evaluate.evaluation_job"
DRAIN_JOB = "verenigingen_perf.utils.performance.buffer.drain_job"
MODULE = "Verenigingen Perf"
CARD_METHODS = (
	"health_score_card",
	"requests_last_hour_card",
	"p95_last_hour_card",
	"error_rate_last_hour_card",
	"open_regressions_card",
	"firing_alerts_card",
)


def message(response):
	assert response.status_code == 200, response.text[:500]
	return response.json()["message"]


def plant(rows: list[tuple[str, dict]], fold: bool = True) -> None:
	"""Detail rows (name, values), folded into the aggregates by the real rollup."""
	buffer.insert_rows([buffer.detail_row(name, values["started_at"], values) for name, values in rows])
	frappe.db.commit()
	if fold:
		now = frappe.utils.now_datetime()
		rollup.run_rollup(now=timeutil.floor_hour(now) + timedelta(hours=1, minutes=30))
		frappe.db.commit()


@pytest.fixture
def manager(make_user, http):
	return http(make_user(PERFORMANCE_MANAGER))


def test_the_workspace_cards_chart_and_pages_are_installed_for_the_role(site):
	workspace = frappe.get_doc("Workspace", "Performance")
	assert workspace.module == MODULE and workspace.public
	assert {r.role for r in workspace.roles} == {"System Manager", PERFORMANCE_MANAGER}
	# Frappe's workspace finds a block's widget by the label of its row
	blocks = json.loads(workspace.content)
	shown_cards = [b["data"]["number_card_name"] for b in blocks if b["type"] == "number_card"]
	assert shown_cards == [c.label for c in workspace.number_cards]
	assert [b["data"]["chart_name"] for b in blocks if b["type"] == "chart"] == [
		c.label for c in workspace.charts
	]
	shortcut_blocks = [b["data"]["shortcut_name"] for b in blocks if b["type"] == "shortcut"]
	assert shortcut_blocks == [s.label for s in workspace.shortcuts]
	cards = {c.number_card_name for c in workspace.number_cards}
	assert cards == set(frappe.get_all("Number Card", filters={"module": MODULE}, pluck="name"))
	assert len(cards) == len(CARD_METHODS)
	for card in cards:
		doc = frappe.get_doc("Number Card", card)
		assert doc.type == "Custom" and doc.method.rsplit(".", 1)[1] in CARD_METHODS
		# a Performance Manager may read the card: Frappe checks the card's doctype
		assert doc.document_type == "Performance Aggregate"
	[chart] = workspace.charts
	chart_doc = frappe.get_doc("Dashboard Chart", chart.chart_name)
	assert chart_doc.chart_type == "Custom" and frappe.db.exists("Dashboard Chart Source", chart_doc.source)
	assert PERFORMANCE_MANAGER in {r.role for r in chart_doc.roles}
	# a chart with neither a colour nor colours of its own is handed to frappe-charts as [[]] by
	# Frappe's chart widget, which logs '"" is not a valid color': one colour per dataset (p50, p95)
	assert len(json.loads(chart_doc.custom_options or "{}").get("colors", [])) == 2
	shortcuts = {s.link_to for s in workspace.shortcuts if s.type == "Page"}
	assert shortcuts == {"performance-dashboard", "performance-operation", "performance-trace"}
	for page in shortcuts:
		assert {r.role for r in frappe.get_doc("Page", page).roles} == {"System Manager", PERFORMANCE_MANAGER}
	# the lists a workspace link opens must not be "User Cannot Search" (the desk hides those links)
	for link in workspace.links:
		if link.type == "Link":
			assert not frappe.get_meta(link.link_to).read_only, link.link_to


@pytest.fixture
def site_jobs_paused(clean_slate, scheduled_jobs_paused):
	"""The site's scheduled drain and alert evaluation paused, then a clean slate: a live bench's own
	measurements (the tests' requests among them) and alerts stay out of what the test counts."""
	with scheduled_jobs_paused(DRAIN_JOB, EVALUATION_JOB):
		clean_slate()
		yield


def test_the_cards_and_chart_show_what_the_dashboard_shows(site, manager, site_jobs_paused):
	now = frappe.utils.now_datetime()
	hour = timeutil.floor_hour(now)
	rows = []
	for i in range(40):
		moment = timeutil.format_datetime(hour + timedelta(seconds=i))
		extra = {"status": "error", "http_status": 500} if i < 4 else {}
		rows.append((capture.new_id(), detail_values("desk.cards", moment, float(i + 1), **extra)))
	plant(rows)
	board = message(manager.call("verenigingen_perf.api.performance.performance_dashboard_data"))
	cards = {name: message(manager.call(f"{DESK}.{name}")) for name in CARD_METHODS}
	last_hour = board["windows"]["last_hour"]
	assert last_hour["count"] == 40
	assert cards["requests_last_hour_card"]["value"] == 40
	assert cards["p95_last_hour_card"]["value"] == last_hour["p95_ms"]
	assert cards["error_rate_last_hour_card"]["value"] == pytest.approx(last_hour["error_rate"] * 100)
	assert cards["error_rate_last_hour_card"]["value"] == pytest.approx(10)
	assert cards["health_score_card"] == (
		"No data"
		if board["health"]["score"] is None
		else {**cards["health_score_card"], "value": board["health"]["score"]}
	)
	assert cards["open_regressions_card"]["value"] == board["detection"]["open_regressions"] == 0
	# a live bench's own alerts may be firing: the card counts what the alert records say
	firing = frappe.db.count(ALERT, {"state": "firing", "silenced": 0})
	assert cards["firing_alerts_card"]["value"] == board["alerts"]["firing"] == firing
	chart = message(manager.call(f"{DESK}.last_24_hours_chart", chart_name="Performance Last 24 Hours"))
	measured = [p for p in board["hourly_series"] if p["count"]]
	assert len(chart["labels"]) == len(measured) == 1
	assert chart["datasets"][1]["values"] == [measured[0]["p95_ms"]]


def test_a_card_without_a_measurement_says_so(site, clean_slate, manager):
	dashboard.clear_dashboard_cache()
	assert message(manager.call(f"{DESK}.p95_last_hour_card")) == "No data"
	assert message(manager.call(f"{DESK}.requests_last_hour_card"))["value"] == 0


def test_the_operation_view_answers_the_aggregates_and_the_slowest_rows(site, clean_slate, manager):
	now = frappe.utils.now_datetime()
	hour = timeutil.floor_hour(now) - timedelta(hours=2)
	durations = [float(d) for d in range(1, 101)]
	rows = [
		(
			capture.new_id(),
			detail_values("desk.operation", timeutil.format_datetime(hour + timedelta(seconds=i)), d),
		)
		for i, d in enumerate(durations)
	]
	rows.append((capture.new_id(), detail_values("desk.other", timeutil.format_datetime(hour), 5000.0)))
	plant(rows)
	config.update_config({"desk_slow_rows": 3})
	frappe.db.commit()
	view = message(manager.call(f"{DESK}.operation_detail", operation="desk.operation"))
	assert view["measured"] and view["operation_types"] == ["api"]
	totals = view["last_7d"]
	assert totals["count"] == 100 and totals["errors"] == 0
	assert totals["p95_ms"] == pytest.approx(95, rel=0.011)
	assert totals["p50_ms"] == pytest.approx(50, rel=0.011)
	assert totals["queries_per_call"] == 2
	assert len(view["hourly_series"]) == 7 * 24 and len(view["daily_series"]) == 90
	assert sum(p["count"] for p in view["hourly_series"]) == 100
	assert sum(p["count"] for p in view["daily_series"]) == 100
	[point] = [p for p in view["hourly_series"] if p["count"]]
	assert point["period_start"] == timeutil.format_datetime(hour)
	# the operation's own slowest rows, slowest first, as many as configured: not the other one's
	assert [r["duration_ms"] for r in view["slow_rows"]] == [100.0, 99.0, 98.0]
	assert all(r["trace_id"] for r in view["slow_rows"])
	assert view["baselines"] == [] and view["regressions"] == []


def test_an_operation_never_measured_is_answered_as_such(site, clean_slate, manager):
	view = message(manager.call(f"{DESK}.operation_detail", operation="desk.never"))
	assert view["measured"] is False and view["last_7d"]["count"] == 0
	assert view["last_7d"]["p95_ms"] is None
	assert all(p["p95_ms"] is None for p in view["hourly_series"])


def test_the_trace_view_of_a_request_that_enqueued_a_job(
	site, clean_slate, http, manager, run_background_jobs
):
	"""A real request enqueues a real job; the trace view shows both, the job under the request."""
	from tests.test_capture import rows_of_trace, wait_for_server_config

	config.update_config({"sampling_rate": 1, "config_refresh_s": 1})
	frappe.db.commit()
	capture.forget_local_config()
	# the probe endpoints are System Manager's (api/testing.py)
	admin = http("Administrator")
	wait_for_server_config(admin, lambda r: capture.TRACE_HEADER in r.headers, "sampling 1")
	trace_id = admin.call("verenigingen_perf.api.testing.enqueue_probe", statements=3).headers.get(
		capture.TRACE_HEADER
	)
	assert trace_id
	run_background_jobs()
	rows_of_trace(trace_id, expected=2)
	view = message(manager.call(f"{DESK}.trace_detail", trace_id=trace_id))
	assert view["found"] and view["span_count"] == 2 and not view["truncated"]
	request, job = view["spans"]
	assert (request["operation_type"], request["depth"], request["offset_ms"]) == ("api", 0, 0)
	assert (job["operation_type"], job["depth"]) == ("job", 1)
	assert job["parent_span"] == request["span_id"] and not job["orphan"]
	assert job["offset_ms"] >= 0 and job["query_count"] >= 3
	assert view["statements"] == request["query_count"] + job["query_count"]


def test_a_trace_is_cut_at_the_configured_number_of_spans(site, clean_slate, manager):
	trace_id = capture.new_id()
	start = timeutil.floor_hour(frappe.utils.now_datetime())
	root = capture.new_id()
	rows = [(root, detail_values("desk.root", timeutil.format_datetime(start), 50.0, trace_id=trace_id))]
	for i in range(14):
		moment = timeutil.format_datetime(start + timedelta(milliseconds=i + 1))
		rows.append(
			(capture.new_id(), detail_values("desk.child", moment, 1.0, trace_id=trace_id, parent_span=root))
		)
	plant(rows, fold=False)
	config.update_config({"desk_trace_max_spans": 10})
	frappe.db.commit()
	view = message(manager.call(f"{DESK}.trace_detail", trace_id=trace_id))
	assert view["truncated"] and view["span_count"] == 10 and view["max_spans"] == 10
	assert view["spans"][0]["span_id"] == root
	assert [s["offset_ms"] for s in view["spans"][1:]] == [float(i + 1) for i in range(9)]


def test_an_unknown_trace_is_not_found(site, clean_slate, manager):
	view = message(manager.call(f"{DESK}.trace_detail", trace_id=capture.new_id()))
	assert view == {**view, "found": False, "spans": [], "span_count": 0}


@pytest.mark.parametrize(
	("method", "params", "named"),
	[
		("trace_detail", {}, "trace_id"),
		("trace_detail", {"trace_id": "not-hex!"}, "trace_id"),
		("trace_detail", {"trace_id": "a" * 33}, "trace_id"),
		("operation_detail", {}, "operation"),
		("operation_detail", {"operation": "x" * 141}, "operation"),
		("operation_detail", {"operation": "two\nlines"}, "operation"),
	],
)
def test_bad_input_is_refused_naming_the_argument(site, manager, method, params, named):
	response = manager.call(f"{DESK}.{method}", **params)
	assert response.status_code == 417
	assert named in response.text and "Traceback" not in response.text


@pytest.mark.parametrize("method", ["operation_detail", "trace_detail", *CARD_METHODS, "last_24_hours_chart"])
def test_only_the_role_may_call_the_desk_methods(site, http, make_user, method):
	params = {"operation": "x", "trace_id": "abcdef0123456789"}
	for client in (http(None), http(make_user("Desk User"))):
		response = client.call(f"{DESK}.{method}", **params)
		assert response.status_code == 403, (client.user, response.status_code)
		assert "Traceback" not in response.text


def test_the_boot_tells_the_member_doctype_only_to_readers(site, make_user, member_settings):
	readers = (make_user(PERFORMANCE_MANAGER), "Administrator")
	others = (make_user("Desk User"), "Guest")
	try:
		for user in (*readers, *others):
			frappe.set_user(user)
			bootinfo = frappe._dict()
			boot.boot_session(bootinfo)
			if user in readers:
				assert bootinfo.verenigingen_perf == {"member_doctype": member_settings.member}
			else:
				assert "verenigingen_perf" not in bootinfo
	finally:
		frappe.set_user("Administrator")
