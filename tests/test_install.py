"""The app is installed on the site with its doctypes, role, module and hooks; `bench clear-cache`
keeps its state; uninstalling removes what it added and nothing else, and a reinstall starts clean."""

import importlib
import json
import subprocess
import sys
import time

import frappe
import pytest

from verenigingen_perf import install
from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.testing import site_state
from verenigingen_perf.utils.performance import buffer, capture, config, job_reports, redis_store
from verenigingen_perf.utils.performance.schema import METRICS_USER, ROLLUP_STATE, SETTINGS


def test_app_is_installed(site):
	assert "verenigingen_perf" in frappe.get_installed_apps()


def test_module_and_doctypes_exist(site):
	assert frappe.db.get_value("Module Def", "Verenigingen Perf", "app_name") == "verenigingen_perf"
	meta = frappe.get_meta("Performance Settings")
	assert meta.issingle
	assert meta.module == "Verenigingen Perf"
	assert meta.has_field("sampling_rate")


def test_role_is_installed_with_desk_access(site):
	assert frappe.db.get_value("Role", PERFORMANCE_MANAGER, "desk_access") == 1


def test_app_hooks_are_active(site):
	assert "verenigingen_perf.install.clear_caches" in frappe.get_hooks("clear_cache")
	assert "verenigingen_perf:" in frappe.get_hooks("persistent_cache_keys")
	# no required_apps: v15's installer looks every required app up on a git host
	assert "required_apps" not in vars(importlib.import_module("verenigingen_perf.hooks"))


def test_settings_controller_is_the_apps(site):
	doc = frappe.get_single("Performance Settings")
	assert type(doc).__module__.startswith("verenigingen_perf.")


def test_postgres_leaves_room_on_the_pages_of_the_tables_every_fold_rewrites(site):
	if frappe.db.db_type != "postgres":
		pytest.skip("MariaDB and SQLite update rows in place")
	install.after_migrate()
	for doctype in ("Performance Aggregate", "Performance Export Counter"):
		(options,) = frappe.db.sql("select reloptions from pg_class where relname = %s", (f"tab{doctype}",))[
			0
		]
		assert "fillfactor=70" in (options or []), (doctype, options)


def test_migrate_brings_back_a_deleted_role(site):
	"""The role is made again on migrate; the role and the grants the deletion took are the site's, put
	back exactly as they were (the v15 bench showed a re-made role's date and a grant's order changed)."""
	role_rows = (("Role", {"name": PERFORMANCE_MANAGER}), ("Has Role", {"role": PERFORMANCE_MANAGER}))
	try:
		with site_state.rows_put_back(*role_rows):
			frappe.db.delete("Has Role", {"role": PERFORMANCE_MANAGER})
			frappe.delete_doc("Role", PERFORMANCE_MANAGER, ignore_permissions=True, force=True)
			install.after_migrate()
			assert frappe.db.exists("Role", PERFORMANCE_MANAGER)
			frappe.db.commit()
	finally:
		from verenigingen_perf.testing.members import forget_deleted

		forget_deleted("Role", [PERFORMANCE_MANAGER])
		frappe.db.commit()


def plant_buffered(count: int) -> list[str]:
	operation = f"test.clear-cache.{capture.new_id()}"
	names = []
	monitoring = config.get_config().monitoring
	for _ in range(count):
		name = capture.new_id()
		names.append(name)
		buffer.add(
			{
				"name": name,
				"operation": operation,
				"operation_type": "custom",
				"started_at": time.time(),
				"status": "ok",
			},
			monitoring,
		)
	buffer.flush()
	return names


def test_clear_cache_keeps_buffered_measurements_claims_and_reports(site, default_settings):
	"""`bench clear-cache` (also run by migrate and install-app) deletes the site's Redis keys; the
	app's state survives it, its caches do not."""
	buffer.drain()
	names = plant_buffered(29)
	client = buffer.redis_client()
	client.hset(buffer.claims_key(), "a-claim", time.time())
	job_reports.record("drain", {"status": "ok"})
	config.get_config()
	before = buffer.state()
	assert before.buffered >= 29
	frappe.clear_cache()
	after = buffer.state()
	assert after.buffered == before.buffered
	assert client.hget(buffer.claims_key(), "a-claim") is not None
	assert "drain" in job_reports.read().by_job
	assert client.get(redis_store.key(config.CACHE_KEY)) is None
	client.hdel(buffer.claims_key(), "a-claim")
	buffer.drain()
	assert set(frappe.get_all("Performance Metric", filters={"name": ("in", names)}, pluck="name")) == set(
		names
	)


