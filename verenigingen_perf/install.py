"""Install, migrate, uninstall and clear-cache hooks: the role that reads performance data, the
rollup's state row, and removing everything the app added when it is uninstalled."""

import frappe
from frappe import _

from verenigingen_perf.utils.performance import config, dashboard, redis_store, storage
from verenigingen_perf.utils.performance.rollup import ensure_state_row
from verenigingen_perf.utils.performance.schema import METRICS_USER, ROLLUP_STATE, SETTINGS

APP = "verenigingen_perf"
PERFORMANCE_MANAGER = "Performance Manager"
READER_ROLES = ("System Manager", PERFORMANCE_MANAGER)
SINGLE_DOCTYPES = (SETTINGS, ROLLUP_STATE)


def ensure_roles() -> None:
	if not frappe.db.exists("Role", PERFORMANCE_MANAGER):
		frappe.get_doc(
			{
				"doctype": "Role",
				"role_name": PERFORMANCE_MANAGER,
				"desk_access": 1,
				"description": _("Reads performance metrics, aggregates, health and dashboards."),
			}
		).insert(ignore_permissions=True)


def ensure_metrics_user() -> None:
	"""The identity a metrics token acts as (api/export.py): a user with the reader role only, no
	password (nobody logs in as it) and no welcome mail; created when missing. A site that disables it
	or gives it another role disables the token (the scrape is refused, never run with more)."""
	if frappe.db.exists("User", METRICS_USER):
		return
	user = frappe.get_doc(
		{
			"doctype": "User",
			"email": METRICS_USER,
			"first_name": _("Performance metrics scraper"),
			"send_welcome_email": 0,
			"roles": [{"role": PERFORMANCE_MANAGER}],
		}
	)
	user.flags.no_welcome_mail = True
	user.insert(ignore_permissions=True)


def remove_metrics_user() -> None:
	"""The metrics user, with the contact the framework made for it; nothing of it kept as a deleted
	document (the app made it, the app takes it)."""
	contacts = set(frappe.get_all("Contact", filters={"user": METRICS_USER}, pluck="name"))
	contacts |= set(frappe.get_all("Contact Email", filters={"email_id": METRICS_USER}, pluck="parent"))
	for contact in contacts:
		frappe.delete_doc("Contact", contact, ignore_permissions=True, force=True, delete_permanently=True)
	if frappe.db.exists("User", METRICS_USER):
		# the framework's own deletion of the user's notification settings would keep a copy of them
		frappe.delete_doc(
			"Notification Settings",
			METRICS_USER,
			ignore_permissions=True,
			force=True,
			delete_permanently=True,
		)
		frappe.delete_doc("User", METRICS_USER, ignore_permissions=True, force=True, delete_permanently=True)


def before_install() -> None:
	# doctype permissions name the role, so it must exist before the doctypes sync
	ensure_roles()


def after_install() -> None:
	storage.leave_room_for_updates()
	ensure_roles()
	ensure_metrics_user()
	ensure_state_row()
	install_shipped_rules()
	frappe.db.commit()


def after_migrate() -> None:
	storage.leave_room_for_updates()
	ensure_roles()
	ensure_metrics_user()
	ensure_state_row()
	install_shipped_rules()


def install_shipped_rules() -> None:
	# the alert rules the app ships (an edited or deleted one is left as the site has it)
	from verenigingen_perf.utils.performance.alerts import store

	store.install_shipped_rules()


def clear_caches() -> None:
	"""Hook of `bench clear-cache`: the app's caches go; its buffer and job state stay (they are
	listed in `persistent_cache_keys`)."""
	config.clear_config_cache()
	dashboard.clear_dashboard_cache()


def before_uninstall() -> None:
	"""Remove what the framework's uninstall leaves behind: the metrics user, the role and every grant
	of it, then the app's state (`remove_app_state`). The doctypes, their tables and the module go with
	the framework's own uninstall."""
	remove_metrics_user()
	remove_role()
	remove_app_state()


def after_uninstall() -> None:
	# a job that was running during the uninstall may have written state (a report, a sample, its
	# own Scheduled Job Log) or pushed a measurement after the first sweep: sweep again
	remove_app_state()


def remove_app_state() -> None:
	"""The Singles' values, the scheduled job types with their logs, and the app's Redis keys. Plain
	deletes (no document of the app is loaded), so it also works once the app's modules are gone."""
	frappe.db.sql(
		f"delete from `tabSingles` where doctype in ({', '.join(['%s'] * len(SINGLE_DOCTYPES))})",
		SINGLE_DOCTYPES,
	)
	job_types = set(scheduled_job_type_names()) | set(
		frappe.get_all("Scheduled Job Type", filters={"method": ("like", f"{APP}.%")}, pluck="name")
	)
	# Frappe v16 names job types by hash: the names the first sweep of this uninstall found are
	# what a late log row refers to
	_SWEPT_JOB_TYPES.update(job_types)
	job_types |= _SWEPT_JOB_TYPES
	if job_types:
		frappe.db.delete("Scheduled Job Log", {"scheduled_job_type": ("in", sorted(job_types))})
		frappe.db.delete("Scheduled Job Type", {"name": ("in", sorted(job_types))})
	frappe.db.commit()
	redis_store.delete_app_keys()


_SWEPT_JOB_TYPES: set[str] = set()


def scheduled_job_type_names() -> list[str]:
	"""The names Frappe v15 gives the app's scheduled job types (the method's last two parts), from
	the app's own hooks (readable after the app is uninstalled)."""
	from verenigingen_perf import hooks

	methods = []
	for event, value in hooks.scheduler_events.items():
		groups = value.values() if event == "cron" else [value]
		methods += [method for group in groups for method in group]
	return [".".join(method.split(".")[-2:]) for method in methods]


def remove_role() -> None:
	for doctype in ("Has Role", "Custom DocPerm", "DocPerm"):
		frappe.db.delete(doctype, {"role": PERFORMANCE_MANAGER})
	if frappe.db.exists("Role", PERFORMANCE_MANAGER):
		frappe.delete_doc("Role", PERFORMANCE_MANAGER, ignore_permissions=True, force=True)
