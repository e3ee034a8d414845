"""The runtime fixes: each one makes monoframe behave like Frappe where the app depends on it.

Every fix carries a one-line comment naming the monoframe defect it works around. Nothing in the
app knows about these; on a real bench none of this is loaded.
"""

import contextlib
import contextvars
import json
import os
import sys
import types
from collections.abc import Iterator

_applied = False


def apply() -> None:
	global _applied
	if _applied:
		return
	_applied = True
	import monoframe

	_fix_multi_app(monoframe)
	_fix_site_context(monoframe)
	_fix_outbound_calls(monoframe)
	_fix_logging(monoframe)
	_fix_install(monoframe)
	_fix_patches(monoframe)
	_fix_website(monoframe)
	_fix_setup_complete(monoframe)
	_fix_argument_types(monoframe)
	_fix_sqlite_querybuilder(monoframe)
	_fix_postgres_indexes(monoframe)
	_fix_bench_commands(monoframe)
	_fix_multi_site(monoframe)


def hidden_apps() -> list[str]:
	"""Apps this process treats as not installed (DEVRUNTIME_HIDDEN_APPS, comma separated)."""
	return [a.strip() for a in os.environ.get("DEVRUNTIME_HIDDEN_APPS", "").split(",") if a.strip()]


def extra_apps() -> list[str]:
	"""Apps 'on the bench' besides the framework (DEVRUNTIME_APPS, comma separated)."""
	return [a.strip() for a in os.environ.get("DEVRUNTIME_APPS", "").split(",") if a.strip()]


def _fix_multi_app(monoframe) -> None:
	from monoframe.utils.caching import request_cache

	def get_all_apps(with_internal_apps=True, sites_path=None):
		# defect: get_all_apps is hard-coded to ['monoframe']
		return ["monoframe", *extra_apps()]

	@request_cache
	def get_installed_apps(*, _ensure_on_bench=False):
		# defect: get_installed_apps is hard-coded to ['monoframe']; read the site's list as Frappe does
		if getattr(monoframe.flags, "in_install_db", True):
			return []
		if not getattr(monoframe.local, "db", None):
			return ["monoframe"]
		installed = json.loads(monoframe.db.get_global("installed_apps") or "[]")
		# a process that serves the site as if these apps were not installed (benchmarks compare)
		return [app for app in installed if app not in hidden_apps()]

	def _load_app_hooks(app_name=None):
		# defect: hooks are read only from monoframe.hooks, never from installed apps
		import inspect

		def _is_valid_hook(obj):
			return not isinstance(obj, types.ModuleType | types.FunctionType | type)

		hooks = {}
		apps = [app_name] if app_name else get_installed_apps()
		for app in apps:
			module = monoframe.get_module(f"{app}.hooks")
			for key, value in inspect.getmembers(module, predicate=_is_valid_hook):
				if not key.startswith("_"):
					monoframe.append_hook(hooks, key, value)
		return hooks

	def get_app_path(app_name, *joins):
		# defect: get_app_path ignores app_name and always answers the framework's folder
		return monoframe.get_pymodule_path(app_name, *joins)

	def get_app_source_path(app_name, *joins):
		# defect: same as get_app_path, for the source folder
		return monoframe.get_pymodule_path(app_name, "..", *joins)

	def get_module_list(app_name="monoframe"):
		# defect: modules.txt is read from the framework whatever the app
		return monoframe.get_file_items(get_app_path(app_name, "modules.txt"))

	def setup_module_map(include_all_apps=True):
		# defect: the module map only knows the framework's modules, so app doctypes have no controller
		app_modules = {}
		for app in get_all_apps():
			app_modules[app] = [monoframe.scrub(m) for m in get_module_list(app)]
		monoframe.local.app_modules = app_modules
		monoframe.local.module_app = {m: app for app, mods in app_modules.items() for m in mods}

	site_cached = monoframe.utils.caching.site_cache(_load_app_hooks)
	if "DEVRUNTIME_HIDDEN_APPS" in os.environ:
		from monoframe import _dict

		def get_hooks(hook=None, default="_KEEP_DEFAULT_LIST"):
			# hooks of a process that may hide apps stay in the process: the shared hooks cache in
			# Redis is the other processes' (which see every installed app); set, even empty, for
			# every process a benchmark compares, so that all of them read their hooks alike
			hooks = site_cached()
			if hook:
				return hooks.get(hook, [] if default == "_KEEP_DEFAULT_LIST" else default)
			return _dict(hooks)

		monoframe.get_hooks = get_hooks
	monoframe.get_all_apps = get_all_apps
	monoframe.get_installed_apps = get_installed_apps
	monoframe._load_app_hooks = _load_app_hooks
	monoframe._site_cached_load_app_hooks = site_cached
	monoframe._request_cached_load_app_hooks = request_cache(_load_app_hooks)
	monoframe.get_app_path = get_app_path
	monoframe.get_app_source_path = get_app_source_path
	monoframe.get_module_list = get_module_list
	monoframe.setup_module_map = setup_module_map


