"""A fold's bucket summaries from pages of rows equal adding each row to its bucket's Summary."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from verenigingen_perf.utils.performance.page_totals import CLIENT_ERROR, SERVER_ERROR, BucketTotals
from verenigingen_perf.utils.performance.sketch import Summary

rows = st.lists(
	st.tuples(
		# bucket texts that differ only in case, accents or trailing spaces stay apart
		st.sampled_from(
			[
				"api\x1f2026-12-07 10\x1fcafe",
				"api\x1f2026-12-07 10\x1fcafé",
				"api\x1f2026-12-07 10\x1fcafe ",
				"job\x1f2026-12-07 11\x1fa\x1fb",
				"api\x1f2026-12-07 10\x1fCAFE",
			]
		),
		st.one_of(st.just(0.0), st.floats(min_value=1e-9, max_value=1e7, allow_nan=False)),
		st.sampled_from([0, SERVER_ERROR, CLIENT_ERROR]),
		st.integers(min_value=0, max_value=5000),
		st.floats(min_value=0, max_value=1e6, allow_nan=False),
		st.floats(min_value=0, max_value=1e7, allow_nan=False),
	),
	min_size=1,
	max_size=300,
)


@settings(max_examples=150, deadline=None)
@given(rows=rows, page_size=st.integers(min_value=1, max_value=120))
def test_pages_add_up_to_what_each_row_adds(rows, page_size):
	totals = BucketTotals()
	for first in range(0, len(rows), page_size):
		totals.add_page(rows[first : first + page_size])
	expected: dict[str, Summary] = {}
	for text, duration, outcome, queries, db_time, memory_kb in rows:
		summary = expected.setdefault(text, Summary())
		summary.add(duration, outcome == SERVER_ERROR, queries, db_time, memory_kb / 1024)
		summary.client_error_count += outcome == CLIENT_ERROR
	built = totals.summaries()
	assert built.keys() == expected.keys()
	for text, summary in expected.items():
		got = built[text]
		for exact in ("count", "error_count", "client_error_count", "query_sum", "query_max"):
			assert getattr(got, exact) == getattr(summary, exact), exact
			assert type(getattr(got, exact)) is int, exact
		for extreme in ("duration_min_ms", "duration_max_ms", "memory_max_mb"):
			assert getattr(got, extreme) == getattr(summary, extreme), extreme
		for total in ("duration_sum_ms", "db_time_sum_ms"):
			assert math.isclose(getattr(got, total), getattr(summary, total), rel_tol=1e-9, abs_tol=1e-9)
		values, expected_values = got.as_values(), summary.as_values()
		for inexact in ("duration_sum_ms", "duration_mean_ms", "db_time_sum_ms"):
			assert math.isclose(values.pop(inexact), expected_values.pop(inexact), rel_tol=1e-9, abs_tol=1e-9)
		# the sketch, percentiles and everything else exactly
		assert values == expected_values


def test_a_missing_number_counts_as_zero():
	totals = BucketTotals()
	totals.add_page([("api\x1f2026-12-07 10\x1fx", None, 0, None, None, None)])
	summary = totals.summaries()["api\x1f2026-12-07 10\x1fx"]
	assert (summary.count, summary.duration_max_ms, summary.query_sum, summary.bins.zero_count) == (
		1,
		0.0,
		0,
		1,
	)
