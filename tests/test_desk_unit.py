"""Pure parts of the desk: the trace waterfall and the bench commands' argument parsing and tables."""

from datetime import datetime, timedelta

import click
import pytest

from verenigingen_perf import commands
from verenigingen_perf.utils.performance.trace_view import waterfall

START = datetime(2026, 11, 25, 10, 0, 0)


def span(name: str, parent: str | None, offset_ms: float, duration_ms: float = 1.0, **extra) -> dict:
	return {
		"name": name,
		"parent_span": parent,
		"operation": f"op.{name}",
		"operation_type": "api" if parent is None else "job",
		"started_at": START + timedelta(milliseconds=offset_ms),
		"duration_ms": duration_ms,
		"query_count": 1,
		"db_time_ms": 0.1,
		"status": "ok",
		"http_status": 200 if parent is None else None,
		"error": None,
		**extra,
	}


def test_a_waterfall_puts_every_span_after_its_parent_children_by_start():
	rows = [
		span("job2", "req", 30),
		span("req", None, 0, 100),
		span("block", "req", 5),
		span("job1", "req", 20),
		span("job1child", "job1", 25),
	]
	spans = waterfall(rows)
	assert [(s.span_id, s.depth) for s in spans] == [
		("req", 0),
		("block", 1),
		("job1", 1),
		("job1child", 2),
		("job2", 1),
	]
	assert [s.offset_ms for s in spans] == [0, 5, 20, 25, 30]
	assert not any(s.orphan for s in spans)


def test_a_span_whose_parent_is_not_stored_is_a_root_marked_as_orphan():
	spans = waterfall([span("late", "gone", 50), span("req", None, 10)])
	assert [(s.span_id, s.depth, s.orphan) for s in spans] == [("req", 0, False), ("late", 0, True)]
	# offsets count from the trace's first start, whichever span that is
	assert [s.offset_ms for s in spans] == [0, 40]


def test_an_empty_trace_has_no_spans():
	assert waterfall([]) == []


def test_started_at_as_text_is_read_as_the_database_returns_it():
	[only] = waterfall([span("req", None, 0, started_at="2026-11-25 10:00:00.250000")])
	assert only.started_at == "2026-11-25 10:00:00.250000" and only.offset_ms == 0


@pytest.mark.parametrize(
	("text", "expected"),
	[
		("90m", timedelta(minutes=90)),
		("24h", timedelta(hours=24)),
		("7d", timedelta(days=7)),
		(" 1m ", timedelta(minutes=1)),
	],
)
def test_since_accepts_minutes_hours_and_days(text, expected):
	assert commands._since(text) == expected


@pytest.mark.parametrize("text", ["24", "h", "1.5h", "0m", "3651d", "-1h", "9999999d", "24 h"])
def test_since_refuses_what_is_not_a_bounded_duration(text):
	with pytest.raises(click.BadParameter):
		commands._since(text)


def test_a_table_aligns_numbers_right_and_text_left():
	table = commands._table(
		[("operation", "operation"), ("count", "count"), ("p95 ms", "p95_ms")],
		[
			{"operation": "a.long.name", "count": 1234, "p95_ms": 1.5},
			{"operation": "b", "count": 7, "p95_ms": None},
		],
	)
	assert table.splitlines() == [
		"operation    count  p95 ms",
		"-----------  -----  ------",
		"a.long.name  1,234     1.5",
		"b                7       -",
	]
