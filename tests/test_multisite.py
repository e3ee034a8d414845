"""Several sites on one bench: three sites in one sites folder, served by one web server process (chosen
by the Host header), sharing one Redis database and one pool of background workers.

Nothing a site measures, buffers, claims, locks, reports, configures or caches reaches another site, and
each site's scheduled jobs process only that site's data.

App defects these tests found and that are fixed:
- `capture.current_config()` kept one copy of the configuration per process, so for up to
  `config_refresh_s` a request of one site was measured with the settings of the site last read (another
  site's sampling rate, exclusions, buffer bound, even `monitoring_enabled`); it is kept per site now.
- the flusher counted a measurement it could not encode under the site its thread happened to work for
  (or nowhere, in its own thread); it is counted under the site that measured it now.
- the flusher thread slept for the `flush_interval_ms` of the site measured last, so a site with a long
  interval held back the measurements of every other site of the process; it follows the shortest now.
"""

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import frappe
import orjson
import pytest
import requests
from frappe.utils.password import remove_encrypted_password
from vperf_devruntime.pytest_plugin import BenchSite, backend

from tests import planting
from verenigingen_perf.testing.fixtures import bench_mode
from verenigingen_perf.utils.performance import (
	buffer,
	capture,
	config,
	dashboard,
	internal_errors,
	job_reports,
	redis_store,
	retention,
	rollup,
	timeutil,
)
from verenigingen_perf.utils.performance.schema import (
	AGGREGATE,
	ALL_OPERATIONS,
	ANOMALY,
	BASELINE,
	EXPORT_COUNTER,
	METRIC,
	REGRESSION,
	ROLLUP_STATE,
	SETTINGS,
)

pytestmark = pytest.mark.skipif(
	bench_mode(),
	reason="creates sites of its own, which only the dev runtime does (a bench's sites are its operator's)",
)

SITES = 3
TESTING = "verenigingen_perf.api.testing"
DRAIN = "verenigingen_perf.utils.performance.buffer.drain_job"
ROLLUP = "verenigingen_perf.utils.performance.rollup.rollup_job"
RETENTION = "verenigingen_perf.utils.performance.retention.retention_job"
WAIT_S = 60


def wipe_site() -> None:
	"""The site as a fresh install leaves it: no measurements, aggregates, job reports, overrides or Redis
	keys of the app."""
	frappe.db.rollback()
	for doctype in (METRIC, AGGREGATE, BASELINE, REGRESSION, ANOMALY, EXPORT_COUNTER):
		frappe.db.delete(doctype)
	reports = [f"last_{job}" for job in job_reports.JOBS]
	frappe.db.sql(
		f"delete from `tabSingles` where doctype=%s and field in ({', '.join(['%s'] * len(reports))})",
		(ROLLUP_STATE, *reports),
	)
	frappe.db.sql(
		"update `tabSingles` set value=NULL where doctype=%s and field in ('watermark', 'detected_until')",
		(ROLLUP_STATE,),
	)
	rollup.ensure_state_row()
	config.reset_overrides()
	# no metrics token: a test that sets one takes it away again
	remove_encrypted_password(SETTINGS, SETTINGS, "metrics_token")
	frappe.db.set_single_value(SETTINGS, "metrics_token", None)
	frappe.db.commit()
	redis_store.delete_app_keys()
	capture.forget_local_config()


def settle_server(site: BenchSite) -> None:
	"""Wait until the web server's flusher has sent what it measured for `site` in earlier tests (its
	thread sends a request's measurement up to a flush interval after the answer): a request measured now
	reaches the buffer after all of them, so a wipe after this one leaves no late arrival."""
	response = site.http().call(f"{TESTING}.run_statements", count=0)
	trace = response.headers.get(capture.TRACE_HEADER)
	if trace is None:  # the server reads this site's monitoring as off: it measures nothing for it
		return

	def marker_buffered() -> bool:
		raws = buffer.redis_client().lrange(buffer.buffer_key(), 0, -1)
		return any(orjson.loads(raw).get("trace_id") == trace for raw in raws)

	wait_for(lambda: site.run(marker_buffered), f"the server's flush of {site.name}")


@pytest.fixture
def sites(bench_sites: Callable[[int], list[BenchSite]]) -> Iterator[list[BenchSite]]:
	hosted = bench_sites(SITES)
	for site in hosted:
		settle_server(site)
		site.run(wipe_site)
	yield hosted
	for site in hosted:
		site.run(wipe_site)


