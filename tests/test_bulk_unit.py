"""Unit tests of the JSON bulk writes' statements. No site: what they write is checked against the
doctypes' JSON, and what they do against each database in the integration tests (drain, rollup,
export counters)."""

import json
from pathlib import Path

import pytest

from verenigingen_perf.utils.performance import buffer, bulk, rollup
from verenigingen_perf.utils.performance.export import counter_store

DOCTYPES = Path(__file__).parent.parent / "verenigingen_perf" / "verenigingen_perf" / "doctype"
KIND_OF_FIELDTYPE = {
	"Data": "text",
	"Select": "text",
	"Link": "text",
	"Long Text": "long text",
	"Small Text": "long text",
	"Code": "long text",
	"Int": "integer",
	"Check": "integer",
	"Float": "float",
	"Datetime": "datetime",
}
WRITES = {
	"drain": buffer._DETAIL_ROWS,
	"rollup": rollup._AGGREGATE_ROWS,
	"export counters": counter_store._COUNTER_ROWS,
}


def doctype_fields(doctype: str) -> dict[str, str]:
	folder = doctype.lower().replace(" ", "_")
	meta = json.loads((DOCTYPES / folder / f"{folder}.json").read_text())
	return {field["fieldname"]: field["fieldtype"] for field in meta["fields"]}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_each_column_is_unpacked_as_its_doctype_stores_it(write):
	fields = doctype_fields(write.doctype)
	for column, kind in write.columns:
		assert column in fields, f"{write.doctype} has no field {column}"
		assert kind == KIND_OF_FIELDTYPE[fields[column]], f"{write.doctype}.{column}: {fields[column]}"
	# every field the rows leave out is a layout field
	written = {column for column, _kind in write.columns}
	assert {f for f, t in fields.items() if t in KIND_OF_FIELDTYPE} <= written


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_one_parameter_per_statement_on_every_database(write):
	assert set(write.statements) == {"mariadb", "sqlite", "postgres"}
	for db, statement in write.statements.items():
		assert statement.count("%s") == 1, db
		# name, creation, modified, owner, modified_by, docstatus, then the columns
		inserted = statement[statement.index("(") + 1 : statement.index(")")].split(", ")
		assert inserted[:6] == [
			"`name`",
			"`creation`",
			"`modified`",
			"`owner`",
			"`modified_by`",
			"`docstatus`",
		]
		assert inserted[6:] == [f"`{column}`" for column, _kind in write.columns]


def test_an_upsert_refreshes_modified_and_its_columns_and_an_insert_skips_stored_names():
	upsert = bulk.BulkWrite(
		"Performance Aggregate", (("count", "integer"), ("sketch", "long text")), ("count",)
	)
	assert "`modified`=excluded.`modified`, `count`=excluded.`count`" in upsert.statements["postgres"]
	assert "`modified`=values(`modified`), `count`=values(`count`)" in upsert.statements["mariadb"]
	assert "`sketch`=" not in upsert.statements["sqlite"] and "`creation`=" not in upsert.statements["sqlite"]
	insert = bulk.BulkWrite("Performance Metric", (("operation", "text"),))
	assert insert.statements["mariadb"].startswith("insert ignore into")
	assert insert.statements["postgres"].endswith("on conflict (name) do nothing")
	assert insert.statements["sqlite"].endswith("on conflict (name) do nothing")