def test_migrate_keeps_buffered_measurements(site, default_settings, site_env):
	if not site_env:
		pytest.skip("migrating is the bench's own command; `bench migrate` runs the same clear_cache")
	import subprocess
	import sys

	buffer.drain()
	plant_buffered(7)
	before = buffer.state().buffered
	subprocess.run(
		[sys.executable, "-m", "vperf_devruntime", "site"], env={**site_env}, check=True, capture_output=True
	)
	assert buffer.state().buffered == before
	buffer.drain()


def test_scheduled_jobs_are_measured_under_their_own_names(site, default_settings, run_background_jobs):
	"""Frappe runs scheduled jobs through one wrapper (`run_scheduled_job`); each is measured under
	the job it runs."""
	config.update_config({"sampling_rate": 1})
	frappe.db.commit()
	buffer.drain()
	job = frappe.get_doc(
		"Scheduled Job Type", {"method": "verenigingen_perf.utils.performance.buffer.drain_job"}
	)
	job.enqueue(force=True)
	run_background_jobs()
	buffer.drain()
	rows = frappe.get_all(
		"Performance Metric",
		filters={"operation_type": "job", "creation": (">", frappe.utils.add_to_date(None, minutes=-5))},
		pluck="operation",
	)
	assert "verenigingen_perf.utils.performance.buffer.drain_job" in rows
	assert not [op for op in rows if op.endswith("run_scheduled_job")]


def test_uninstall_removes_what_the_app_added_and_reinstall_starts_clean(site, default_settings):
	"""Only on a site its operator marked disposable: the uninstall takes the site's grants, settings
	and token with it (that is what it is for); the test puts them back after the reinstall."""
	if not site_state.disposable():
		pytest.skip(
			f"uninstalls the app: runs only on a site marked disposable "
			f"(bench --site S set-config {site_state.DISPOSABLE_SITE_KEY} 1)"
		)
	from frappe.installer import install_app, remove_app

	# the role and the metrics user the reinstall makes again are put back as the site had them (their
	# dates and grants' order included), as are the settings, secrets and grants
	kept = (
		("Role", {"name": PERFORMANCE_MANAGER}),
		("Has Role", {"role": PERFORMANCE_MANAGER}),
		("User", {"name": METRICS_USER}),
		("Has Role", {"parent": METRICS_USER}),
	)
	with site_state.rows_put_back(*kept):
		state = site_state.take()

		config.update_config({"sampling_rate": "0.42"})
		frappe.db.commit()
		plant_buffered(3)
		user_roles_before = count_user_roles()
		desk_records = {
			dt: frappe.get_all(dt, filters={"module": MODULE}, pluck="name") for dt in DESK_DOCTYPES
		}
		assert all(desk_records.values()), desk_records
		roles_before = frappe.db.count("Role")
		# copies of the metrics user's documents that an earlier uninstall (before this was checked) kept
		deleted_before = deleted_copies_of_the_metrics_user()
		assert frappe.db.get_singles_value(SETTINGS, "sampling_rate") == 0.42

		job_types = frappe.get_all(
			"Scheduled Job Type", filters={"method": ("like", "verenigingen_perf.%")}, pluck="name"
		)
		app_doctypes = frappe.get_all("DocType", filters={"module": "Verenigingen Perf"}, pluck="name")
		try:
			remove_app("verenigingen_perf", yes=True, no_backup=True)
			frappe.db.commit()
			check_nothing_is_left(roles_before, user_roles_before, deleted_before)
			# a job that ran during the uninstall wrote its report and its (failed) log after the first
			# sweep: the uninstall's last step sweeps it too
			from verenigingen_perf.install import after_uninstall

			late_job = job_types[0]
			frappe.db.sql(
				"insert into `tabSingles` (doctype, field, value) values (%s, 'last_monitor', '{}')",
				(ROLLUP_STATE,),
			)
			frappe.get_doc(
				{"doctype": "Scheduled Job Log", "scheduled_job_type": late_job, "status": "Failed"}
			).db_insert()
			frappe.db.commit()
			after_uninstall()
			check_nothing_is_left(roles_before, user_roles_before, deleted_before)
			assert not frappe.db.exists("Scheduled Job Log", {"scheduled_job_type": late_job})
		finally:
			if "verenigingen_perf" not in frappe.get_installed_apps():
				install_app("verenigingen_perf")
				frappe.db.commit()
			# the framework's copies of what its uninstall deleted are the test's, not the site's
			from verenigingen_perf.testing.members import forget_deleted

			forget_deleted("DocType", app_doctypes)
			forget_deleted("Module Def", ["Verenigingen Perf"])
			forget_deleted("Role", [PERFORMANCE_MANAGER])
			for doctype, names in desk_records.items():
				forget_deleted(doctype, names)
			frappe.db.commit()
		try:
			# the desk comes back with the app: pages, workspace, cards and chart
			for doctype, names in desk_records.items():
				assert sorted(frappe.get_all(doctype, filters={"module": MODULE}, pluck="name")) == sorted(
					names
				)
			assert frappe.db.exists("Role", PERFORMANCE_MANAGER)
			assert frappe.db.exists("User", METRICS_USER)
			# the 0.42 override went with the app: nothing stored overrides the environment
			assert frappe.db.get_singles_value(SETTINGS, "sampling_rate") != 0.42
			assert config.read_stored_settings()[1] == {}
			watermark = frappe.db.sql(
				"select value from `tabSingles` where doctype=%s and field='watermark'", (ROLLUP_STATE,)
			)
			assert not watermark or watermark[0][0] is None
			assert frappe.get_all("Scheduled Job Type", filters={"method": ("like", "verenigingen_perf.%")})
			assert config.get_config().overrides == {}
			json.dumps(config.describe(config.get_config()))
		finally:
			# the site's grants of the role, its settings and its token, as they were before
			site_state.restore(state)


