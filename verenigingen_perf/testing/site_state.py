"""What a test run must leave on a site exactly as it found it: the app's settings (every stored value
of Performance Settings, its encrypted secrets such as the metrics token among them), every grant of
the app's role, and the app's metrics user.

The test suite runs on real bench sites too (docs/operator-guide.md, "Running the tests on a bench
site"): a test that changes one of these restores it, `take` before and `restore` after, and the
session compares the site at its end with the site at its start (`differences`), so that a test that
forgets is caught.
Plain rows, read and written as they are stored: restoring brings back the very values, not what
the app would make of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import frappe

from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.utils.performance.schema import METRICS_USER, SETTINGS

# a site whose operator says it may be thrown away (`bench --site S set-config vperf_disposable_site 1`):
# only there do the tests uninstall and reinstall the app
DISPOSABLE_SITE_KEY = "vperf_disposable_site"


@dataclass(frozen=True)
class SiteState:
	settings: tuple[tuple[str, str | None], ...]
	secrets: tuple[tuple, ...]
	grants: tuple[tuple[str, str, str], ...]
	metrics_user: tuple | None


def take() -> SiteState:
	settings = frappe.db.sql(
		"select field, value from `tabSingles` where doctype=%s order by field", (SETTINGS,)
	)
	secrets = frappe.db.sql(
		"select doctype, name, fieldname, password, encrypted from `__Auth` where doctype=%s "
		"order by fieldname",
		(SETTINGS,),
	)
	grants = frappe.db.sql(
		"select parenttype, parent, name from `tabHas Role` where role=%s order by parenttype, parent",
		(PERFORMANCE_MANAGER,),
	)
	user = frappe.db.get_value("User", METRICS_USER, ["name", "enabled", "user_type"])
	return SiteState(
		tuple((field, value) for field, value in settings),
		tuple(tuple(row) for row in secrets),
		tuple((parenttype, parent, name) for parenttype, parent, name in grants),
		tuple(user) if user else None,
	)


def differences(before: SiteState, after: SiteState, ignore_users: set[str] = frozenset()) -> list[str]:
	"""What differs, in words; grants of `ignore_users` (the tests' own users) do not count."""
	found = []
	if before.settings != after.settings:
		changed = sorted(set(before.settings) ^ set(after.settings))
		fields = sorted({field for field, _value in changed})
		found.append(f"Performance Settings changed: {', '.join(fields)}")
	if before.secrets != after.secrets:
		found.append("Performance Settings' secrets (the metrics token, the OTLP headers) changed")

	def kept(grants: tuple) -> set:
		return {(t, parent) for t, parent, _name in grants if parent not in ignore_users}

	if kept(before.grants) != kept(after.grants):
		lost = sorted(kept(before.grants) - kept(after.grants))
		added = sorted(kept(after.grants) - kept(before.grants))
		found.append(f"{PERFORMANCE_MANAGER} grants changed: lost {lost}, added {added}")
	if before.metrics_user != after.metrics_user:
		found.append(f"the metrics user changed: {before.metrics_user} -> {after.metrics_user}")
	return found


def restore(state: SiteState) -> None:
	"""Put back the settings and their secrets as they were stored, and the role's lost grants
	(each with its own row name); commits and drops the app's configuration cache."""
	from verenigingen_perf.utils.performance import config

	frappe.db.rollback()
	frappe.db.sql("delete from `tabSingles` where doctype=%s", (SETTINGS,))
	for field, value in state.settings:
		frappe.db.sql(
			"insert into `tabSingles` (doctype, field, value) values (%s, %s, %s)", (SETTINGS, field, value)
		)
	frappe.db.sql("delete from `__Auth` where doctype=%s", (SETTINGS,))
	for doctype, name, fieldname, password, encrypted in state.secrets:
		frappe.db.sql(
			"insert into `__Auth` (doctype, name, fieldname, password, encrypted) values (%s, %s, %s, %s, %s)",
			(doctype, name, fieldname, password, encrypted),
		)
	present = {
		(parenttype, parent)
		for parenttype, parent, _name in take().grants
		if frappe.db.exists(parenttype, parent)
	}
	for parenttype, parent, name in state.grants:
		if (parenttype, parent) in present or not frappe.db.exists(parenttype, parent):
			continue
		frappe.get_doc(
			{
				"doctype": "Has Role",
				"name": name,
				"parenttype": parenttype,
				"parent": parent,
				"parentfield": "roles",
				"role": PERFORMANCE_MANAGER,
			}
		).db_insert()
		if parenttype == "User":
			frappe.clear_cache(user=parent)
	frappe.db.commit()
	config.clear_config_cache()


def disposable() -> bool:
	"""Whether the site's operator lets the tests uninstall and reinstall the app on it."""
	return bool(frappe.conf.get(DISPOSABLE_SITE_KEY))
