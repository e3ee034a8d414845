# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

from frappe.model.document import Document


class PerformanceDatabaseSnapshot(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		cache_hit_ratio: DF.Float
		db_type: DF.Data | None
		duration_s: DF.Float
		kind: DF.Literal["scheduled", "on demand"]
		pin_name: DF.Data | None
		pinned: DF.Check
		recommendation_count: DF.Int
		snapshot: DF.Code | None
		statement_count: DF.Int
		table_count: DF.Int
		taken_at: DF.Datetime
	# end: auto-generated types
	"""One database health snapshot, written by database/snapshot.py (System Manager only: statement
	shapes reveal the schema). Statement text in it has its literals replaced."""
