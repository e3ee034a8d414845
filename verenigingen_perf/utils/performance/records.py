"""Writing the judgement records (regressions, alerts) that a unique key keeps single."""

from __future__ import annotations

from typing import Any

import frappe

_SAVEPOINT = "vperf_insert_once"


def insert_once(doc: Any) -> bool:
	"""Insert `doc` as a plain row unless a unique key of its table already holds its value (another
	evaluation opened the same record first): False then, and the transaction goes on (a savepoint,
	so that PostgreSQL's aborted statement does not abort the rest)."""
	frappe.db.savepoint(_SAVEPOINT)
	try:
		doc.db_insert()
	except (frappe.DuplicateEntryError, frappe.UniqueValidationError):
		frappe.db.rollback(save_point=_SAVEPOINT)
		return False
	return True
