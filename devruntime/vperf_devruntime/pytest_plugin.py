"""The dev runtime's side of the test kit (verenigingen_perf.testing.fixtures): the site of the backend
named by DEVRUNTIME_DB (sqlite, mariadb or postgres), created or migrated, and its real web server
started on 127.0.0.1 for the session; and the fixtures only this runtime can offer, skipped on a bench.

Several sites (`bench_sites(n)`, `run_workers`): n more SQLite sites in the dev runtime's sites folder,
served by the same web server (by Host), sharing its Redis and one burst worker. `redis_outage`: the
runtime's own Redis stopped and started again.

On a bench this plugin provides nothing (the kit connects to the bench's site) and imports nothing of
the runtime layer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from verenigingen_perf.testing.fixtures import HttpClient, bench_mode


def backend() -> str:
	return os.environ.get("DEVRUNTIME_DB", "sqlite")


def _runtime_command(*args: str) -> list[str]:
	return [sys.executable, "-m", "vperf_devruntime", *args, "--db", backend()]


def _burst_worker(site_env: dict[str, str]) -> None:
	"""Every queued job run to completion by one burst worker of the runtime (each on its own site)."""
	subprocess.run(
		_runtime_command("worker"),
		env={**os.environ, **site_env},
		check=True,
		capture_output=True,
		timeout=300,
	)


class DevRuntimeSite:
	"""The dev runtime's site (a SiteProvider of the kit)."""

	def environment(self) -> dict[str, str]:
		out = subprocess.run(_runtime_command("site"), check=True, capture_output=True, text=True).stdout
		return json.loads(out[out.index("{") :])

	def init_site(self) -> None:
		import frappe

		frappe.init(force=True)

	@contextmanager
	def serve(self, site_env: dict[str, str]) -> Iterator[str]:
		from vperf_devruntime.services import free_port

		port = free_port()
		log_path = os.path.join(site_env["DEVRUNTIME_SITE_PATH"], "logs", "web.log")
		os.makedirs(os.path.dirname(log_path), exist_ok=True)
		with open(log_path, "ab") as log:
			proc = subprocess.Popen(
				[*_runtime_command("serve"), "--port", str(port)],
				env={**os.environ, **site_env},
				stdout=log,
				stderr=subprocess.STDOUT,
			)
		url = f"http://127.0.0.1:{port}"
		try:
			_wait_until_serving(url, proc)
			yield url
		finally:
			proc.terminate()
			try:
				proc.wait(timeout=10)
			except subprocess.TimeoutExpired:
				proc.kill()

	def admin_password(self) -> str | None:
		from vperf_devruntime.site import ADMIN_PASSWORD

		return ADMIN_PASSWORD

	def run_queued_jobs(self, site_env: dict[str, str]) -> None:
		_burst_worker(site_env)

	def process_init(self) -> tuple[str, list[str], str | None]:
		return "frappe.init(force=True)", [], None

	def command(self, group: str, *args: str) -> tuple[list[str], str | None]:
		return [sys.executable, "-m", "vperf_devruntime", group, "--db", backend(), *args], None


def pytest_vperf_site_provider() -> DevRuntimeSite | None:
	"""The kit's hook: this runtime's site, unless the tests run on a bench's."""
	return None if bench_mode() else DevRuntimeSite()


