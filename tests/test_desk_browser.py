"""The desk in a real browser (Debian's Chromium driven by Playwright): a Performance Manager logs in,
opens the workspace, the dashboard, an operation, a trace and a member's analysis; every number on the
page equals the API's answer that the page itself received; datetimes are shown in the site's date and
time format, durations in the unit their size calls for, a long operation name in full, and every state
of a page has its title; a user without the role gets none of it; the browser console stays free of
warnings and errors (the desk_page fixture fails a test that leaves one). Screenshots go to
VPERF_SCREENSHOTS (default: a folder under the system's temporary directory), never into the
repository."""

import os
import re
import tempfile
from datetime import datetime, timedelta

import frappe
import pytest

from tests.planting import detail_row, detail_values
from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.utils.performance import buffer, capture, config, dashboard, rollup, timeutil

SCREENSHOTS = os.environ.get("VPERF_SCREENSHOTS") or os.path.join(
	tempfile.gettempdir(), "vperf-desk-screenshots"
)
PERFORMANCE = "verenigingen_perf.api.performance"
DESK = "verenigingen_perf.api.desk"
TIMEOUT_MS = 30_000


# frappe-charts first draws a chart from zeros and puts the data in 700 ms later, animated for 400 ms
CHARTS_DRAWN_MS = 1200
# the longest name an operation can have (arguments.name: 140 characters)
LONG_OPERATION = (
	"verenigingen.verenigingen.doctype.membership_application.membership_application_handlers."
	"recalculate_membership_fees_for_every_chapter"
).ljust(140, "x")


def shoot(page, name: str) -> None:
	"""A screenshot for a person to look at, once the charts show their data."""
	page.wait_for_timeout(CHARTS_DRAWN_MS)
	os.makedirs(SCREENSHOTS, exist_ok=True)
	page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


def figures(page, scope: str = "body") -> dict[str, str]:
	"""Every figure the page shows with its key, as the measured value it carries."""
	return page.eval_on_selector_all(
		f"{scope} .vperf-figure[data-key]",
		"els => Object.fromEntries(els.filter(e => e.dataset.key).map(e => [e.dataset.key, e.dataset.value]))",
	)


def shown(value) -> str:
	"""How the page writes a measured value into data-value (JavaScript's String())."""
	if value is None:
		return ""
	if isinstance(value, float) and value.is_integer():
		return str(int(value))
	return str(value)


def desk_route(page, route: str | list, answer_of: str | None = None):
	"""Open a desk route in the running desk (Frappe's router: /app on v15, /desk on v16); with
	`answer_of`, return the JSON answer of that API call the page made while opening."""
	if answer_of is None:
		page.evaluate("route => frappe.set_route(route)", route)
		return None
	with page.expect_response(lambda r: answer_of in r.url and r.status == 200, timeout=TIMEOUT_MS) as info:
		page.evaluate("route => frappe.set_route(route)", route)
	return info.value.json()["message"]


def reopen(page, route: list, answer_of: str):
	"""A page opened again with other route options: by way of another page, since Frappe v15's router
	re-routes only when the path changes (opening the page it shows with new options does nothing)."""
	page.evaluate("() => frappe.set_route('performance-dashboard')")
	page.wait_for_function("() => frappe.get_route()[0] === 'performance-dashboard'", timeout=TIMEOUT_MS)
	return desk_route(page, route, answer_of=answer_of)


@pytest.fixture
def site_formats(site):
	"""System Settings' date and time formats (the ones Frappe shows every user) set to ones a site
	does not start with, put back after; yields them as strftime formats."""
	started = frappe.utils.now_datetime()
	settings = frappe.get_single("System Settings")
	before = {"date_format": settings.date_format, "time_format": settings.time_format}
	settings.update({"date_format": "dd.mm.yyyy", "time_format": "HH:mm"})
	settings.save(ignore_permissions=True)
	frappe.db.commit()
	yield "%d.%m.%Y %H:%M"
	settings = frappe.get_single("System Settings")
	settings.update(before)
	settings.save(ignore_permissions=True)
	# the framework's change log of the two saves
	frappe.db.delete("Version", {"ref_doctype": "System Settings", "creation": (">=", started)})
	frappe.db.commit()


def as_shown(stored: str, strftime_format: str) -> str:
	"""A stored datetime ("2026-12-07 06:00:00.123456", the system's time zone, which the test users
	share) as the desk must show it."""
	return datetime.strptime(stored[:19], "%Y-%m-%d %H:%M:%S").strftime(strftime_format)


