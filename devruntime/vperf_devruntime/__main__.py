"""Command line of the dev/CI runtime: `python -m vperf_devruntime COMMAND [--db sqlite|mariadb|postgres]`."""

import argparse
import json
import os
import sys

from vperf_devruntime import services, site


def _connect(backend: str) -> None:
	site.ensure_site(backend)
	site.connect(backend)


def cmd_site(args: argparse.Namespace) -> None:
	env = site.ensure_site(args.db, fresh=args.fresh)
	print(json.dumps(env, indent=1, sort_keys=True))


def cmd_main(args: argparse.Namespace) -> None:
	"""The README's main job: a site with the app, its environment, configuration and jobs, then the
	demo (see demo.py)."""
	import frappe

	_connect(args.db)
	from verenigingen_perf.utils.performance import config

	effective = config.describe(config.get_config())
	print(f"Site: {frappe.local.site} ({args.db}) at {frappe.local.site_path}")
	print(f"Installed apps: {', '.join(frappe.get_installed_apps())}")
	roles = frappe.get_all(
		"Role", filters={"name": ("in", ["Performance Manager", "System Manager"])}, pluck="name"
	)
	print(f"Roles: {', '.join(sorted(roles))}")
	print(f"Environment: {effective['environment']} (decided by {effective['environment_source']})")
	print("Effective configuration:")
	for key, value in sorted(effective["values"].items()):
		marker = "  (override)" if key in effective["overrides"] else ""
		print(f"  {key:28} {value}{marker}")
	jobs = frappe.get_all(
		"Scheduled Job Type",
		filters={"method": ("like", f"{site.APP}.%")},
		fields=["method", "frequency", "cron_format", "stopped"],
		order_by="method",
	)
	print(f"Scheduler jobs of {site.APP}: {len(jobs)}")
	for job in jobs:
		state = "stopped" if job.stopped else "active"
		print(f"  {job.method}  {job.frequency}{' ' + job.cron_format if job.cron_format else ''}  {state}")
	from vperf_devruntime import demo

	demo.run(args.db)
	frappe.destroy()
	if args.serve or (args.serve is None and sys.stdin.isatty() and sys.stdout.isatty()):
		_serve_desk(args.db, args.port)
	else:
		print(f"\nTo look at it in the desk: devruntime/run desk --db {args.db} (serves it until Ctrl-C)")


DESK_PATH = "/desk/performance"


def _serve_desk(backend: str, port: int | None) -> None:
	from vperf_devruntime import server

	port = port or services.free_port()
	print(f"\nDesk: http://127.0.0.1:{port}{DESK_PATH}")
	print(f"Log in as Administrator, password {site.ADMIN_PASSWORD!r} (a throwaway site on loopback only).")
	print("Serving until Ctrl-C.", flush=True)
	os.environ.update(site.site_env(backend))
	try:
		server.serve(port)
	except KeyboardInterrupt:
		pass


def cmd_desk(args: argparse.Namespace) -> None:
	"""Serve the site (with what the last `main` left in it) for a person to look at in the desk."""
	site.ensure_site(args.db)
	_serve_desk(args.db, args.port)


def cmd_serve(args: argparse.Namespace) -> None:
	from vperf_devruntime import server

	site.ensure_site(args.db) if args.ensure else os.environ.update(site.site_env(args.db))
	server.serve(args.port)


def cmd_execute(args: argparse.Namespace) -> None:
	"""Run one scheduled job of the site now, through its Scheduled Job Type."""
	import frappe

	os.environ.update(site.site_env(args.db))
	site.connect(args.db)
	frappe.get_doc("Scheduled Job Type", {"method": args.method}).execute()
	frappe.db.commit()
	frappe.destroy()


def cmd_worker(args: argparse.Namespace) -> None:
	"""Run the site's background jobs until the queues are empty (an RQ worker in burst mode)."""
	from frappe.utils.background_jobs import start_worker

	os.environ.update(site.site_env(args.db))
	start_worker(queue=args.queue, quiet=True, burst=True)