# the site a context works for when it names one (frappe.init(site=...), a job's site, a request's
# Host); unset, a process works for its default site (DEVRUNTIME_SITE_PATH / DEVRUNTIME_SITE_NAME)
_site: contextvars.ContextVar[str | None] = contextvars.ContextVar("devruntime_site", default=None)


def sites_path() -> str:
	"""The sites folder (a bench's sites/): DEVRUNTIME_SITES_PATH, else the default site's parent."""
	return os.environ.get("DEVRUNTIME_SITES_PATH") or os.path.dirname(
		os.environ.get("DEVRUNTIME_SITE_PATH", "")
	)


def named_site_path(site: str | None) -> str | None:
	"""The folder of a site of the sites folder (one holding site_config.json), else None."""
	if not site or site == os.environ.get("DEVRUNTIME_SITE_NAME") or os.sep in site or site.startswith("."):
		return None
	path = os.path.join(sites_path(), site)
	return path if os.path.isfile(os.path.join(path, "site_config.json")) else None


def current_site_path() -> str:
	"""The folder of the site this context works for."""
	return named_site_path(_site.get()) or os.environ.get("DEVRUNTIME_SITE_PATH", "")


@contextlib.contextmanager
def on_site(site: str | None) -> Iterator[None]:
	"""Every frappe.init() in this context (and the threads it starts after) initialises `site`."""
	token = _site.set(site)
	try:
		yield
	finally:
		_site.reset(token)


def _fix_site_context(monoframe) -> None:
	original_init = monoframe.init

	def init(site=None, sites_path=None, *args, force=False, **kwargs):
		# defect: init takes no site or sites_path and uses the working directory as the site folder
		# (the runtime has one sites folder, sites_path(): `sites_path` names no other)
		already = getattr(monoframe.local, "initialised", None) and not force
		if already:
			return
		chosen = site or _site.get() or _site_of_request(monoframe)
		with on_site(chosen if named_site_path(chosen) else None):
			original_init(force=force)
			site_path = current_site_path()
		if site_path:
			monoframe.local.site_path = site_path
		# defect: frappe.local.site is missing
		monoframe.local.site = (
			chosen if named_site_path(chosen) else os.environ.get("DEVRUNTIME_SITE_NAME", "monoframe")
		)
		monoframe.local.sites_path = os.path.dirname(monoframe.local.site_path)

	monoframe.init = init


def site_config() -> dict:
	"""MONOFRAME_EXTRA_CONFIG hook: the site's site_config.json, as a bench site has one.

	defect: site_config.json is ignored and frappe.conf takes no custom keys.
	"""
	path = os.path.join(current_site_path(), "site_config.json")
	config = {}
	if os.path.exists(path):
		with open(path) as f:
			config = json.load(f)
	# keys set for one process only (DEVRUNTIME_SITE_CONFIG_EXTRA, a JSON object), such as `monitor`
	return {**config, **json.loads(os.environ.get("DEVRUNTIME_SITE_CONFIG_EXTRA") or "{}")}


