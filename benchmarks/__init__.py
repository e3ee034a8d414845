"""Shared helpers of the benchmark scripts."""

from __future__ import annotations

import math
import os
import sys


def connect_site(backend: str) -> None:
	"""Connect to the dev runtime's site of `backend`, or to a bench site (VPERF_BENCH_SITES/SITE)."""
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

	dev_site.ensure_site(backend, quiet=True)
	dev_site.connect(backend)


def percentile(samples: list[float], pct: float) -> float:
	"""Nearest-rank percentile of raw samples."""
	ordered = sorted(samples)
	return ordered[max(math.ceil(pct / 100 * len(ordered)) - 1, 0)]
