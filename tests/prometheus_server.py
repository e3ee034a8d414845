"""A real Prometheus (Debian's package) scraping the site's metrics endpoint with the metrics token,
shared by the export's tests (a pytest plugin: conftest.py loads it)."""

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import requests

from tests.test_capture import DRAIN_WAIT_S
from verenigingen_perf.testing.fixtures import BENCH_SITE

METRICS_PATH = "/api/method/verenigingen_perf.api.export.metrics"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port() -> int:
	with socket.socket() as s:
		s.bind(("127.0.0.1", 0))
		return s.getsockname()[1]


@pytest.fixture
def prometheus_server(tmp_path):
	"""Start Debian's Prometheus on a loopback port scraping the given target every second (and
	evaluating the given rule files every second); stopped (by its PID) after the test."""
	started: list[subprocess.Popen] = []
	logs: list = []

	def _start(server_url: str, token: str, rule_files: Sequence[Path] = ()) -> str:
		port = free_port()
		host = server_url.split("://", 1)[1].rstrip("/")
		# a bench picks the site by the Host header, which Prometheus 2.42 cannot set: the target is
		# the site's name, reached through the web server as its proxy (an absolute-form request)
		proxy = ""
		if BENCH_SITE:
			proxy = f"    proxy_url: {server_url}\n"
			host = f"{BENCH_SITE}:{host.rsplit(':', 1)[1]}" if ":" in host else BENCH_SITE
		rules = "".join(f"  - {path}\n" for path in rule_files)
		(tmp_path / "prometheus.yml").write_text(
			f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
{"rule_files:" + chr(10) + rules if rules else ""}scrape_configs:
  - job_name: vperf
    metrics_path: {METRICS_PATH}
    authorization:
      credentials: {token}
{proxy}    static_configs:
      - targets: ["{host}"]
"""
		)
		logs.append(log := open(tmp_path / "prometheus.log", "wb"))
		proc = subprocess.Popen(
			[
				PROMETHEUS,
				f"--config.file={tmp_path / 'prometheus.yml'}",
				f"--storage.tsdb.path={tmp_path / 'data'}",
				f"--web.listen-address=127.0.0.1:{port}",
			],
			stdout=log,
			stderr=subprocess.STDOUT,
		)
		started.append(proc)
		return f"http://127.0.0.1:{port}"

	yield _start
	for proc in started:
		proc.terminate()
		try:
			proc.wait(timeout=30)
		except subprocess.TimeoutExpired:
			proc.kill()
			proc.wait()
	for log in logs:
		log.close()


def query(prometheus_url: str, expression: str) -> list[dict]:
	response = requests.get(f"{prometheus_url}/api/v1/query", params={"query": expression}, timeout=10)
	response.raise_for_status()
	return response.json()["data"]["result"]


def wait_for(prometheus_url: str, expression: str, predicate, what: str) -> list[dict]:
	deadline = time.monotonic() + DRAIN_WAIT_S
	while True:
		try:
			result = query(prometheus_url, expression)
			if predicate(result):
				return result
		except requests.ConnectionError:
			result = None
		if time.monotonic() > deadline:
			pytest.fail(f"{what}: not seen within {DRAIN_WAIT_S}s (last: {result})")
		time.sleep(0.5)
