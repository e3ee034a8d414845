"""The collector of each backend the app supports, chosen by `frappe.db.db_type`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import frappe

from verenigingen_perf.utils.performance.database import collect_mariadb, collect_postgres, collect_sqlite

COLLECTORS: dict[str, Callable[..., dict[str, Any]]] = {
	"mariadb": collect_mariadb.collect,
	"postgres": collect_postgres.collect,
	"sqlite": collect_sqlite.collect,
}


def collector() -> Callable[..., dict[str, Any]] | None:
	"""The current site's collector (None for a backend the app has none for)."""
	return COLLECTORS.get(frappe.db.db_type)