def shown_datetimes(page, scope: str) -> list[tuple[str, str]]:
	"""Every datetime the page shows in `scope`: (the stored value, the text shown)."""
	return page.eval_on_selector_all(
		f"{scope} .vperf-datetime", "els => els.map(e => [e.dataset.value, e.textContent])"
	)


def page_state(page, name: str) -> dict[str, str]:
	"""What a desk page says about itself: its title (the page head's on Frappe v15, and the
	browser tab's), its indicator."""
	return page.evaluate(
		"""name => {
			const p = frappe.pages[name].page;
			const indicator = p.indicator.hasClass("hide") ? "" : p.indicator.text().trim();
			return {title: p.title, document_title: document.title, indicator};
		}""",
		name,
	)


@pytest.fixture
def planted(site, clean_slate, default_settings):
	"""Two operations over the last two hours, one request with a job it enqueued (a trace), folded
	into the aggregates; the dashboard cache outlives the test so every call sees one moment."""
	config.update_config({"dashboard_cache_ttl_s": 3600})
	now = frappe.utils.now_datetime()
	hour = timeutil.floor_hour(now) - timedelta(hours=1)
	rows = []
	trace_id, request_span = capture.new_id(), capture.new_id()
	for i in range(60):
		operation = "browser.slow" if i % 2 else "browser.fast"
		# over the last three hours, so the series have more than one point to draw
		moment = hour - timedelta(hours=i % 3) + timedelta(seconds=i * 30)
		values = detail_values(
			operation,
			timeutil.format_datetime(moment),
			float(i * 10 if i % 2 else i),
			query_count=3,
			db_time_ms=1.0,
			status="error" if i == 59 else "ok",
			http_status=500 if i == 59 else 200,
			trace_id=trace_id if i == 59 else capture.new_id(),
		)
		rows.append(detail_row(values, request_span if i == 59 else None))
	job_start = timeutil.format_datetime(
		hour - timedelta(hours=59 % 3) + timedelta(seconds=59 * 30, milliseconds=200)
	)
	job = {
		**values,
		"operation": "browser.job",
		"operation_type": "job",
		"started_at": job_start,
		"duration_ms": 250.0,
		"query_count": 12,
		"status": "ok",
		"http_status": 0,
		"parent_span": request_span,
	}
	rows.append(detail_row(job))
	buffer.insert_rows(rows)
	frappe.db.commit()
	rollup.run_rollup(now=timeutil.floor_hour(now) + timedelta(minutes=30))
	dashboard.clear_dashboard_cache()
	frappe.db.commit()
	return {"trace_id": trace_id}


def test_a_performance_manager_logs_in_and_sees_the_workspace_cards(
	site, planted, make_user, desk_login, http
):
	user = make_user(PERFORMANCE_MANAGER)
	desk = desk_login(user)
	page = desk.page
	desk_route(page, "performance")
	# Frappe's number card widgets, each showing its number once its method answered
	page.wait_for_function(
		"() => document.querySelectorAll('.number-widget-box .number').length >= 6", timeout=TIMEOUT_MS
	)
	page.wait_for_selector(".dashboard-widget-box svg", timeout=TIMEOUT_MS)
	shoot(page, "workspace")
	cards = page.eval_on_selector_all(
		".number-widget-box",
		"els => Object.fromEntries(els.map(e => [e.querySelector('.widget-title').textContent.trim(),"
		" e.querySelector('.number').textContent.trim()]))",
	)
	api = http(user)
	requests = api.call(f"{DESK}.requests_last_hour_card").json()["message"]
	assert cards["Requests, last hour"].replace(",", "") == str(requests["value"])
	p95 = api.call(f"{DESK}.p95_last_hour_card").json()["message"]
	# Frappe's number card shortens what it shows (frappe.utils.shorten_number): to the unit here
	assert float(re.sub(r"[^0-9.]", "", cards["p95 (ms), last hour"])) == pytest.approx(p95["value"], abs=0.5)
	regressions = api.call(f"{DESK}.open_regressions_card").json()["message"]
	assert cards["Open regressions"] == str(regressions["value"])
	assert desk.console_problems == []


