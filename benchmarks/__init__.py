"""Shared helpers of the benchmark scripts."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator


def connect_site(backend: str, migrate: bool = True) -> None:
	"""Connect to the dev runtime's site of `backend`, or to a bench site (VPERF_BENCH_SITES/SITE).

	The dev runtime creates or migrates its site first, unless `migrate` is off (a benchmark's
	child process, whose parent has done it)."""
	import frappe

	sites, site = os.environ.get("VPERF_BENCH_SITES"), os.environ.get("VPERF_BENCH_SITE")
	if sites and site:
		frappe.init(site=site, sites_path=sites)
		frappe.connect()
		return
	sys.path.insert(
		0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "devruntime")
	)
	from vperf_devruntime import site as dev_site

	if migrate:
		dev_site.ensure_site(backend, quiet=True)
	dev_site.connect(backend)


def percentile(samples: list[float], pct: float) -> float:
	"""Nearest-rank percentile of raw samples."""
	ordered = sorted(samples)
	return ordered[max(math.ceil(pct / 100 * len(ordered)) - 1, 0)]


def reset_peak_rss_kb() -> int:
	"""Reset this process's peak RSS (Linux: /proc/self/clear_refs) to its current RSS and return it,
	so that `peak_rss_kb` then reports the peak of what runs after, not of the set-up before."""
	with open("/proc/self/clear_refs", "w") as f:
		f.write("5")
	return _status_kb("VmRSS")


def peak_rss_kb() -> int:
	"""The peak RSS since the last `reset_peak_rss_kb`."""
	return _status_kb("VmHWM")


def _status_kb(field: str) -> int:
	with open("/proc/self/status") as f:
		for line in f:
			if line.startswith(field + ":"):
				return int(line.split()[1])
	raise RuntimeError(f"/proc/self/status has no {field}")


@contextlib.contextmanager
def serve(backend: str) -> Iterator[str]:
	"""The dev site's instrumented web server on a free loopback port, for the time of the block."""
	import requests
	from vperf_devruntime import services
	from vperf_devruntime import site as dev_site

	port = services.free_port()
	proc = subprocess.Popen(
		[sys.executable, "-m", "vperf_devruntime", "serve", "--port", str(port), "--db", backend],
		env={**os.environ, **dev_site.site_env(backend)},
		stdout=subprocess.DEVNULL,
		stderr=subprocess.DEVNULL,
	)
	url = f"http://127.0.0.1:{port}"
	try:
		deadline = time.monotonic() + 60
		while True:
			try:
				requests.get(f"{url}/api/method/ping", timeout=2)
				break
			except requests.ConnectionError:
				if proc.poll() is not None or time.monotonic() > deadline:
					raise RuntimeError("the web server did not start") from None
				time.sleep(0.2)
		yield url
	finally:
		proc.terminate()
		proc.wait(timeout=15)


def empty_performance_tables() -> None:
	"""Detail rows and aggregates gone, the rollup's watermark unset (a destructive benchmark's start).

	Truncated, not deleted from: a DELETE leaves MariaDB's and PostgreSQL's files as large as before,
	and an earlier run's free space would count in this run's storage figures."""
	import frappe

	from verenigingen_perf.utils.performance import rollup, schema

	frappe.db.commit()
	frappe.db.truncate(schema.METRIC)
	frappe.db.truncate(schema.AGGREGATE)
	frappe.db.sql(
		"update `tabSingles` set value=NULL where doctype=%s and field='watermark'", (schema.ROLLUP_STATE,)
	)
	rollup.ensure_state_row()
	frappe.db.commit()
