"""The throwaway dev/CI site: one per database backend, created once, then migrated on every run.

A site is a folder `<work>/sites/<backend>/` holding site_config.json (read through the
MONOFRAME_EXTRA_CONFIG hook, as a bench site's is), the SQLite file or a MariaDB or PostgreSQL
database, and logs.
`site_env()` is the process environment that points the runtime at it; every process that talks to
the site (this CLI, the web server, workers, pytest) runs with it.
"""

import contextlib
import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from vperf_devruntime import services

BACKENDS = ("sqlite", "mariadb", "postgres")
APP = "verenigingen_perf"
ADMIN_PASSWORD = "admin"
REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("DEVRUNTIME_WORK", REPO / ".devruntime"))
# separate Redis databases per backend, so the sites never read each other's cache
REDIS_DB = {"sqlite": (0, 1), "mariadb": (2, 3), "postgres": (4, 5)}


def site_path(backend: str) -> Path:
	return WORK / "sites" / backend


def site_name(backend: str) -> str:
	return f"vperf_{backend}"


def site_env(backend: str) -> dict[str, str]:
	if backend not in BACKENDS:
		raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
	redis = services.ensure_redis(WORK)
	cache_db, queue_db = REDIS_DB[backend]
	env = {
		"DB_TYPE": backend,
		"DB_NAME": site_name(backend),
		"REDIS_CACHE": f"redis://{services.LOOPBACK}:{redis.port}/{cache_db}",
		"REDIS_QUEUE": f"redis://{services.LOOPBACK}:{redis.port}/{queue_db}",
		"DEVRUNTIME_SITE_PATH": str(site_path(backend)),
		"DEVRUNTIME_SITE_NAME": site_name(backend),
		"DEVRUNTIME_APPS": APP,
		"MONOFRAME_EXTRA_CONFIG": "vperf_devruntime.fixes.site_config",
		"ALLOW_TESTS": "1",
	}
	if backend == "mariadb":
		mariadb = services.ensure_mariadb(WORK)
		env.update(DB_HOST=services.LOOPBACK, DB_PORT=str(mariadb.port), DB_USER=site_name(backend))
	if backend == "postgres":
		postgres = services.ensure_postgres(WORK)
		env.update(DB_HOST=services.LOOPBACK, DB_PORT=str(postgres.port), DB_USER=site_name(backend))
	return env


def _site_config(backend: str, env: dict[str, str], existing: dict) -> dict:
	from cryptography.fernet import Fernet

	config = {
		"db_type": backend,
		"db_name": site_name(backend),
		"developer_mode": 0,
		# the runtime runs no realtime (socket.io) server: the desk does not try to connect to one
		"disable_async": 1,
		# a throwaway site: the tests may uninstall and reinstall the app on it
		"vperf_disposable_site": 1,
		# as `bench new-site` writes it: every process of the site decrypts Password fields with it
		"encryption_key": existing.get("encryption_key") or Fernet.generate_key().decode(),
	}
	if backend == "mariadb":
		config.update(
			db_host=env["DB_HOST"],
			db_port=int(env["DB_PORT"]),
			db_user=env["DB_USER"],
			db_password=existing.get("db_password") or secrets.token_hex(12),
			root_login="root",
			root_password=services.MARIADB_ROOT_PASSWORD,
		)
	if backend == "postgres":
		config.update(
			db_host=env["DB_HOST"],
			db_port=int(env["DB_PORT"]),
			db_user=env["DB_USER"],
			db_password=existing.get("db_password") or secrets.token_hex(12),
			root_login=services.POSTGRES_SUPERUSER,
			root_password=services.POSTGRES_PASSWORD,
		)
	# keys a developer added by hand (e.g. verenigingen_perf_environment) survive a re-run
	return {**existing, **config}


def _installed_marker(backend: str) -> Path:
	return site_path(backend) / ".installed"


def ensure_site(backend: str, fresh: bool = False, quiet: bool = True) -> dict[str, str]:
	"""Create the site with the app installed, or migrate the existing one. Returns its environment.

	With `quiet`, the framework's progress output goes to the site's logs/install.log.
	"""
	env = site_env(backend)
	path = site_path(backend)
	if fresh and path.exists():
		shutil.rmtree(path)
	path.mkdir(parents=True, exist_ok=True)
	config_file = path / "site_config.json"
	existing = json.loads(config_file.read_text()) if config_file.exists() else {}
	config_file.write_text(json.dumps(_site_config(backend, env, existing), indent=1, sort_keys=True))
	os.environ.update(env)
	(path / "logs").mkdir(exist_ok=True)
	with _output_to(path / "logs" / "install.log" if quiet else None):
		if _installed_marker(backend).exists():
			migrate()
		else:
			create()
			_installed_marker(backend).write_text(APP)
	if backend == "mariadb":
		grant_monitoring(env)
	if backend == "postgres":
		grant_postgres_monitoring(env)
	return env