def test_the_dashboard_page_shows_the_answer_it_received(site, planted, site_formats, make_user, desk_login):
	desk = desk_login(make_user(PERFORMANCE_MANAGER))
	page = desk.page
	asked = []
	page.on("request", lambda r: asked.append(r.url) if "api.database" in r.url else None)
	data = desk_route(page, "performance-dashboard", answer_of="performance_dashboard_data")
	page.wait_for_selector(".vperf-dashboard [data-section=health]", timeout=TIMEOUT_MS)
	page.wait_for_selector(".vperf-dashboard .vperf-hourly-p svg", timeout=TIMEOUT_MS)
	shoot(page, "dashboard")
	shown_figures = figures(page, ".vperf-dashboard")
	assert shown_figures["health.score"] == shown(data["health"]["score"])
	for component in data["health"]["components"]:
		assert shown_figures[f"health.components.{component['name']}.value"] == shown(component["value"])
	levels = page.eval_on_selector_all(
		".vperf-dashboard [data-section=health] [data-level]", "els => els.map(e => e.dataset.level)"
	)
	assert levels == [data["health"]["level"], *(c["level"] for c in data["health"]["components"])]
	for window, figures_of_window in data["windows"].items():
		for key in ("count", "p50_ms", "p95_ms", "error_rate", "queries_per_operation"):
			assert shown_figures[f"windows.{window}.{key}"] == shown(figures_of_window[key]), (window, key)
	assert data["windows"]["last_24h"]["count"] == 60
	links = page.eval_on_selector_all(
		".vperf-dashboard [data-section=slowest] .vperf-operation-link",
		"els => els.map(e => e.dataset.operation)",
	)
	assert links == [op["operation"] for op in data["slowest_operations_24h"]]
	generated = page.locator(".vperf-dashboard .vperf-generated")
	assert generated.get_attribute("data-generated-at") == data["generated_at"]
	assert generated.get_attribute("data-cached") == ("1" if data["cached"] else "0")
	# datetimes in the site's formats, never as the server stores them (microseconds)
	assert as_shown(data["generated_at"], site_formats) in generated.inner_text()
	assert data["generated_at"][:16] not in generated.inner_text()
	freshness = shown_datetimes(page, ".vperf-dashboard [data-section=storage]")
	moments = ("aggregated_until", "last_drain_at", "last_rollup_at", "last_retention_at")
	stored_moments = [data["freshness"][key] for key in moments if data["freshness"][key]]
	assert [stored for stored, _text in freshness] == stored_moments and stored_moments
	assert all(text == as_shown(stored, site_formats) for stored, text in freshness), freshness
	assert page_state(page, "performance-dashboard")["title"] == "Performance Dashboard"
	# no Database section (nor its call) for a Performance Manager
	assert page.locator("[data-section=database]").count() == 0 and asked == []
	assert desk.console_problems == []


def test_a_system_manager_also_sees_the_database_section(site, planted, desk_login):
	"""Statement shapes reveal the schema: only a System Manager's dashboard asks for them."""
	from verenigingen_perf.utils.performance.database import snapshot
	from verenigingen_perf.utils.performance.schema import DATABASE_SNAPSHOT

	config.update_config({"db_cache_sample_s": 0.1})
	taken = snapshot.take(snapshot.ON_DEMAND)
	frappe.db.commit()
	try:
		# Administrator (a System Manager): on the dev runtime the desk page (/app) of a System Manager
		# made by make_user never answers (seen, not yet explained); the API calls of such users do
		desk = desk_login("Administrator")
		page = desk.page
		with page.expect_response(
			lambda r: "database_health" in r.url and r.status == 200, timeout=TIMEOUT_MS
		) as info:
			desk_route(page, "performance-dashboard")
		db = info.value.json()["message"]
		page.wait_for_selector(".vperf-dashboard [data-section=database]", timeout=TIMEOUT_MS)
		shoot(page, "dashboard-database")
		shown_figures = figures(page, "[data-section=database]")
		assert db["snapshot"] == taken["name"]
		for key in ("tables", "statements", "cache_hit_ratio"):
			assert shown_figures[f"database.{key}"] == shown(db[key]), key
		assert shown_figures["database.long_running"] == str(len(db["long_running"]))
		actions = page.eval_on_selector_all(
			"[data-section=database] .vperf-action", "els => els.map(e => e.textContent)"
		)
		assert actions == [r["action"] for r in db["recommendations"]]
		assert desk.console_problems == []
	finally:
		frappe.db.delete(DATABASE_SNAPSHOT, {"name": taken["name"]})
		frappe.db.commit()