def _wait_until_serving(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
	deadline = time.monotonic() + seconds
	while time.monotonic() < deadline:
		if proc.poll() is not None:
			raise RuntimeError(f"the web server exited with code {proc.returncode}; see logs/web.log")
		try:
			requests.get(f"{url}/api/method/ping", timeout=2)
			return
		except requests.ConnectionError:
			time.sleep(0.2)
	raise RuntimeError(f"the web server did not answer at {url} within {seconds}s")


@pytest.fixture
def redis_outage(site: Any, site_env: dict[str, str]) -> Callable[[], Any]:
	"""`with redis_outage(): ...` stops the site's Redis and starts it again on the same port after.

	Only the dev runtime owns its Redis; on a bench site the tests using this are skipped.
	"""
	if bench_mode():
		pytest.skip("stopping Redis is only done on the dev runtime's own server")
	from vperf_devruntime import services
	from vperf_devruntime import site as dev_site

	@contextmanager
	def _outage() -> Iterator[None]:
		stopped = services.stop(dev_site.WORK, "redis")
		assert stopped is not None, "the dev runtime's Redis was not running"
		try:
			yield
		finally:
			services.ensure_redis(dev_site.WORK, port=stopped.port)

	return _outage


# the sites `bench_sites(n)` hosts next to the dev site, named as their Host (as a bench names them)
BENCH_SITE_NAMES = tuple(f"site{i}.vperf.localhost" for i in range(1, 9))


@dataclass
class BenchSite:
	"""One of several sites of the dev runtime's sites folder, served by the same web server process
	(chosen by the Host header), sharing its Redis and its workers."""

	name: str
	base_url: str

	def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
		"""`fn(*args, **kwargs)` connected to this site, as Administrator, in a thread of its own (so the
		test's own site connection is untouched); returns its result or raises its error."""
		import frappe

		outcome: dict[str, Any] = {}

		def work() -> None:
			try:
				frappe.init(site=self.name, force=True)
				frappe.connect()
				frappe.set_user("Administrator")
				frappe.flags.in_test = True
				outcome["result"] = fn(*args, **kwargs)
				frappe.db.commit()
			except BaseException as e:  # handed to the test's thread
				outcome["error"] = e
			finally:
				frappe.destroy()

		thread = threading.Thread(target=work, name=f"on {self.name}")
		thread.start()
		thread.join(timeout=300)
		assert not thread.is_alive(), f"work on {self.name} did not end within 300 s"
		if "error" in outcome:
			raise outcome["error"]
		return outcome.get("result")

	def http(self) -> HttpClient:
		"""A requests session logged in as this site's Administrator, addressing the site by Host."""
		from vperf_devruntime.site import ADMIN_PASSWORD

		session = requests.Session()
		session.headers["Host"] = self.name
		response = session.post(
			f"{self.base_url}/api/method/login",
			data={"usr": "Administrator", "pwd": ADMIN_PASSWORD},
			timeout=30,
		)
		assert response.status_code == 200, f"login on {self.name} failed: {response.text[:300]}"
		return HttpClient(self.base_url, "Administrator", session)

	def run_scheduled_job(self, method: str) -> Any:
		"""One of the app's scheduled jobs, run now through this site's Scheduled Job Type."""
		import frappe

		return self.run(lambda: frappe.get_doc("Scheduled Job Type", {"method": method}).execute())


@pytest.fixture(scope="session")
def bench_sites(site: Any, site_env: dict[str, str], server_url: str) -> Callable[[int], list[BenchSite]]:
	"""`bench_sites(n)`: n SQLite sites with the app installed in the dev runtime's sites folder (created
	once, migrated on later runs), served by the session's one web server by their Host header, sharing
	its Redis (one database for all of them, as a bench's sites share one) and its background workers.

	Only the dev runtime creates sites: on a bench the tests using this are skipped."""
	if bench_mode():
		pytest.skip("creating sites is only done on the dev runtime (a bench's sites are the operator's)")
	ready: list[str] = []

	def _sites(count: int) -> list[BenchSite]:
		if not 1 <= count <= len(BENCH_SITE_NAMES):
			raise ValueError(f"bench_sites: 1 to {len(BENCH_SITE_NAMES)} sites, got {count}")
		names = list(BENCH_SITE_NAMES[:count])
		missing = [name for name in names if name not in ready]
		if missing:
			subprocess.run(_runtime_command("sites", *missing), check=True, capture_output=True, text=True)
			ready.extend(missing)
		return [BenchSite(name, server_url) for name in names]

	return _sites


@pytest.fixture
def run_workers(site: Any, site_env: dict[str, str]) -> Callable[[], None]:
	"""Run every queued background job of every site to completion in one burst worker process, as a
	bench's shared workers do (each job on the site that enqueued it); dev runtime only."""
	if bench_mode():
		pytest.skip("the dev runtime's burst worker; a bench runs its own workers")

	def _run() -> None:
		_burst_worker(site_env)

	return _run
