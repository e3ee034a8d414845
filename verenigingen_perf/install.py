"""Install and migrate hooks: the role that reads performance data."""

import frappe

from verenigingen_perf.utils.performance.rollup import ensure_state_row

PERFORMANCE_MANAGER = "Performance Manager"
READER_ROLES = ("System Manager", PERFORMANCE_MANAGER)


def ensure_roles() -> None:
	if not frappe.db.exists("Role", PERFORMANCE_MANAGER):
		frappe.get_doc(
			{
				"doctype": "Role",
				"role_name": PERFORMANCE_MANAGER,
				"desk_access": 1,
				"description": "Reads performance metrics, aggregates, health and dashboards.",
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