def test_an_operation_and_its_trace_from_the_dashboard(site, planted, site_formats, make_user, desk_login):
	desk = desk_login(make_user(PERFORMANCE_MANAGER))
	page = desk.page
	desk_route(page, "performance-dashboard", answer_of="performance_dashboard_data")
	page.wait_for_selector(
		".vperf-dashboard [data-section=slowest] .vperf-operation-link", timeout=TIMEOUT_MS
	)
	with page.expect_response(
		lambda r: "operation_detail" in r.url and r.status == 200, timeout=TIMEOUT_MS
	) as info:
		page.click(
			".vperf-dashboard [data-section=slowest] .vperf-operation-link[data-operation='browser.slow']"
		)
	view = info.value.json()["message"]
	page.wait_for_selector(".vperf-operation [data-section=slow_rows]", timeout=TIMEOUT_MS)
	page.wait_for_selector(".vperf-operation .vperf-hourly-p svg", timeout=TIMEOUT_MS)
	shoot(page, "operation")
	assert view["operation"] == "browser.slow" and view["last_7d"]["count"] == 30
	shown_figures = figures(page, ".vperf-operation")
	for key in ("count", "p50_ms", "p95_ms", "p99_ms", "errors", "queries_per_call"):
		assert shown_figures[f"last_7d.{key}"] == shown(view["last_7d"][key]), key
	durations = page.eval_on_selector_all(
		".vperf-operation [data-section=slow_rows] [data-key='slow_rows.duration_ms']",
		"els => els.map(e => e.dataset.value)",
	)
	assert durations == [shown(r["duration_ms"]) for r in view["slow_rows"]]
	started = shown_datetimes(page, ".vperf-operation [data-section=slow_rows]")
	assert [stored for stored, _text in started] == [r["started_at"] for r in view["slow_rows"]]
	assert all(text == as_shown(stored, site_formats) for stored, text in started), started
	assert "operation=browser.slow" in page.url
	assert page_state(page, "performance-operation")["title"] == "browser.slow"

	trace_id = planted["trace_id"]
	[row] = [r for r in view["slow_rows"] if r["trace_id"] == trace_id]
	with page.expect_response(
		lambda r: "trace_detail" in r.url and r.status == 200, timeout=TIMEOUT_MS
	) as info:
		page.click(f".vperf-operation .vperf-trace-link[data-trace='{row['trace_id']}']")
	trace = info.value.json()["message"]
	page.wait_for_selector(".vperf-trace .vperf-waterfall", timeout=TIMEOUT_MS)
	shoot(page, "trace")
	spans = page.eval_on_selector_all(
		".vperf-trace .vperf-span", "els => els.map(e => [e.dataset.span, Number(e.dataset.depth)])"
	)
	assert spans == [[s["span_id"], s["depth"]] for s in trace["spans"]]
	assert [s["operation"] for s in trace["spans"]] == ["browser.slow", "browser.job"]
	statements = page.eval_on_selector_all(
		".vperf-trace [data-key='span.query_count']", "els => els.map(e => e.dataset.value)"
	)
	assert statements == ["3", "12"]
	summary = page.locator(".vperf-trace .vperf-trace-summary")
	assert as_shown(trace["started_at"], site_formats) in summary.inner_text()
	assert page_state(page, "performance-trace")["title"] == f"Trace {trace_id}"
	assert desk.console_problems == []


def test_the_shared_duration_helper_picks_the_unit_by_size(site, make_user, desk_login):
	desk = desk_login(make_user(PERFORMANCE_MANAGER))
	shown_durations = desk.page.evaluate(
		"values => values.map(v => verenigingen_perf.desk.duration(v))",
		[0, 0.25, 95, 1500, 95_000, 7_200_000],
	)
	assert shown_durations == ["0 ms", "250 µs", "95 ms", "1.5 s", "1.58 min", "2 h"]


