"""Bench commands of the app (Frappe's `commands` convention): `bench --site S vperf ...`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import click
from frappe.commands import get_site, pass_context

from verenigingen_perf.utils.performance.timeutil import format_datetime, shown_datetime, system_zone

# `report --since`: minutes, hours or days
_SINCE = re.compile(r"^(\d{1,6})([mhd])$")
_SINCE_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_MAX_LIMIT = 1000
# a baseline's pin name is a Data column (140 characters)


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

	site = _one_site(context)
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

	frappe.init(site=_one_site(context))
	frappe.connect()
	try:
		click.echo(store.export_rules(), nl=False)
	finally:
		frappe.destroy()


@vperf.command("import-alert-rules")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@pass_context
def import_alert_rules(context, path: str) -> None:
	"""Create or update alert rules from a YAML file, all or none (exit 2: the file was refused, every
	reason listed, nothing changed)."""
	import frappe

	from verenigingen_perf.utils.performance.alerts import rules, store

	text = _read_bounded_text(path, store.MAX_YAML_CHARS)
	frappe.init(site=_one_site(context))
	frappe.connect()
	try:
		result = store.import_rules(text)
		frappe.db.commit()
		click.echo(f"{result['created']} created, {result['updated']} updated")
	except rules.RuleError as error:
		# a refused file is bad input, as a bad argument is (nothing was changed)
		frappe.db.rollback()
		for line in error.errors:
			click.echo(line, err=True)
		sys.exit(2)
	finally:
		frappe.destroy()


def _read_bounded_text(path: str, max_chars: int) -> str:
	"""A UTF-8 text file of at most `max_chars` (at most 4 bytes each), refused (exit 2) before more
	than that is read: a large or endless file (a device, a pipe) is never read whole."""
	max_bytes = 4 * max_chars
	with open(path, "rb") as f:
		data = f.read(max_bytes + 1)
	if len(data) > max_bytes:
		raise click.BadParameter(f"at most {max_chars:,} characters", param_hint="PATH")
	try:
		text = data.decode("utf-8")
	except UnicodeDecodeError as error:
		raise click.BadParameter(
			f"must be UTF-8 text (byte {error.start} is not)", param_hint="PATH"
		) from None
	if len(text) > max_chars:
		raise click.BadParameter(f"at most {max_chars:,} characters", param_hint="PATH")
	return text


def _checked_arguments(context, check: Callable[[], Any]) -> Any:
	"""The command's arguments checked by the whitelisted API's own rules (`api/arguments.py`), on
	the first site (the checks read nothing of it): a bad one exits with 2, naming it and the rule."""
	import frappe

	with _connected(_sites(context)[0]):
		try:
			return check()
		except frappe.ValidationError as error:
			raise click.BadParameter(frappe.utils.strip_html(str(error))) from None


def _sites(context) -> list[str]:
	"""The sites the command was given, as Frappe's own commands take them (`--site all` gives every
	site of the bench); the framework's error when none was."""
	return list(getattr(context, "sites", None) or []) or [get_site(context)]


def _one_site(context) -> str:
	"""The only site of a command that reads or writes one site's file or output."""
	sites = _sites(context)
	if len(sites) > 1:
		raise click.UsageError(f"works on one site at a time, got {len(sites)}: name one with --site")
	return sites[0]


@contextmanager
def _connected(site: str) -> Iterator[None]:
	import frappe

	frappe.init(site=site)
	frappe.connect()
	try:
		yield
	finally:
		frappe.destroy()


def _each_site(context, as_json: bool = False) -> Iterator[tuple[str, str | None]]:
	"""Each site in turn, with the name its output carries: None for a single site (the output as it
	is); with several, a heading per site in text, and the site in each JSON object (one per line)."""
	sites = _sites(context)
	for site in sites:
		if len(sites) > 1 and not as_json:
			click.echo(f"== {site} ==")
		yield site, site if len(sites) > 1 else None


def _echo_answer_json(data: dict[str, Any], site: str | None) -> None:
	if site is None:
		_echo_json(data)
	else:
		click.echo(json.dumps({"site": site, **data}, default=str, sort_keys=True))


def _number(value: Any) -> str:
	if value is None:
		return "-"
	if isinstance(value, bool):
		return "yes" if value else "no"
	if isinstance(value, float):
		return f"{value:,.3f}".rstrip("0").rstrip(".")
	return f"{value:,}" if isinstance(value, int) else str(value)


def _table(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
	"""Columns as (heading, key); numbers right-aligned, text left-aligned."""
	cells = [[_number(row.get(key)) for _heading, key in columns] for row in rows]
	widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, (h, _k) in enumerate(columns)]
	numeric = [
		all(isinstance(row.get(key), int | float) or row.get(key) is None for row in rows)
		for _h, key in columns
	]

	def line(values: Sequence[str]) -> str:
		return "  ".join(
			v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
		).rstrip()

	return "\n".join(
		[line([h for h, _k in columns]), line(["-" * w for w in widths]), *(line(r) for r in cells)]
	)


