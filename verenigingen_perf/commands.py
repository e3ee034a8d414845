"""Bench commands of the app (Frappe's `commands` convention): `bench --site S vperf ...`."""

from __future__ import annotations

import os
import subprocess
import sys

import click
from frappe.commands import get_site, pass_context


@click.group("vperf")
def vperf() -> None:
	"""verenigingen_perf: performance monitoring."""


@vperf.command("update-baselines")
@click.option(
	"--app", "app_name", default="verenigingen_perf", help="the app whose tests record their baselines"
)
@click.argument("pytest_args", nargs=-1)
@pass_context
def update_baselines(context, app_name: str, pytest_args: tuple[str, ...]) -> None:
	"""Run an app's tests on the site with the regression guards recording what they measure in the
	app's baselines file (tests/performance_baselines.json) instead of comparing."""
	import frappe

	site = get_site(context)
	frappe.init(site=site)
	checkout = os.path.dirname(frappe.get_app_path(app_name))
	sites_path = os.path.abspath(frappe.local.sites_path)
	frappe.destroy()
	result = subprocess.run(
		[sys.executable, "-m", "pytest", checkout, "--vperf-update-baselines", "-q", *pytest_args],
		cwd=sites_path,
		env={**os.environ, "VPERF_BENCH_SITES": sites_path, "VPERF_BENCH_SITE": site},
		check=False,
	)
	sys.exit(result.returncode)


@vperf.command("export-alert-rules")
@pass_context
def export_alert_rules(context) -> None:
	"""Print every alert rule of the site as YAML."""
	import frappe

	from verenigingen_perf.utils.performance.alerts import store

	frappe.init(site=get_site(context))
	frappe.connect()
	try:
		click.echo(store.export_rules(), nl=False)
	finally:
		frappe.destroy()


@vperf.command("import-alert-rules")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@pass_context
def import_alert_rules(context, path: str) -> None:
	"""Create or update alert rules from a YAML file, all or none."""
	import frappe

	from verenigingen_perf.utils.performance.alerts import rules, store

	frappe.init(site=get_site(context))
	frappe.connect()
	try:
		with open(path, encoding="utf-8") as f:
			result = store.import_rules(f.read())
		frappe.db.commit()
		click.echo(f"{result['created']} created, {result['updated']} updated")
	except rules.RuleError as error:
		frappe.db.rollback()
		for line in error.errors:
			click.echo(line, err=True)
		sys.exit(1)
	finally:
		frappe.destroy()


commands = [vperf]