def _fix_outbound_calls(monoframe) -> None:
	import monoframe.hooks as framework_hooks

	# defect: the framework's scheduler fetches a remote changelog feed and checks for updates
	outbound = ("changelog_feed", "check_for_update", "new_release", "fetch_changelog")
	for event, jobs in list(getattr(framework_hooks, "scheduler_events", {}).items()):
		if isinstance(jobs, dict):
			for cron, cron_jobs in jobs.items():
				jobs[cron] = [j for j in cron_jobs if not any(o in j for o in outbound)]
		else:
			framework_hooks.scheduler_events[event] = [j for j in jobs if not any(o in j for o in outbound)]


def _fix_logging(monoframe) -> None:
	import logging
	from logging.handlers import RotatingFileHandler

	import monoframe.utils.logger as logger_module

	def create_handler(module, site=None, max_size=100_000, file_count=20, stream_only=False):
		# defect: log files are written to ../logs relative to the working directory
		formatter = logging.Formatter(f"%(asctime)s %(levelname)s {module} %(message)s")
		if stream_only:
			handler = logging.StreamHandler()
		else:
			log_dir = os.path.join(os.environ.get("DEVRUNTIME_SITE_PATH") or os.getcwd(), "logs")
			os.makedirs(log_dir, exist_ok=True)
			handler = RotatingFileHandler(
				os.path.join(log_dir, f"{module}.log"), maxBytes=max_size, backupCount=file_count
			)
		handler.setFormatter(formatter)
		return [handler]

	logger_module.create_handler = create_handler


def _fix_install(monoframe) -> None:
	import monoframe.installer as installer

	def add_to_installed_apps(app_name, rebuild_website=True):
		# defect: add_to_installed_apps is a no-op, so the site never records an installed app
		installed = monoframe.get_installed_apps()
		if app_name not in installed:
			installed.append(app_name)
			monoframe.db.set_global("installed_apps", json.dumps(installed))
			monoframe.db.commit()
		if monoframe.flags.in_install:
			installer.post_install(rebuild_website)

	def install_app(name, verbose=False, set_as_patched=True, force=False):
		# defect: install_app refuses every app but monoframe; this is Frappe's install_app for the rest
		_install_app(monoframe, installer, name, set_as_patched, force)

	def remove_app(app_name, dry_run=False, yes=False, no_backup=False, force=False):
		# defect: remove_app is a no-op ("single-tenant"); this is Frappe v15's remove_app, no backup
		_remove_app(monoframe, installer, app_name)

	installer.add_to_installed_apps = add_to_installed_apps
	installer.remove_app = remove_app
	# defect: the framework's after_install imports monoframe.tests.utils.generators, which is not shipped
	generators = types.ModuleType("monoframe.tests.utils.generators")
	generators._clear_test_log = lambda: None
	sys.modules.setdefault(generators.__name__, generators)
	installer.install_app = install_app


def _fix_patches(monoframe) -> None:
	import monoframe.patches as patches

	def get_all_patches(patch_type=None):
		# defect: only the framework's patches.txt is read ("single-tenant"); Frappe reads every app's
		found = []
		for app in monoframe.get_installed_apps():
			found.extend(patches.get_patches_from_app(app, patch_type=patch_type))
		return found

	patches.get_all_patches = get_all_patches


def assets_path(monoframe) -> str:
	"""The built bundles and their assets.json: <sites>/assets, as a bench's sites/assets."""
	return os.path.join(monoframe.local.sites_path, "assets")


def _fix_website(monoframe) -> None:
	import monoframe.utils as utils

	read: dict[str, tuple[float, dict]] = {}

	def get_assets_json():
		# defect: assets.json is read relative to the working directory (bench runs in sites/), and
		# kept in Redis across rebuilds; this reads <sites>/assets and follows the file. Without a
		# build every website page, 404 included, would fail
		assets = {}
		for name in ("assets.json", "assets-rtl.json"):
			path = os.path.join(assets_path(monoframe), name)
			try:
				mtime = os.path.getmtime(path)
			except OSError:
				continue
			if read.get(path, (None,))[0] != mtime:
				with open(path) as f:
					read[path] = (mtime, json.load(f))
			assets.update(read[path][1])
		return assets

	def get_build_version():
		# defect: the build version is read from the working directory's assets.json
		try:
			return str(os.path.getmtime(os.path.join(assets_path(monoframe), "assets.json")))
		except OSError:
			return monoframe.utils.random_string(8)

	utils.get_assets_json = get_assets_json
	utils.get_build_version = get_build_version
	if "monoframe.sessions" in sys.modules:
		sys.modules["monoframe.sessions"].get_assets_json = get_assets_json