def _echo_report(title: str, report: dict[str, Any]) -> None:
	"""A job's report: one `key: value` line each (lists and mappings as JSON)."""
	from verenigingen_perf.utils.performance.timeutil import epoch_text

	click.echo(title)
	for key, value in report.items():
		if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
			value = epoch_text(value)
		shown = json.dumps(value, default=str) if isinstance(value, list | dict) else _number(value)
		click.echo(f"  {key}: {shown}")


def _site_zone() -> str:
	"""The connected site's time zone, in which it stores its datetimes."""
	return system_zone().key


def _echo_json(data: Any) -> None:
	click.echo(json.dumps(data, indent=1, default=str, sort_keys=True))


def _since(value: str) -> timedelta:
	match = _SINCE.match(value.strip())
	if not match:
		raise click.BadParameter("must be a whole number and a unit: m, h or d (e.g. 90m, 24h, 7d)")
	since = timedelta(**{_SINCE_UNITS[match.group(2)]: int(match.group(1))})
	if not timedelta(minutes=1) <= since <= timedelta(days=3650):
		raise click.BadParameter("must lie between 1m and 3650d")
	return since


@vperf.command("status")
@click.option("--json", "as_json", is_flag=True, help="print the answer as JSON")
@pass_context
def status(context, as_json: bool) -> None:
	"""The monitoring's own signals now, with their levels (as the monitoring_status API answers)."""
	from verenigingen_perf.utils.performance import monitoring
	from verenigingen_perf.utils.performance.config import get_config

	for site, named in _each_site(context, as_json):
		with _connected(site):
			answer = monitoring.status(get_config(), 1)
			zone = _site_zone()
		_print_status(answer, zone, as_json, named)


def _print_status(answer: dict[str, Any], zone: str, as_json: bool, site: str | None) -> None:
	if as_json:
		_echo_answer_json(answer, site)
		return
	click.echo(f"Monitoring: {answer['level']} (measured at {shown_datetime(answer['measured_at'], zone)})")
	click.echo(
		_table(
			[
				("signal", "name"),
				("value", "value"),
				("unit", "unit"),
				("warning", "warning"),
				("critical", "critical"),
				("level", "level"),
			],
			answer["signals"],
		)
	)
	for what in answer["unavailable"]:
		click.echo(f"unavailable: {what}")


@vperf.command("health")
@click.option("--json", "as_json", is_flag=True, help="print the answer as JSON")
@pass_context
def health_command(context, as_json: bool) -> None:
	"""The site's health score with its components (as the quick_health_check API answers)."""
	from verenigingen_perf.utils.performance import health
	from verenigingen_perf.utils.performance.config import get_config

	for site, named in _each_site(context, as_json):
		with _connected(site):
			answer = health.system_health(get_config())
		_print_health(answer, as_json, named)


def _print_health(answer: dict[str, Any], as_json: bool, site: str | None) -> None:
	if as_json:
		_echo_answer_json(answer, site)
		return
	click.echo(f"Health: {_number(answer['score'])} ({answer['level']}): {answer['message']}")
	click.echo(
		_table(
			[
				("component", "name"),
				("value", "value"),
				("unit", "unit"),
				("warning", "warning"),
				("critical", "critical"),
				("score", "score"),
				("level", "level"),
			],
			answer["components"],
		)
	)


@vperf.command("report")
@click.option(
	"--since",
	"window",
	default="24h",
	show_default=True,
	callback=lambda _context, _param, value: _since(value),
	help="how far back: 90m, 24h, 7d",
)
@click.option(
	"--limit",
	type=click.IntRange(1, _MAX_LIMIT),
	default=None,
	help="operations listed (default: the configured slowest_operations)",
)
@click.option("--json", "as_json", is_flag=True, help="print the operations as JSON")
@pass_context
def report(context, window: timedelta, limit: int | None, as_json: bool) -> None:
	"""The slowest operations (by p95) in the hourly aggregates of the last `--since`."""
	import frappe

	from verenigingen_perf.utils.performance import health
	from verenigingen_perf.utils.performance.config import get_config

	for site, named in _each_site(context, as_json):
		with _connected(site):
			since = frappe.utils.now_datetime() - window
			operations = health.slowest_since(since, limit or get_config().analysis.slowest_operations)
			shown_since = format_datetime(since) if as_json else shown_datetime(since, _site_zone())
		_print_report(shown_since, operations, as_json, named)


def _print_report(since: str, operations: list[dict[str, Any]], as_json: bool, site: str | None) -> None:
	if as_json:
		_echo_answer_json({"since": since, "operations": operations}, site)
		return
	click.echo(f"Slowest operations since {since} (whole hours, from the hourly aggregates)")
	if not operations:
		click.echo("no data: no operation was aggregated in that time")
		return
	click.echo(
		_table(
			[
				("operation", "operation"),
				("type", "operation_type"),
				("count", "count"),
				("p95 ms", "p95_ms"),
				("error rate", "error_rate"),
			],
			operations,
		)
	)