def entries(operation: str, count: int) -> list[dict[str, Any]]:
	"""Finished measurements as capture hands them to the buffer."""
	return [
		{
			"name": capture.new_id(),
			"operation": operation,
			"operation_type": "custom",
			"started_at": time.time(),
			"duration_ms": 1.0,
			"status": "ok",
			"user": "Administrator",
			"trace_id": capture.new_id(),
		}
		for _ in range(count)
	]


def queue(operation: str, count: int) -> None:
	"""Queue `count` measurements of the current site in this process's flusher (not sent yet)."""
	monitoring = config.get_config().monitoring
	for entry in entries(operation, count):
		buffer.add(entry, monitoring)


def buffered_operations() -> list[str]:
	"""The operations of the measurements these tests queued (the web server's own, of requests of this
	test, share the buffer)."""
	operations = (
		orjson.loads(raw)["operation"] for raw in buffer.redis_client().lrange(buffer.buffer_key(), 0, -1)
	)
	return [operation for operation in operations if operation.startswith("test.multisite.")]


def buffered_job_count() -> int:
	raws = buffer.redis_client().lrange(buffer.buffer_key(), 0, -1)
	return sum(orjson.loads(raw)["operation_type"] == "job" for raw in raws)


def operations_stored() -> set[str]:
	return set(frappe.get_all(METRIC, pluck="operation", distinct=True))


def wait_for(predicate: Callable[[], Any], what: str) -> Any:
	deadline = time.monotonic() + WAIT_S
	while not (result := predicate()):
		if time.monotonic() > deadline:
			pytest.fail(f"{what}: not seen within {WAIT_S}s")
		time.sleep(0.2)
	return result


def test_requests_to_one_process_are_measured_on_the_site_they_asked_for(sites):
	"""Requests to three sites, interleaved, on the one server process (its one flusher thread sends them
	all): every site has exactly its own requests' rows, found by the trace id each answer carried."""
	clients = {site.name: site.http() for site in sites}
	traces: dict[str, set[str]] = {site.name: set() for site in sites}
	for _round in range(4):
		for i, site in enumerate(sites):
			response = clients[site.name].call(f"{TESTING}.run_statements", count=i + 1)
			assert response.status_code == 200, response.text[:300]
			assert response.json()["message"] == i + 1
			# production's sampling rate is 1: every request is measured
			traces[site.name].add(response.headers[capture.TRACE_HEADER])

	def drained_traces(ids: set[str]) -> set[str]:
		buffer.drain()
		frappe.db.commit()
		return set(frappe.get_all(METRIC, filters={"trace_id": ("in", list(ids))}, pluck="trace_id"))

	everyone = set().union(*traces.values())
	for site in sites:
		own = traces[site.name]
		wait_for(
			lambda site=site, own=own: site.run(drained_traces, own) == own, f"the requests of {site.name}"
		)
		assert site.run(drained_traces, everyone) == own


def test_each_site_is_measured_with_its_own_settings_in_one_process(sites):
	"""A process keeps each site's configuration apart: one site's switch-off does not switch off the
	others read right after it (the defect: one copy per process), in this process and on the server."""
	first, second, third = sites
	first.run(config.update_config, {"monitoring_enabled": 0, "config_refresh_s": 1})
	enabled = [site.run(lambda: capture.current_config().monitoring.enabled) for site in sites]
	assert enabled == [False, True, True]
	assert [site.run(lambda: config.get_config().monitoring.enabled) for site in sites] == [False, True, True]

	clients = [site.http() for site in sites]
	probe = f"{TESTING}.run_statements"
	wait_for(
		lambda: capture.TRACE_HEADER not in clients[0].call(probe, count=0).headers,
		f"the server reading {first.name}'s settings",
	)
	# the server has just read the first site's settings; the next sites' requests use their own
	for client in clients[1:]:
		assert capture.TRACE_HEADER in client.call(probe, count=0).headers
	assert capture.TRACE_HEADER not in clients[0].call(probe, count=0).headers
	assert third.run(lambda: config.get_config().monitoring.enabled)
	assert second.run(lambda: capture.current_config().monitoring.enabled)