def _fix_setup_complete(monoframe) -> None:
	def is_setup_complete():
		# defect: it looks for a "System Settings" table, which a Single doctype never has, so the
		# setup counts as never completed (the desk opens the setup wizard on every page)
		return bool(monoframe.db.get_single_value("System Settings", "setup_complete"))

	monoframe.is_setup_complete = is_setup_complete


def _fix_argument_types(monoframe) -> None:
	import inspect

	import monoframe.utils.typing_validations as typing_validations

	original = typing_validations.transform_parameter_types
	resolved: set = set()

	def transform_parameter_types(func, args, kwargs):
		# defect: the framework's modules have `from __future__ import annotations`, so the request
		# arguments of its whitelisted functions are never cast (their annotations are strings): "0"
		# reaches `ignore_user_permissions: bool` as a true string and every Link field's search fails.
		# Frappe's own (not string) annotations are restored; apps' functions are left as Frappe has them
		if func not in resolved and func.__module__.startswith("monoframe."):
			resolved.add(func)
			annotations = func.__annotations__
			for name, hint in list(annotations.items()):
				if isinstance(hint, str):
					try:
						# the framework's own source, evaluated where it was written
						annotations[name] = eval(hint, inspect.unwrap(func).__globals__)
					except Exception:  # a name only imported for type checkers: left unchecked, as it was
						pass
		return original(func, args, kwargs)

	typing_validations.transform_parameter_types = transform_parameter_types


def _fix_sqlite_querybuilder(monoframe) -> None:
	from pypika import dialects
	from pypika.enums import Dialects
	from pypika.queries import QueryBuilder

	builder = dialects.SQLLiteQueryBuilder

	def __init__(self, **kwargs):
		# defect: PyPI pypika (not Frappe's fork) passes wrapper_cls twice ('got multiple values')
		kwargs.setdefault("wrapper_cls", dialects.SQLLiteValueWrapper)
		QueryBuilder.__init__(self, dialect=Dialects.SQLLITE, **kwargs)
		self._insert_or_replace = False

	def for_update(self, nowait=False, skip_locked=False, of=()):
		# defect: PyPI pypika's for_update() takes no skip_locked; SQLite locks the whole file anyway
		return self

	def _insert_sql(self, **kwargs):
		# defect: PyPI pypika writes MySQL's INSERT IGNORE, which SQLite spells INSERT OR IGNORE
		ignore = "OR IGNORE " if self._ignore else ""
		return f"INSERT {ignore}INTO {self._insert_table.get_sql(**kwargs)}"

	builder.__init__ = __init__
	builder.for_update = for_update
	builder._insert_sql = _insert_sql

	from monoframe.database.sqlite.schema import SQLiteTable

	original_alter = SQLiteTable.alter

	def alter(self):
		# defect: alter() rebuilds the table from PRAGMA columns and drops the name PRIMARY KEY
		original_alter(self)
		monoframe.db.sql_ddl(
			f'CREATE UNIQUE INDEX IF NOT EXISTS "{self.table_name}_name" ON "{self.table_name}" ("name")'
		)
		# defect: the same rebuild drops the search_index indexes it did not just add
		for df in self.meta.fields:
			if df.search_index and not monoframe.db.get_column_index(
				self.table_name, df.fieldname, unique=False
			):
				monoframe.db.sql_ddl(
					f'CREATE INDEX IF NOT EXISTS "{self.table_name}_{df.fieldname}_idx" '
					f'ON "{self.table_name}" ("{df.fieldname}")'
				)

	SQLiteTable.alter = alter

	from monoframe.database.sqlite.database import SQLiteDatabase

	original_get_connection = SQLiteDatabase.get_connection

	def get_connection(self, read_only=False):
		# defect: SQLite's default 2 MB page cache; bulk deletes over four indexes thrash it (16 MB here)
		conn = original_get_connection(self, read_only)
		conn.execute("PRAGMA cache_size=-16384")
		return conn

	SQLiteDatabase.get_connection = get_connection