MODULE = "Verenigingen Perf"
# what the app adds to the desk besides its doctypes; all of it belongs to its module
DESK_DOCTYPES = ("Page", "Workspace", "Number Card", "Dashboard Chart", "Dashboard Chart Source")


def count_user_roles() -> int:
	"""Users' roles other than the app's (the app's pages, workspace and chart have roles too)."""
	return frappe.db.count("Has Role", {"role": ("!=", PERFORMANCE_MANAGER), "parenttype": "User"})


def deleted_copies_of_the_metrics_user() -> int:
	return frappe.db.count("Deleted Document", {"deleted_name": METRICS_USER})


def check_nothing_is_left(roles_before: int, user_roles_before: int, deleted_before: int) -> None:
	assert "verenigingen_perf" not in frappe.get_installed_apps()
	assert not frappe.db.exists("User", METRICS_USER)
	# nothing of the metrics user is kept as a deleted document (its notification settings included)
	assert deleted_copies_of_the_metrics_user() == deleted_before
	assert not frappe.db.exists("Contact", {"user": METRICS_USER})
	assert not frappe.db.exists("Role", PERFORMANCE_MANAGER)
	assert frappe.db.count("Role") == roles_before - 1
	assert count_user_roles() == user_roles_before
	for doctype in DESK_DOCTYPES:
		assert not frappe.get_all(doctype, filters={"module": MODULE}), doctype
	for parenttype in ("Page", "Workspace", "Dashboard Chart"):
		assert not frappe.db.count("Has Role", {"parenttype": parenttype, "role": PERFORMANCE_MANAGER})
	assert not frappe.db.sql("select 1 from `tabSingles` where doctype in (%s, %s)", (SETTINGS, ROLLUP_STATE))
	assert not frappe.get_all("Scheduled Job Type", filters={"method": ("like", "verenigingen_perf.%")})
	assert not frappe.db.exists("Module Def", "Verenigingen Perf")
	assert not list(buffer.redis_client().scan_iter(match=redis_store.key("*")))


def test_installing_the_app_and_its_test_extra_breaks_no_requirement():
	"""`pip check` in the environment the tests run in: the app's dependencies and its test extra
	(not its otlp extra, whose protobuf Frappe v15's google-api-core refuses) fit what is there."""
	result = subprocess.run(
		[sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300
	)
	assert result.returncode == 0, result.stdout + result.stderr