def test_the_flusher_puts_each_measurement_in_its_own_site_s_buffer(sites):
	"""Measurements of three sites queued in one process and flushed together, from a thread working
	for one of them: each lands in its own site's buffer; an entry that cannot be encoded is dropped and
	counted under the site that measured it, not the one that flushed."""

	class Unprintable:
		def __str__(self) -> str:
			raise ValueError("cannot be shown")

	def queue_bad_entry() -> None:
		bad = {**entries("test.multisite.bad", 1)[0], "operation": Unprintable()}
		buffer.add(bad, config.get_config().monitoring)

	internal_errors.reset_rate_limit()
	operation = {site.name: f"test.multisite.{site.name}.{capture.new_id()}" for site in sites}
	for count, site in enumerate(sites, start=2):
		site.run(queue, operation[site.name], count)
	sites[0].run(queue_bad_entry)
	sites[2].run(buffer.flush)
	for count, site in enumerate(sites, start=2):
		assert site.run(buffered_operations) == [operation[site.name]] * count
	states = [site.run(buffer.state) for site in sites]
	assert [(s.dropped, s.capture_errors) for s in states] == [(1, 1), (0, 0), (0, 0)]
	internal_errors.reset_rate_limit()


def test_one_site_s_full_buffer_or_failing_buffer_costs_only_its_own_measurements(sites):
	"""A site at its buffer bound drops and counts its own surplus only; a site whose buffer Redis refuses
	(here: its key holds a string, so Redis answers WRONGTYPE) loses only its own batch, in the very flush
	that delivers the other sites' measurements."""
	full, healthy, broken = sites
	full.run(config.update_config, {"buffer_max_entries": 5})
	broken.run(lambda: buffer.redis_client().set(buffer.buffer_key(), "not a list"))
	operation = {site.name: f"test.multisite.{site.name}.{capture.new_id()}" for site in sites}
	for site in sites:
		site.run(queue, operation[site.name], 8)
	healthy.run(buffer.flush)
	assert full.run(buffered_operations) == [operation[full.name]] * 5
	assert healthy.run(buffered_operations) == [operation[healthy.name]] * 8
	states = {site.name: site.run(buffer.state) for site in (full, healthy)}
	assert (states[full.name].buffered, states[full.name].dropped) == (5, 3)
	assert (states[healthy.name].buffered, states[healthy.name].dropped) == (8, 0)
	# the refused site's state cannot be read (its buffer is no list): its counter is
	assert broken.run(lambda: int(buffer.redis_client().get(buffer.dropped_key()))) == 8


def test_during_a_redis_outage_each_site_counts_its_own_lost_measurements(sites, redis_outage):
	"""Redis (shared by every site) goes away while this process holds measurements of two sites: each
	site's counter says how many of its own were lost once Redis is back, the third site's says none."""
	operation = {site.name: f"test.multisite.{site.name}.{capture.new_id()}" for site in sites}
	with redis_outage():
		sites[0].run(queue, operation[sites[0].name], 3)
		sites[1].run(queue, operation[sites[1].name], 5)
		assert sites[2].run(buffer.flush) == 0
	# Redis came back empty: the counts are the drops reported since
	sites[2].run(buffer.flush)
	assert [site.run(lambda: buffer.state().dropped) for site in sites] == [3, 5, 0]
	assert [site.run(lambda: buffer.state().buffered) for site in sites] == [0, 0, 0]


def test_drain_claims_locks_reports_settings_and_dashboards_stay_with_their_site(sites):
	first, second, third = sites
	operation = {site.name: f"test.multisite.{site.name}.{capture.new_id()}" for site in sites}
	for site in sites:
		site.run(queue, operation[site.name], 10)
		site.run(buffer.flush)

	# a drain of the first site died holding a claim (an hour ago: stale)
	claim_id = capture.new_id()

	def claim_and_die() -> int:
		claim = buffer.redis_client().register_script(buffer._CLAIM)
		keys = [buffer.buffer_key(), buffer.claim_list_key(claim_id), buffer.claims_key()]
		return len(claim(keys=keys, args=[10, claim_id, time.time() - 3600]))

	assert first.run(claim_and_die) == 10
	second_drain = second.run(buffer.drain)
	assert (second_drain.claims_taken_over, second_drain.rows_inserted) == (0, 10)
	assert first.run(buffer.state).claimed_batches == 1
	first_drain = first.run(buffer.drain)
	assert (first_drain.claims_taken_over, first_drain.rows_inserted) == (1, 10)
	assert first.run(operations_stored) == {operation[first.name]}
	assert second.run(operations_stored) == {operation[second.name]}
	assert third.run(operations_stored) == set()
	assert third.run(buffered_operations) == [operation[third.name]] * 10

	# a job lock of one site is not another's
	def rollups_while_holding_the_lock() -> list[str]:
		with redis_store.exclusive("rollup", 60) as held:
			assert held
			return [site.run(lambda: rollup.run_rollup().status) for site in sites]

	statuses = first.run(rollups_while_holding_the_lock)
	assert statuses[0].startswith("skipped") and statuses[1:] == ["ok", "ok"]

	# job reports
	marker = capture.new_id()
	first.run(job_reports.record, "retention", {"status": "ok", "marker": marker})
	assert first.run(job_reports.read).by_job["retention"]["marker"] == marker
	for site in (second, third):
		assert "retention" not in site.run(job_reports.read).by_job
		assert "retention" not in site.run(job_reports.read_stored)

	# settings: saved, cached and cleared per site
	second.run(config.update_config, {"sampling_rate": 0.25})
	rates = [site.run(lambda: config.get_config().monitoring.sampling_rate) for site in sites]
	assert rates == [1, 0.25, 1]
	first.run(config.clear_config_cache)
	assert second.run(lambda: config.get_config().monitoring.sampling_rate) == 0.25

	# cached dashboards
	def dashboard_was_cached() -> bool:
		return dashboard.cached_dashboard(config.get_config())["cached"]

	assert [site.run(dashboard_was_cached) for site in sites] == [False, False, False]
	third.run(dashboard.clear_dashboard_cache)
	assert [site.run(dashboard_was_cached) for site in sites] == [True, True, False]