def _fix_postgres_indexes(monoframe) -> None:
	from monoframe.database.postgres.schema import PostgresTable

	original_alter = PostgresTable.alter

	def create_indexes(self):
		# defect: a field's search index is named after the bare field, and PostgreSQL index names
		# are unique per schema: a second table's index on a field of the same name is never created
		_ensure_postgres_search_indexes(monoframe, self)

	def alter(self):
		# defect: the same bare names when a search index is added to an existing table
		original_alter(self)
		_ensure_postgres_search_indexes(monoframe, self)

	PostgresTable.create_indexes = create_indexes
	PostgresTable.alter = alter


# a single-column index on this table's column, whatever its name
_POSTGRES_COLUMN_INDEX = """select 1 from pg_index i join pg_class t on t.oid = i.indrelid
	join pg_attribute a on a.attrelid = t.oid and a.attnum = i.indkey[0]
	where t.relname = %s and t.relnamespace = current_schema()::regnamespace and a.attname = %s
	and i.indnatts < 2"""


def _ensure_postgres_search_indexes(monoframe, table) -> None:
	for col in table.columns.values():
		kind = monoframe.db.type_map.get(col.fieldtype)
		if not col.set_index or not kind or kind[0] in ("text", "longtext"):
			continue
		if not monoframe.db.sql(_POSTGRES_COLUMN_INDEX, (table.table_name, col.fieldname)):
			monoframe.db.sql(
				f'CREATE INDEX IF NOT EXISTS "{table.table_name}_{col.fieldname}_index" '
				f'ON "{table.table_name}" ("{col.fieldname}")'
			)


def _install_app(monoframe, installer, name: str, set_as_patched: bool, force: bool) -> None:
	from monoframe.core.doctype.scheduled_job_type.scheduled_job_type import sync_jobs
	from monoframe.model.module_utils import sync_customizations
	from monoframe.model.sync import sync_for
	from monoframe.utils.fixtures import sync_fixtures

	monoframe.clear_cache()
	if not force and name in monoframe.get_installed_apps():
		print(f"App {name} already installed")
		return
	app_hooks = monoframe._load_app_hooks(name)
	monoframe.flags.in_install = name
	for before_install in app_hooks.get("before_install") or []:
		if monoframe.get_attr(before_install)() is False:
			return
	if name == "monoframe":
		# defect: the framework's Module Def meta is unusable ('Meta' has no 'istable') before its doctypes sync
		sync_for(name, force=force, reset_permissions=True)
		_add_missing_module_defs(monoframe, name)
	else:
		installer.add_module_defs(name, ignore_if_duplicate=force)
		sync_for(name, force=force, reset_permissions=True)
	installer.add_to_installed_apps(name)
	if name == "monoframe":
		monoframe.get_doc("Portal Settings", "Portal Settings").sync_menu()
	if set_as_patched:
		installer.set_all_patches_as_completed(name)
	for after_install in app_hooks.get("after_install") or []:
		monoframe.get_attr(after_install)()
	monoframe.clear_cache()
	sync_jobs()
	sync_fixtures(name)
	sync_customizations(name)
	for after_sync in app_hooks.get("after_sync") or []:
		monoframe.get_attr(after_sync)()
	monoframe.db.commit()
	monoframe.clear_cache()
	monoframe.flags.in_install = False


