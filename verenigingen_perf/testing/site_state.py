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

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import frappe

from verenigingen_perf.install import PERFORMANCE_MANAGER
from verenigingen_perf.utils.performance.schema import METRICS_USER, SETTINGS

# a site whose operator says it may be thrown away (`bench --site S set-config vperf_disposable_site 1`):
# only there do the tests uninstall and reinstall the app
DISPOSABLE_SITE_KEY = "vperf_disposable_site"


# what the session compares of the role and the metrics user: their own fields and when they were last
# saved (a test that saved them and put the values back still changed them); not what a login or a
# scrape updates (last_active, last_login)
ROLE_FIELDS = ["name", "desk_access", "disabled", "two_factor_auth", "modified"]
METRICS_USER_FIELDS = ["name", "enabled", "user_type", "api_key", "modified"]


@dataclass(frozen=True)
class SiteState:
	settings: tuple[tuple[str, str | None], ...]
	secrets: tuple[tuple, ...]
	# (parenttype, parent, name, idx) of every grant of the role
	grants: tuple[tuple[str, str, str, int], ...]
	role: tuple | None
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
		"select parenttype, parent, name, idx from `tabHas Role` where role=%s order by parenttype, parent",
		(PERFORMANCE_MANAGER,),
	)
	role = frappe.db.get_value("Role", PERFORMANCE_MANAGER, ROLE_FIELDS)
	user = frappe.db.get_value("User", METRICS_USER, METRICS_USER_FIELDS)
	return SiteState(
		tuple((field, value) for field, value in settings),
		tuple(tuple(row) for row in secrets),
		tuple((parenttype, parent, name, int(idx or 0)) for parenttype, parent, name, idx in grants),
		tuple(str(value) for value in role) if role else None,
		tuple(str(value) for value in user) if user else None,
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
		return {(t, parent, idx) for t, parent, _name, idx in grants if parent not in ignore_users}

	if kept(before.grants) != kept(after.grants):
		lost = sorted(kept(before.grants) - kept(after.grants))
		added = sorted(kept(after.grants) - kept(before.grants))
		found.append(f"{PERFORMANCE_MANAGER} grants changed: lost {lost}, added {added}")
	if before.role != after.role:
		found.append(f"the role {PERFORMANCE_MANAGER} changed: {before.role} -> {after.role}")
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
		for parenttype, parent, _name, _idx in take().grants
		if frappe.db.exists(parenttype, parent)
	}
	for parenttype, parent, name, idx in state.grants:
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
				"idx": idx,
			}
		).db_insert()
		if parenttype == "User":
			frappe.clear_cache(user=parent)
	frappe.db.commit()
	config.clear_config_cache()


@contextmanager
def rows_put_back(*selections: tuple[str, dict[str, Any]]) -> Iterator[None]:
	"""For a test that saves a record of the site (a user, a role) and changes it back: when the block
	ends, the rows each (doctype, filters) selects are put back exactly as stored, every column (their
	`modified` and `idx` included), rows it selects that were not there are removed, and the change
	log (Version) written meanwhile for those records goes. Plain rows, as `restore` does."""
	started = frappe.utils.now_datetime()
	frappe.db.rollback()
	saved = [
		(doctype, filters, frappe.get_all(doctype, filters=filters, fields=["*"]))
		for doctype, filters in selections
	]
	try:
		yield
	finally:
		write_retried(lambda: _put_back(saved, started))
		frappe.clear_cache()


def _put_back(saved: list[tuple[str, dict[str, Any], list[dict[str, Any]]]], since: Any) -> None:
	for doctype, filters, rows in saved:
		names = {row["name"] for row in rows} | set(frappe.get_all(doctype, filters=filters, pluck="name"))
		frappe.db.delete(doctype, filters)
		for row in rows:
			columns = list(row)
			frappe.db.sql(
				f"insert into `tab{doctype}` ({', '.join(f'`{c}`' for c in columns)}) "
				f"values ({', '.join(['%s'] * len(columns))})",
				[row[c] for c in columns],
			)
		if names:
			frappe.db.delete(
				"Version",
				{"ref_doctype": doctype, "docname": ("in", sorted(names)), "creation": (">=", since)},
			)


def write_retried(write: Callable[[], None], attempts: int = 5) -> None:
	"""Run `write` in a fresh transaction and commit, trying again while the database refuses it for
	another writer: on SQLite (WAL) a web server's commit between this transaction's first read and
	its write makes the write fail at once, and a server request that is still finishing holds the one
	writer's lock; a fresh transaction a little later is the cure."""
	for attempt in range(attempts):
		frappe.db.rollback()
		try:
			write()
			frappe.db.commit()
			return
		except frappe.QueryDeadlockError:
			frappe.db.rollback()
			if attempt == attempts - 1:
				raise
			time.sleep(2)


def disposable() -> bool:
	"""Whether the site's operator lets the tests uninstall and reinstall the app on it."""
	return bool(frappe.conf.get(DISPOSABLE_SITE_KEY))