def plant_details(operation: str, moment: str, count: int) -> None:
	"""Detail rows of `operation` that started and were ingested at `moment`."""
	rows = [planting.detail_row(planting.detail_values(operation, moment, 5.0)) for _ in range(count)]
	buffer.insert_rows(rows)
	frappe.db.commit()


def stored_count(operation: str) -> int:
	return frappe.db.count(METRIC, {"operation": operation})


def aggregated_operations() -> set[str]:
	return set(frappe.get_all(AGGREGATE, pluck="operation", distinct=True)) - {ALL_OPERATIONS}


def test_background_jobs_of_every_site_run_on_their_own_site_in_one_worker(sites, run_workers):
	"""The drain of two sites, enqueued as the scheduler enqueues it, is run by one worker process (the
	bench's shared workers): each drain moves only its own site's buffer into its own database."""
	operation = {site.name: f"test.multisite.{site.name}.{capture.new_id()}" for site in sites}
	for count, site in enumerate(sites, start=3):
		site.run(queue, operation[site.name], count)
		site.run(buffer.flush)

	def enqueue_drain() -> bool:
		return frappe.get_doc("Scheduled Job Type", {"method": DRAIN}).enqueue(force=True)

	assert [site.run(enqueue_drain) for site in sites[:2]] == [True, True]
	run_workers()
	for count, site in enumerate(sites[:2], start=3):
		assert site.run(operations_stored) == {operation[site.name]}
		assert site.run(stored_count, operation[site.name]) == count
		assert site.run(job_reports.read).by_job["drain"]["rows_inserted"] == count
		# what is buffered now is the measurement of the drain job itself, measured on its own site
		assert operation[site.name] not in site.run(buffered_operations)
		assert site.run(buffered_job_count) == 1
	assert sites[2].run(operations_stored) == set()
	assert sites[2].run(buffered_operations) == [operation[sites[2].name]] * 5
	assert sites[2].run(buffered_job_count) == 0
	assert "drain" not in sites[2].run(job_reports.read).by_job


def test_rollup_and_retention_of_one_site_touch_only_its_data(sites):
	"""Detail rows two days old on every site, kept one day: the rollup of one site folds only its rows,
	and its retention deletes only its own (aggregated) rows."""
	moment = timeutil.format_datetime(frappe.utils.now_datetime() - timedelta(days=2))
	operation = {site.name: f"test.multisite.{site.name}.{capture.new_id()}" for site in sites}
	for site in sites:
		site.run(config.update_config, {"detail_retention_days": 1})
		site.run(plant_details, operation[site.name], moment, 20)
	first, second, third = sites

	first.run_scheduled_job(ROLLUP)
	assert first.run(aggregated_operations) == {operation[first.name]}
	assert first.run(rollup.get_watermark) is not None
	for site in (second, third):
		assert site.run(aggregated_operations) == set()
		assert site.run(rollup.get_watermark) is None

	second.run_scheduled_job(ROLLUP)
	first.run_scheduled_job(RETENTION)
	assert first.run(stored_count, operation[first.name]) == 0
	assert first.run(job_reports.read).by_job["retention"]["status"] == "ok"
	for site in (second, third):
		assert site.run(stored_count, operation[site.name]) == 20
		assert "retention" not in site.run(job_reports.read).by_job
	assert second.run(aggregated_operations) == {operation[second.name]}
	# retention removes details only once they are folded: the site without a rollup keeps them all
	third.run(retention.run_retention)
	assert third.run(stored_count, operation[third.name]) == 20