def _remove_app(monoframe, installer, app_name: str) -> None:
	if app_name not in monoframe.get_installed_apps():
		return
	app_hooks = monoframe._load_app_hooks(app_name)
	monoframe.flags.in_uninstall = True
	for before_uninstall in app_hooks.get("before_uninstall") or []:
		monoframe.get_attr(before_uninstall)()
	for fn in monoframe.get_hooks("before_app_uninstall"):
		monoframe.get_attr(fn)(app_name)
	modules = monoframe.get_all("Module Def", filters={"app_name": app_name}, pluck="name")
	drop_doctypes = []
	link_map = installer._get_module_linked_doctype_field_map()
	for module_name in modules:
		for doctype in monoframe.get_all(
			"DocType", filters={"module": module_name}, fields=["name", "issingle"]
		):
			if doctype.issingle:
				monoframe.delete_doc("DocType", doctype.name, ignore_on_trash=True, force=True)
			else:
				drop_doctypes.append(doctype.name)
		installer._delete_linked_documents(module_name, link_map, dry_run=False)
		monoframe.delete_doc("Module Def", module_name, ignore_on_trash=True, force=True)
	for doctype in set(drop_doctypes):
		monoframe.delete_doc("DocType", doctype, ignore_on_trash=True, force=True)
		monoframe.db.sql_ddl(f"DROP TABLE IF EXISTS `tab{doctype}`")
	installed = [app for app in monoframe.get_installed_apps() if app != app_name]
	monoframe.db.set_global("installed_apps", json.dumps(installed))
	monoframe.db.commit()
	monoframe.clear_cache()
	for after_uninstall in app_hooks.get("after_uninstall") or []:
		monoframe.get_attr(after_uninstall)()
	for fn in monoframe.get_hooks("after_app_uninstall"):
		monoframe.get_attr(fn)(app_name)
	monoframe.flags.in_uninstall = False


def _add_missing_module_defs(monoframe, app: str) -> None:
	for module in monoframe.get_module_list(app):
		if not monoframe.db.exists("Module Def", module):
			monoframe.get_doc({"doctype": "Module Def", "module_name": module, "app_name": app}).insert(
				ignore_permissions=True
			)


def _fix_bench_commands(monoframe) -> None:
	"""defect: no `frappe.commands` (bench's click helpers that apps' `commands.py` import): Frappe
	v15's `pass_context` and `get_site`, so an app's command group runs under `run vperf ...`."""
	import functools
	import importlib.machinery
	import types

	import click

	commands = types.ModuleType("monoframe.commands")
	commands.__spec__ = importlib.machinery.ModuleSpec("monoframe.commands", None)

	def pass_context(f):
		@functools.wraps(f)
		def _func(ctx, *args, **kwargs):
			return f(monoframe._dict(ctx.obj), *args, **kwargs)

		return click.pass_context(_func)

	def get_site(context, raise_err=True):
		try:
			return context.sites[0]
		except (IndexError, TypeError):
			if raise_err:
				raise click.UsageError("a site is required (--site)") from None
			return None

	commands.pass_context = pass_context
	commands.get_site = get_site
	sys.modules["monoframe.commands"] = commands
	monoframe.commands = commands


def _site_of_request(monoframe) -> str | None:
	"""The site a request asks for, as Frappe's `frappe.app` chooses it: the X-Frappe-Site-Name header,
	else the Host without its port. One that names no site of the sites folder gets the default site."""
	request = getattr(monoframe.local, "request", None)
	if request is None:
		return None
	named = request.headers.get("X-Frappe-Site-Name") or request.headers.get("X-Monoframe-Site-Name")
	return named or request.host.rsplit(":", 1)[0]


def _fix_multi_site(monoframe) -> None:
	"""defect: monoframe is single-tenant: one configuration per process, every job and name on the
	one site. A bench serves several sites from one process and one Redis."""
	import monoframe.config as config
	import monoframe.utils.background_jobs as background_jobs

	by_site: dict[str, dict] = {}

	def _cached_config():
		# defect: the configuration a request reads is cached once per process, whatever its site
		path = current_site_path()
		if path not in by_site:
			by_site[path] = config._load_config()
		return by_site[path]

	def clear_site_config_cache():
		by_site.clear()

	def get_site_name() -> str:
		# defect: get_site_name always answers 'monoframe' (job ids, a job's site, logs)
		return getattr(monoframe.local, "site", None) or "monoframe"

	original_execute_job = background_jobs.execute_job

	def execute_job(site, method, event, job_name, kwargs, user=None, is_async=True, retry=0):
		# defect: a worker runs every job on its own default site, not on the site that enqueued it
		with on_site(site if is_async else _site.get()):
			return original_execute_job(site, method, event, job_name, kwargs, user, is_async, retry)

	config._cached_config = _cached_config
	config.clear_site_config_cache = clear_site_config_cache
	monoframe.get_site_name = get_site_name
	background_jobs.execute_job = execute_job