def grant_monitoring(env: dict[str, str]) -> None:
	"""What an operator grants the site's database user for the database health snapshot
	(docs/database-health.md): reading performance_schema (statement digests, recent statements, index
	usage), InnoDB's index statistics (index sizes) and every connection's processlist row (PROCESS)."""
	user = f"'{env['DB_USER']}'@'{env['DB_HOST']}'"
	subprocess.run(
		[
			"mariadb",
			f"--host={env['DB_HOST']}",
			f"--port={env['DB_PORT']}",
			"-uroot",
			f"-p{services.MARIADB_ROOT_PASSWORD}",
			"-e",
			f"GRANT SELECT ON performance_schema.* TO {user}; "
			f"GRANT SELECT ON mysql.innodb_index_stats TO {user}; GRANT PROCESS ON *.* TO {user};",
		],
		check=True,
	)


def grant_postgres_monitoring(env: dict[str, str]) -> None:
	"""What an operator does for the database health snapshot on PostgreSQL (docs/database-health.md):
	the statement statistics extension in the site's database (the server preloads it), and the site's
	role may read every session's statistics and statement text (`pg_read_all_stats`)."""
	subprocess.run(
		[
			"psql",
			f"--host={env['DB_HOST']}",
			f"--port={env['DB_PORT']}",
			f"--username={services.POSTGRES_SUPERUSER}",
			f"--dbname={site_name('postgres')}",
			"--quiet",
			"--set=ON_ERROR_STOP=1",
			"--command=CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
			f'--command=GRANT pg_read_all_stats TO "{env["DB_USER"]}"',
		],
		check=True,
		env={
			**os.environ,
			"PGPASSWORD": services.POSTGRES_PASSWORD,
			"PGOPTIONS": "-c client_min_messages=warning",
		},
		stdout=subprocess.DEVNULL,
	)


@contextlib.contextmanager
def _output_to(log: Path | None):
	if log is None:
		yield
		return
	with open(log, "a") as f, contextlib.redirect_stdout(f):
		yield


def create() -> None:
	"""Create the database, install the framework, then the app (as bench new-site + install-app)."""
	import frappe
	from frappe.installer import install_app, install_db

	backend = os.environ["DB_TYPE"]
	frappe.init(force=True)
	if backend == "sqlite":
		db_file = site_path(backend) / "db" / f"{site_name(backend)}.db"
		db_file.unlink(missing_ok=True)
	install_db(
		root_login=frappe.conf.get("root_login"),
		root_password=frappe.conf.get("root_password"),
		db_name=site_name(backend),
		db_password=frappe.conf.get("db_password"),
		admin_password=ADMIN_PASSWORD,
		verbose=False,
		force=True,
		db_type=backend,
		db_user=frappe.conf.get("db_user"),
		setup=True,
	)
	_install_apps_and_close()


def _install_apps_and_close() -> None:
	"""The framework and the app on a site just made, as `bench new-site` and `install-app` do."""
	import frappe
	from frappe.installer import install_app

	frappe.flags.in_test = False
	install_app("monoframe", verbose=False)
	install_app(APP, verbose=False)
	_after_install_site()
	frappe.db.commit()
	frappe.destroy()


def _after_install_site() -> None:
	import frappe

	# the framework's setup wizard is not run on a throwaway site
	frappe.db.set_single_value("System Settings", "setup_complete", 1)
	frappe.db.set_default("desktop:home_page", "workspace")
	use_machine_time_zone()


def machine_time_zone() -> str:
	"""The machine's time zone as an IANA name: the one TZ names, else the one /etc/localtime links
	to, else /etc/timezone's; UTC when none names a known zone."""
	from zoneinfo import available_timezones

	def zone_of_path(path: str) -> str:
		# /usr/share/zoneinfo/Europe/Amsterdam (or .../zoneinfo/posix/Europe/Amsterdam) -> Europe/Amsterdam
		name = path.split("/zoneinfo/", 1)[-1]
		return name.removeprefix("posix/").removeprefix("right/")

	candidates = [zone_of_path(os.environ.get("TZ", "").lstrip(":"))]
	if os.path.islink("/etc/localtime"):
		candidates.append(zone_of_path(os.path.realpath("/etc/localtime")))
	with contextlib.suppress(OSError):
		candidates.append(Path("/etc/timezone").read_text().strip())
	known = available_timezones()
	return next((name for name in candidates if name in known), "UTC")


