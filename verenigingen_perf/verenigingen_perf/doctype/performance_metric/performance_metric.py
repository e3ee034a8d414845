# Copyright (c) 2026, Verenigingen and contributors
# For license information, please see license.txt

import frappe
from frappe.model.document import Document


class PerformanceMetric(Document):
	# begin: auto-generated types
	# This code is auto-generated. Do not modify anything in this block.

	from typing import TYPE_CHECKING

	if TYPE_CHECKING:
		from frappe.types import DF

		context: DF.SmallText | None
		db_time_ms: DF.Float
		duration_ms: DF.Float
		error: DF.SmallText | None
		http_status: DF.Int
		operation: DF.Data
		operation_type: DF.Literal["api", "page", "job", "custom"]
		parent_span: DF.Data | None
		peak_alloc_kb: DF.Float
		peak_rss_mb: DF.Float
		query_count: DF.Int
		rss_growth_kb: DF.Int
		started_at: DF.Datetime | None
		status: DF.Literal["ok", "client_error", "error"]
		trace_id: DF.Data | None
		user: DF.Data | None
	# end: auto-generated types
	"""A detail row, bulk-inserted by the buffer drain; no role may create or edit one in the desk."""

	@staticmethod
	def clear_old_logs(days: int = 7) -> int:
		"""Frappe's Log Settings convention. Deliberately not in `default_log_clearing_doctypes`: the
		app's retention job owns the schedule; this only ever deletes rows already aggregated."""
		from verenigingen_perf.utils.performance.retention import clear_old_detail_rows

		return clear_old_detail_rows(days)


def on_doctype_update() -> None:
	# the rollups and the retention job read by operation over a time range
	frappe.db.add_index("Performance Metric", ["operation", "started_at"])
	# the desk's trace view reads one trace's spans
	frappe.db.add_index("Performance Metric", ["trace_id"])
	# the rollup reads by ingestion time (creation), the retention job deletes by it; MariaDB's and
	# SQLite's tables come with a creation index, PostgreSQL's without (a name of its own: PostgreSQL
	# index names are unique per schema, and another table may have a "creation_index")
	if not frappe.db.multisql(_CREATION_INDEX_SQL, ("tabPerformance Metric",)):
		frappe.db.add_index("Performance Metric", ["creation"], index_name="vperf_metric_creation")


# any index that leads with `creation`, whatever the framework named it
_CREATION_INDEX_SQL = {
	"mariadb": """select 1 from information_schema.statistics where table_schema = database()
		and table_name = %s and column_name = 'creation' and seq_in_index = 1""",
	"postgres": """select 1 from pg_index i join pg_class t on t.oid = i.indrelid
		join pg_attribute a on a.attrelid = t.oid and a.attnum = i.indkey[0]
		where t.relname = %s and t.relnamespace = current_schema()::regnamespace and a.attname = 'creation'""",
	"sqlite": """select 1 from pragma_index_list(%s) as l join pragma_index_info(l.name) as c
		where c.name = 'creation' and c.seqno = 0""",
}
