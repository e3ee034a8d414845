"""Install, migrate, uninstall and clear-cache hooks: the role that reads performance data, the
rollup's state row, and removing everything the app added when it is uninstalled."""

import frappe
from frappe import _

from verenigingen_perf.utils.performance import config, dashboard, redis_store
from verenigingen_perf.utils.performance.rollup import ensure_state_row
from verenigingen_perf.utils.performance.schema import ROLLUP_STATE, SETTINGS

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


def before_install() -> None:
	# doctype permissions name the role, so it must exist before the doctypes sync
	ensure_roles()


def after_install() -> None:
	ensure_roles()
	ensure_state_row()
	frappe.db.commit()


def after_migrate() -> None:
	ensure_roles()
	ensure_state_row()


def clear_caches() -> None:
	"""Hook of `bench clear-cache`: the app's caches go; its buffer and job state stay (they are
	listed in `persistent_cache_keys`)."""
	config.clear_config_cache()
	dashboard.clear_dashboard_cache()


def before_uninstall() -> None:
	"""Remove what the framework's uninstall leaves behind: the role and every grant of it, the
	Singles' values, the scheduled job types (with their logs) and the app's Redis keys. The
	doctypes, their tables and the module go with the framework's own uninstall."""
	remove_role()
	frappe.db.sql(
		f"delete from `tabSingles` where doctype in ({', '.join(['%s'] * len(SINGLE_DOCTYPES))})",
		SINGLE_DOCTYPES,
	)
	for job_type in frappe.get_all(
		"Scheduled Job Type", filters={"method": ("like", f"{APP}.%")}, pluck="name"
	):
		frappe.delete_doc("Scheduled Job Type", job_type, ignore_permissions=True, force=True)
	frappe.db.commit()
	redis_store.delete_app_keys()


def after_uninstall() -> None:
	# a worker may have pushed a measurement between the first sweep and the app's removal
	redis_store.delete_app_keys()


def remove_role() -> None:
	for doctype in ("Has Role", "Custom DocPerm", "DocPerm"):
		frappe.db.delete(doctype, {"role": PERFORMANCE_MANAGER})
	if frappe.db.exists("Role", PERFORMANCE_MANAGER):
		frappe.delete_doc("Role", PERFORMANCE_MANAGER, ignore_permissions=True, force=True)