def test_every_state_of_the_pages_has_a_title_and_a_long_operation_shows_in_full(
	site, clean_slate, make_user, desk_login
):
	desk = desk_login(make_user(PERFORMANCE_MANAGER))
	page = desk.page
	# no data yet
	dashboard.clear_dashboard_cache()
	data = desk_route(page, "performance-dashboard", answer_of="performance_dashboard_data")
	page.wait_for_selector(".vperf-dashboard [data-section=health]", timeout=TIMEOUT_MS)
	assert data["windows"]["last_24h"]["count"] == 0
	assert page_state(page, "performance-dashboard")["title"] == "Performance Dashboard"
	# no operation chosen yet, then one never measured
	desk_route(page, "performance-operation")
	page.wait_for_selector(".vperf-operation", timeout=TIMEOUT_MS)
	assert page_state(page, "performance-operation")["title"] == "Performance Operation"
	reopen(
		page, ["performance-operation", {"operation": "desk.never.measured"}], answer_of="operation_detail"
	)
	page.wait_for_selector(".vperf-operation [data-section=not-measured]", timeout=TIMEOUT_MS)
	shoot(page, "operation-not-measured")
	assert page_state(page, "performance-operation") == {
		"title": "desk.never.measured",
		"document_title": "desk.never.measured",
		"indicator": "Not measured",
	}
	# no trace chosen yet, then one never stored
	desk_route(page, "performance-trace")
	page.wait_for_selector(".vperf-trace", timeout=TIMEOUT_MS)
	assert page_state(page, "performance-trace")["title"] == "Performance Trace"
	unknown_trace = capture.new_id()
	reopen(page, ["performance-trace", {"trace_id": unknown_trace}], answer_of="trace_detail")
	page.wait_for_selector(".vperf-trace [data-section=not-found]", timeout=TIMEOUT_MS)
	assert page_state(page, "performance-trace") == {
		"title": f"Trace {unknown_trace}",
		"document_title": f"Trace {unknown_trace}",
		"indicator": "Not found",
	}

	# an operation with the longest possible name, measured
	hour = timeutil.floor_hour(frappe.utils.now_datetime()) - timedelta(hours=1)
	buffer.insert_rows(
		[
			detail_row(
				detail_values(LONG_OPERATION, timeutil.format_datetime(hour + timedelta(minutes=i)), 40.0 + i)
			)
			for i in range(5)
		]
	)
	frappe.db.commit()
	rollup.run_rollup(now=hour + timedelta(hours=1, minutes=30))
	frappe.db.commit()
	view = reopen(
		page, ["performance-operation", {"operation": LONG_OPERATION}], answer_of="operation_detail"
	)
	page.wait_for_selector(".vperf-operation [data-section=last_7d]", timeout=TIMEOUT_MS)
	shoot(page, "operation-long-name")
	assert view["measured"] and len(LONG_OPERATION) == 140
	field = page.locator("[data-page-route='performance-operation'] input[data-fieldname=operation]")
	assert field.input_value() == LONG_OPERATION and field.get_attribute("title") == LONG_OPERATION
	# the whole name fits in the field: nothing scrolled out of sight
	assert field.evaluate("input => input.scrollWidth <= input.clientWidth"), field.evaluate(
		"input => [input.scrollWidth, input.clientWidth]"
	)
	state = page_state(page, "performance-operation")
	assert state["title"] == state["document_title"] == LONG_OPERATION and state["indicator"] == ""
	assert desk.console_problems == []


def test_a_member_is_analysed_from_its_form(site, member_settings, make_user, desk_login):
	"""A member with more chapter memberships than the N+1 threshold: its form loads one chapter title
	per membership, the N+1 shape the dialog must show."""
	from faker import Faker

	from verenigingen_perf.testing import members as member_records

	fake = Faker()
	Faker.seed(15)
	repeats = config.get_config().analysis.n_plus_one_min_repeats
	chapters = member_records.make_chapters(member_settings, repeats + 2, fake)
	member = member_records.make_member(member_settings, fake, chapters, repeats + 1)
	frappe.db.commit()
	user = make_user(PERFORMANCE_MANAGER, member_settings.reader_role)
	try:
		_analyse_member(desk_login(user), member_settings.member, member)
	finally:
		frappe.delete_doc(member_settings.member, member, force=True, ignore_permissions=True)
		for chapter in chapters:
			frappe.delete_doc(member_settings.chapter, chapter, force=True, ignore_permissions=True)
		frappe.db.commit()


def _analyse_member(desk, doctype: str, member: str) -> None:
	page = desk.page
	page.evaluate("args => frappe.set_route('Form', args[0], args[1])", [doctype, member])
	button = page.locator("button", has_text="Analyse performance")
	button.wait_for(timeout=TIMEOUT_MS)
	with page.expect_response(
		lambda r: "comprehensive_member_analysis" in r.url and r.status == 200, timeout=TIMEOUT_MS
	) as info:
		button.click()
	analysis = info.value.json()["message"]["measurement"]
	page.wait_for_selector(
		"[data-vperf-dialog=member-analysis] [data-section=measurement]", timeout=TIMEOUT_MS
	)
	shoot(page, "member-analysis")
	shown_figures = figures(page, "[data-vperf-dialog=member-analysis]")
	for key in ("statements", "sql_ms", "wall_ms", "memory_peak_kb", "child_rows", "link_values"):
		assert shown_figures[f"measurement.{key}"] == shown(analysis[key]), key
	repeated = page.eval_on_selector_all(
		"[data-vperf-dialog=member-analysis] [data-key='repeated_shapes.count']",
		"els => els.map(e => e.dataset.value)",
	)
	assert analysis["repeated_shapes"], "the memberships' chapter titles are an N+1 shape"
	assert repeated == [shown(s["count"]) for s in analysis["repeated_shapes"]]
	assert desk.console_problems == []