def use_machine_time_zone() -> None:
	"""System Settings take the machine's time zone, as a bench's setup wizard takes the one its user
	picks: with none set the framework runs the site in Asia/Kolkata, so the demo and the desk showed
	times hours off the machine's clock. Saved as a user would (the caches of the zone are cleared);
	rows stored before a change keep their times (`run site --fresh` starts over)."""
	import frappe

	zone = machine_time_zone()
	settings = frappe.get_single("System Settings")
	# the zone the users made so far were given (a user gets the site's zone when made): the
	# framework's own when none was set
	previous = settings.time_zone or frappe.utils.get_system_timezone()
	if settings.time_zone != zone or not settings.language:
		settings.time_zone = zone
		# the setup wizard sets the language with the zone; System Settings are not saved without one
		settings.language = settings.language or "en"
		settings.save(ignore_permissions=True)
	# the setup wizard gives the standard users the zone; so do the users made with the old one (the
	# app's metrics user at install): a user's desk shows times in the user's zone
	users = set(frappe.STANDARD_USERS) | set(frappe.get_all("User", {"time_zone": previous}, pluck="name"))
	moved = [user for user in users if frappe.db.get_value("User", user, "time_zone") != zone]
	for user in moved:
		frappe.db.set_value("User", user, "time_zone", zone)
	if moved:
		frappe.clear_cache()


def migrate() -> None:
	"""What `bench migrate` does for the app: patches before and after syncing its doctypes (and the
	pages, workspaces and chart sources of its module), the scheduler jobs, its fixtures, after_migrate."""
	import frappe
	from frappe.core.doctype.scheduled_job_type.scheduled_job_type import sync_jobs
	from frappe.model.sync import sync_for
	from frappe.patches import PatchType, run_all
	from frappe.utils.fixtures import sync_fixtures

	frappe.init(force=True)
	frappe.connect()
	frappe.flags.in_migrate = True
	frappe.clear_cache()
	run_all(patch_type=PatchType.pre_model_sync)
	for app in frappe.get_installed_apps():
		if app != "monoframe":
			sync_for(app)
	run_all(patch_type=PatchType.post_model_sync)
	sync_jobs()
	sync_fixtures()
	for hook in frappe.get_hooks("after_migrate"):
		frappe.get_attr(hook)()
	use_machine_time_zone()
	frappe.db.commit()
	frappe.clear_cache()
	frappe.flags.in_migrate = False
	frappe.destroy()


def connect(backend: str) -> None:
	"""Point this process at the site and connect as Administrator."""
	import frappe

	os.environ.update(site_env(backend))
	frappe.init(force=True)
	frappe.connect()


# --- several sites on one bench ----------------------------------------------------------------------
# A bench's sites folder holds one folder per site, named as its Host; these SQLite sites live next to
# the backends' sites in <work>/sites and share their process, Redis and workers, as a bench's do.


def named_site_path(name: str) -> Path:
	return WORK / "sites" / name


def named_site_db(name: str) -> str:
	"""The site's database name: its SQLite file and the prefix of its Redis keys (Frappe's
	`make_key`), so it must differ between the sites of one Redis."""
	return "vperf_site_" + "".join(c if c.isalnum() else "_" for c in name)


def _check_site_name(name: str) -> None:
	if not name or name.startswith(".") or "/" in name or name in BACKENDS or name == "assets":
		raise ValueError(f"site name: a host name such as a.vperf.localhost, got {name!r}")


def ensure_named_sites(
	names: list[str], backend: str = "sqlite", fresh: bool = False, quiet: bool = True
) -> dict[str, str]:
	"""Create (with the app installed) or migrate each SQLite site of `names` in the sites folder, as
	`bench new-site` and `bench migrate` do for each site of a bench. Returns the process environment
	that serves them (the `backend` site's, with its Redis, and the sites folder): the sites are chosen
	per request (Host), per job (its site) or by `frappe.init(site=...)`."""
	from vperf_devruntime import fixes

	env = {**site_env(backend), "DEVRUNTIME_SITES_PATH": str(WORK / "sites")}
	os.environ.update(env)
	for name in names:
		_check_site_name(name)
		path = named_site_path(name)
		if fresh and path.exists():
			shutil.rmtree(path)
		path.mkdir(parents=True, exist_ok=True)
		config_file = path / "site_config.json"
		existing = json.loads(config_file.read_text()) if config_file.exists() else {}
		config = {**_site_config("sqlite", env, existing), "db_name": named_site_db(name)}
		config_file.write_text(json.dumps(config, indent=1, sort_keys=True))
		(path / "logs").mkdir(exist_ok=True)
		marker = path / ".installed"
		with fixes.on_site(name), _output_to(path / "logs" / "install.log" if quiet else None):
			if marker.exists():
				migrate()
			else:
				_create_named(name)
				marker.write_text(APP)
	return env


def _create_named(name: str) -> None:
	"""`create()` for a site of the sites folder (the context's site, see fixes.on_site)."""
	import frappe
	from frappe.installer import install_app, install_db

	frappe.init(site=name, force=True)
	(named_site_path(name) / "db" / f"{named_site_db(name)}.db").unlink(missing_ok=True)
	install_db(
		db_name=named_site_db(name),
		admin_password=ADMIN_PASSWORD,
		verbose=False,
		force=True,
		db_type="sqlite",
		setup=True,
	)
	_install_apps_and_close()