def cmd_vperf(args: argparse.Namespace) -> None:
	"""The app's bench commands (`bench --site S vperf ...`) on the site, through its click group."""
	os.environ.update(site.site_env(args.db))
	from verenigingen_perf.commands import vperf

	# `--site NAME` (repeatable) as bench's `--site`: named sites of the sites folder; else the backend's
	vperf.main(args.vperf_args, prog_name="vperf", obj={"sites": args.site or [site.site_name(args.db)]})


def cmd_sites(args: argparse.Namespace) -> None:
	"""Create or migrate several SQLite sites in the one sites folder (as a bench hosts them)."""
	env = site.ensure_named_sites(args.names, backend=args.db, fresh=args.fresh)
	print(json.dumps({"env": env, "sites": args.names}, indent=1, sort_keys=True))


def cmd_schedule(args: argparse.Namespace) -> None:
	"""One scheduler tick for each named site: its due scheduled jobs are enqueued on the shared queues
	(as `bench schedule` does for every site of a bench); `worker` runs them, each on its own site."""
	import frappe
	from frappe.utils.scheduler import enqueue_events
	from vperf_devruntime import fixes

	os.environ.update(site.site_env(args.db))
	for name in args.names:
		with fixes.on_site(name):
			frappe.init(site=name, force=True)
			frappe.connect()
			enqueued = enqueue_events() or []
			frappe.db.commit()
			print(json.dumps({"site": frappe.local.site, "enqueued": sorted(enqueued)}))
			frappe.destroy()


def cmd_stop(args: argparse.Namespace) -> None:
	for stopped in services.stop_all(site.WORK):
		print(f"stopped {stopped}")


def main(argv: list[str] | None = None) -> None:
	parser = argparse.ArgumentParser(prog="vperf_devruntime", description=__doc__)
	sub = parser.add_subparsers(dest="command", required=True)

	def add(name, fn, help_text):
		p = sub.add_parser(name, help=help_text)
		p.add_argument("--db", choices=site.BACKENDS, default=os.environ.get("DEVRUNTIME_DB", "sqlite"))
		p.set_defaults(fn=fn)
		return p

	add("site", cmd_site, "create or migrate the site").add_argument("--fresh", action="store_true")
	main_job = add("main", cmd_main, "the main job: site, environment, configuration, scheduler jobs")
	main_job.add_argument(
		"--serve",
		action=argparse.BooleanOptionalAction,
		default=None,
		help="serve the desk afterwards until Ctrl-C (default: when run in a terminal)",
	)
	main_job.add_argument("--port", type=int, default=None, help="the desk's port (default: a free one)")
	desk = add("desk", cmd_desk, "serve the site's desk until Ctrl-C, printing its address and login")
	desk.add_argument("--port", type=int, default=None)
	serve = add("serve", cmd_serve, "serve the site on 127.0.0.1")
	serve.add_argument("--port", type=int, required=True)
	serve.add_argument("--ensure", action="store_true", help="create or migrate the site first")
	add("execute", cmd_execute, "run a scheduled job now").add_argument("method")
	add("worker", cmd_worker, "run queued background jobs, then exit").add_argument("--queue", default=None)
	vperf = add("vperf", cmd_vperf, "the app's bench commands, e.g. `vperf report --since 24h`")
	vperf.add_argument("--site", action="append", help="a named site (repeat for several, as on a bench)")
	vperf.add_argument("vperf_args", nargs=argparse.REMAINDER)
	sites = add("sites", cmd_sites, "create or migrate SQLite sites in the one sites folder (a bench's)")
	sites.add_argument("names", nargs="+", help="site names, as their Host (e.g. a.vperf.localhost)")
	sites.add_argument("--fresh", action="store_true")
	schedule = add("schedule", cmd_schedule, "enqueue the due scheduled jobs of each named site")
	schedule.add_argument("names", nargs="+")
	add("stop", cmd_stop, "stop the Redis, MariaDB and PostgreSQL servers this layer started")
	args = parser.parse_args(argv)
	args.fn(args)


if __name__ == "__main__":
	sys.exit(main())