def test_a_user_without_the_role_gets_neither_pages_nor_data(site, planted, make_user, desk_login):
	desk = desk_login(make_user("Desk User"))
	page = desk.page
	answers = []
	page.on(
		"response", lambda r: answers.append((r.url, r.status)) if "verenigingen_perf.api" in r.url else None
	)
	for route in ("performance-dashboard", "performance-operation", "performance-trace"):
		desk_route(page, route)
		page.wait_for_timeout(1500)
		assert page.locator(".vperf-dashboard, .vperf-operation, .vperf-trace").count() == 0
	shoot(page, "no-role")
	# the pages never loaded, so they asked for nothing; asking directly is refused
	assert answers == []
	status = page.evaluate(
		"method => fetch('/api/method/' + method, {headers: {'X-Frappe-CSRF-Token': frappe.csrf_token}})"
		".then(r => r.status)",
		f"{PERFORMANCE}.performance_dashboard_data",
	)
	assert status == 403
	assert page.evaluate("() => frappe.boot.verenigingen_perf === undefined")
	# the console problems this test provoked: the framework refusing each page, and the refused
	# call; nothing else (the desk also logs the server's traceback of a refusal where System
	# Settings allow error tracebacks, as the dev site does)
	desk.expect_console_problem("desk_page.getpage")
	desk.expect_console_problem("Traceback", required=False)
	desk.expect_console_problem("performance_dashboard_data")
	assert desk.console_problems == []


def test_the_settings_form_has_typed_inputs_and_a_change_overrides_only_that_setting(
	site, default_settings, desk_login
):
	"""Performance Settings in the desk: numbers in number fields, switches as checkboxes, every field
	showing the value in effect; changing one field and saving overrides that setting alone."""
	in_effect = config.flat_values(config.get_config())
	# Administrator: the desk of a System Manager made by make_user does not load on the dev runtime
	# (see test_a_system_manager_also_sees_the_database_section)
	desk = desk_login("Administrator")
	page = desk.page
	page.evaluate("() => frappe.set_route('Form', 'Performance Settings')")
	control = "[data-fieldname='{}']"
	field_input = "input[data-fieldname='{}']"
	page.wait_for_selector(field_input.format("buffer_max_entries"), timeout=TIMEOUT_MS)
	fieldtypes = page.eval_on_selector_all(
		"[data-fieldname][data-fieldtype]",
		"els => Object.fromEntries(els.map(e => [e.dataset.fieldname, e.dataset.fieldtype]))",
	)
	for key, setting in config.SETTINGS.items():
		assert fieldtypes.get(key) == config.field_type(setting), key
	assert page.locator(field_input.format("monitoring_enabled")).get_attribute("type") == "checkbox"
	assert page.is_checked(field_input.format("monitoring_enabled")) is in_effect["monitoring_enabled"]
	assert not page.is_visible(control.format(config.OVERRIDDEN_FIELD))
	shown_in_form = page.evaluate(
		"keys => keys.map(k => cur_frm.doc[k])", ["buffer_max_entries", "sampling_rate"]
	)
	assert shown_in_form == [in_effect["buffer_max_entries"], in_effect["sampling_rate"]]
	shoot(page, "performance-settings")

	changed = in_effect["buffer_max_entries"] + 1
	field = page.locator(field_input.format("buffer_max_entries"))
	field.fill(str(changed))
	field.press("Tab")
	page.wait_for_function(f"() => cur_frm.doc.buffer_max_entries === {changed}", timeout=TIMEOUT_MS)
	with page.expect_response(lambda r: "savedocs" in r.url and r.status == 200, timeout=TIMEOUT_MS):
		page.evaluate("() => cur_frm.save()")
	frappe.db.rollback()
	config.clear_config_cache()
	assert config.get_config().overrides == {"buffer_max_entries": changed}
	assert desk.console_problems == []