METRICS = "/api/method/verenigingen_perf.api.export.metrics"


def test_each_site_is_scraped_by_its_host_with_its_own_token(sites):
	"""Prometheus scrapes every site of the bench at the one address, naming the site in the Host header:
	each answers its own series (labelled with its name) to its own metrics token only."""
	moment = timeutil.format_datetime(frappe.utils.now_datetime() - timedelta(hours=3))
	operation = {site.name: f"test.multisite.{site.name}.{capture.new_id()}" for site in sites}
	tokens = {}
	for site in sites:
		site.run(plant_details, operation[site.name], moment, 4)
		site.run_scheduled_job(ROLLUP)
		response = site.http().call("verenigingen_perf.api.export.rotate_metrics_token")
		assert response.status_code == 200, response.text[:300]
		tokens[site.name] = response.json()["message"]["token"]

	def scrape(host: str, token: str) -> requests.Response:
		headers = {"Host": host, "Authorization": f"Bearer {token}"}
		return requests.get(sites[0].base_url + METRICS, headers=headers, timeout=60)

	for site in sites:
		exposition = scrape(site.name, tokens[site.name])
		assert exposition.status_code == 200, exposition.text[:300]
		assert f'site="{site.name}"' in exposition.text
		assert f'operation="{operation[site.name]}"' in exposition.text
		for other in sites:
			if other is not site:
				assert f'site="{other.name}"' not in exposition.text
				assert operation[other.name] not in exposition.text
				assert scrape(site.name, tokens[other.name]).status_code in (401, 403)


def test_the_flusher_flushes_as_often_as_the_most_demanding_site_asks(sites):
	"""One process's flusher serves every site: a site with a long `flush_interval_ms` measured last
	does not hold back the measurements of a site that asked for a short one (the defect: the interval
	of the site measured last governed the thread)."""
	eager, patient, _third = sites
	eager.run(config.update_config, {"flush_interval_ms": 50})
	patient.run(config.update_config, {"flush_interval_ms": 60_000})
	eager.run(queue, f"test.multisite.eager.{capture.new_id()}", 1)
	patient.run(queue, f"test.multisite.patient.{capture.new_id()}", 1)
	assert buffer._flusher.interval_s == 0.05
	eager.run(config.update_config, {"flush_interval_ms": 200})
	eager.run(queue, f"test.multisite.eager.{capture.new_id()}", 1)
	assert buffer._flusher.interval_s == 0.2
	patient.run(buffer.flush)


def test_a_bench_command_given_several_sites_runs_on_each_of_them(sites):
	"""`bench --site all vperf ...` hands the command every site: each answers for itself (the defect:
	only the first site's figures, unnamed, were printed)."""
	names = [site.name for site in sites]
	for i, site in enumerate(sites):
		site.run(queue_and_flush, f"cmd.site{i}", i + 1)
	command = [sys.executable, "-m", "vperf_devruntime", "vperf", "--db", backend()]
	for name in names:
		command += ["--site", name]
	listed = subprocess.run(
		[*command, "status", "--json"], capture_output=True, text=True, check=False, timeout=300
	)
	assert listed.returncode == 0, listed.stderr[-2000:]
	answers = [json.loads(line) for line in listed.stdout.splitlines()]
	assert [a["site"] for a in answers] == names and all(a["signals"] for a in answers)
	drained = subprocess.run([*command, "drain"], capture_output=True, text=True, check=False, timeout=300)
	assert drained.returncode == 0, drained.stderr[-2000:]
	assert [line for line in drained.stdout.splitlines() if line.startswith("== ")] == [
		f"== {n} ==" for n in names
	]
	for i, site in enumerate(sites):
		assert site.run(operations_stored) >= {f"cmd.site{i}"}
		assert not {f"cmd.site{j}" for j in range(len(sites)) if j != i} & site.run(operations_stored)
	# a command that writes one site's file or output refuses several
	refused = subprocess.run(
		[*command, "export-alert-rules"], capture_output=True, text=True, check=False, timeout=300
	)
	assert refused.returncode == 2 and "one site at a time" in refused.stderr


def queue_and_flush(operation: str, count: int) -> None:
	queue(operation, count)
	buffer.flush()
