"""The app is installed on the site with its doctypes, role, module and hooks."""

import frappe

from verenigingen_perf.install import PERFORMANCE_MANAGER


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
	assert "verenigingen_perf.utils.performance.config.clear_config_cache" in frappe.get_hooks("clear_cache")


def test_settings_controller_is_the_apps(site):
	doc = frappe.get_single("Performance Settings")
	assert type(doc).__module__.startswith("verenigingen_perf.")


def test_migrate_keeps_the_role(site):
	from verenigingen_perf.install import after_migrate

	frappe.db.delete("Has Role", {"role": PERFORMANCE_MANAGER})
	frappe.delete_doc("Role", PERFORMANCE_MANAGER, ignore_permissions=True, force=True)
	after_migrate()
	assert frappe.db.exists("Role", PERFORMANCE_MANAGER)
	frappe.db.commit()