def _run_job(context, title: str, run: Callable[[], dict[str, Any]]) -> None:
	"""The job on each site in turn; a site whose job fails does not stop the others, the command
	then exits with 1."""
	failed = False
	for site, _named in _each_site(context):
		with _connected(site):
			try:
				answer = run()
			except Exception as error:
				click.echo(f"{title} failed: {type(error).__name__}: {error}", err=True)
				failed = True
				continue
			# times are shown in the site's time zone: while the site is still open
			_echo_report(title, answer)
	if failed:
		sys.exit(1)


@vperf.command("drain")
@pass_context
def drain(context) -> None:
	"""Move the buffered measurements into Performance Metric rows now."""
	from verenigingen_perf.utils.performance import buffer

	_run_job(context, "Drain", buffer.drain_job)


@vperf.command("rollup")
@pass_context
def rollup_command(context) -> None:
	"""Fold every complete hour of detail rows into the hourly and daily aggregates now."""
	import frappe

	from verenigingen_perf.utils.performance import job_reports, rollup
	from verenigingen_perf.utils.performance.timeutil import floor_hour

	def run() -> dict[str, Any]:
		watermark = rollup.get_watermark()
		hours = int((frappe.utils.now_datetime() - watermark).total_seconds() // 3600) if watermark else 0
		start = floor_hour(watermark) if watermark else None
		with click.progressbar(length=max(hours, 1), label="Folding hours", file=sys.stderr) as bar:
			folded = {"hours": 0}

			def on_hour(hour) -> None:
				# hours without detail rows are skipped by the rollup: the bar jumps over them
				reached = int((hour - start).total_seconds() // 3600) + 1 if start else folded["hours"] + 1
				bar.update(max(0, reached - folded["hours"]))
				folded["hours"] = reached

			return job_reports.run_and_record(
				"rollup",
				lambda: rollup.run_rollup(on_hour=on_hour),
				lambda errors: rollup.RollupReport(status="failed", errors=errors),
			)

	_run_job(context, "Rollup", run)


@vperf.command("retention")
@pass_context
def retention_command(context) -> None:
	"""Delete what is older than the retention periods (only rows already aggregated) now."""
	from verenigingen_perf.utils.performance import retention

	_run_job(context, "Retention", retention.retention_job)


@vperf.command("refresh-baselines")
@pass_context
def refresh_baselines(context) -> None:
	"""Recompute the rolling baselines now (the detection job does it once a day)."""
	import frappe

	from verenigingen_perf.utils.performance.config import get_config
	from verenigingen_perf.utils.performance.detection import baselines
	from verenigingen_perf.utils.performance.timeutil import floor_hour

	def run() -> dict[str, Any]:
		hour = floor_hour(frappe.utils.now_datetime())
		refreshed = baselines.refresh_rolling(hour, get_config().detection)
		frappe.db.commit()
		return {"refreshed": refreshed, "for_hour": str(hour)}

	_run_job(context, "Rolling baselines", run)


@vperf.command("pin-baseline")
@click.argument("name")
@click.option("--operation", "operations", multiple=True, help="an operation to pin (repeat; default: all)")
@pass_context
def pin_baseline(context, name: str, operations: tuple[str, ...]) -> None:
	"""Freeze the current rolling figures as a named baseline (as the pin_baseline API does)."""
	from verenigingen_perf.api import arguments
	from verenigingen_perf.api.detection import MAX_PINNED_OPERATIONS
	from verenigingen_perf.utils.performance.config import get_config
	from verenigingen_perf.utils.performance.detection import reports

	pin, listed = _checked_arguments(
		context,
		lambda: (
			arguments.name(name, "NAME"),
			arguments.name_list(list(operations), "--operation", MAX_PINNED_OPERATIONS, arguments.name)
			or None,
		),
	)
	_run_job(context, f"Pinned baseline {pin!r}", lambda: reports.pin(pin, listed, get_config()))


@vperf.command("docs")
@click.option("--check", is_flag=True, help="write nothing; exit 1 when a generated page is out of date")
def docs_command(check: bool) -> None:
	"""Regenerate the manual's reference pages in the app's checkout (docs/configuration.md from the
	settings table, docs/api.md from the whitelisted methods). Needs no site."""
	from verenigingen_perf import reference

	if check:
		stale = reference.stale()
		for page in stale:
			click.echo(f"{page}: out of date (run `bench vperf docs`)", err=True)
		sys.exit(1 if stale else 0)
	try:
		changed = reference.write()
	except (OSError, ValueError) as e:
		# an installed copy without the checkout's docs/, or a page that lost its markers
		raise click.ClickException(f"cannot regenerate the reference pages: {e}") from None
	click.echo("\n".join(f"wrote {page}" for page in changed) or "the reference pages are up to date")


commands = [vperf]
