"""Sketch merging: order does not matter, merged hourly equals daily from raw within the accuracy."""

import base64
import math
import random
import struct
import zlib
from array import array

import numpy as np
from ddsketch import DDSketch, LogarithmicMapping
from hypothesis import given, settings
from hypothesis import strategies as st

from verenigingen_perf.utils.performance.sketch import (
	QUANTILES,
	RELATIVE_ACCURACY,
	Summary,
	bin_by_group,
	keys_of,
	loads,
)

durations = st.lists(st.floats(min_value=0.01, max_value=60_000, allow_nan=False), min_size=1, max_size=400)


def summary_of(values, errors=()):
	s = Summary()
	for i, v in enumerate(values):
		s.add(v, i in errors, i % 7, v / 10, 100 + i % 3)
	return s


def exact_quantile(values, q):
	ordered = sorted(values)
	return ordered[math.floor(q * (len(ordered) - 1))]


@settings(max_examples=150, deadline=None)
@given(values=durations, parts=st.integers(min_value=1, max_value=24), seed=st.integers(0, 10**6))
def test_merge_order_does_not_matter(values, parts, seed):
	chunks = [values[i::parts] for i in range(parts)]
	forward, shuffled = Summary(), Summary()
	for chunk in chunks:
		forward.merge(summary_of(chunk))
	order = list(range(parts))
	random.Random(seed).shuffle(order)
	for i in order:
		shuffled.merge(summary_of(chunks[i]))
	assert forward.count == shuffled.count == len(values)
	assert math.isclose(forward.duration_sum_ms, shuffled.duration_sum_ms, rel_tol=1e-9)
	assert forward.duration_min_ms == shuffled.duration_min_ms == min(values)
	assert forward.duration_max_ms == shuffled.duration_max_ms == max(values)
	for q in QUANTILES.values():
		assert forward.quantile(q) == shuffled.quantile(q)


@settings(max_examples=150, deadline=None)
@given(values=durations, parts=st.integers(min_value=1, max_value=24))
def test_merged_hourly_matches_daily_from_raw_within_accuracy(values, parts):
	daily = Summary()
	for i in range(parts):
		daily.merge(summary_of(values[i::parts]))
	for q in QUANTILES.values():
		exact = exact_quantile(values, q)
		assert abs(daily.quantile(q) - exact) <= RELATIVE_ACCURACY * exact * (1 + 1e-9)


def test_heavy_tail_p99_within_one_percent():
	rng = random.Random(7)
	values = [rng.paretovariate(1.2) * 5 for _ in range(20_000)]
	merged = Summary()
	for hour in range(24):
		merged.merge(summary_of(values[hour::24]))
	exact = exact_quantile(values, 0.99)
	assert abs(merged.quantile(0.99) - exact) / exact <= RELATIVE_ACCURACY


def test_serialised_sketch_round_trips_and_stays_small():
	rng = random.Random(1)
	s = summary_of([rng.lognormvariate(3, 1.2) for _ in range(120)])
	text = s.bins.dumps()
	assert len(text) < 600
	again = loads(text)
	assert again.count == s.sketch.count == 120
	for q in QUANTILES.values():
		assert math.isclose(again.get_quantile_value(q), s.sketch.get_quantile_value(q), rel_tol=1e-9)


def test_values_round_trip_through_a_row():
	s = summary_of([1.0, 2.0, 3.0, 250.0], errors={3})
	row = s.as_values()
	assert row["count"] == 4 and row["error_count"] == 1 and row["client_error_count"] == 0
	assert row["duration_mean_ms"] == 64.0
	back = Summary.from_values(row)
	back.merge(summary_of([5.0]))
	assert back.count == 5
	assert back.duration_max_ms == 250.0


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), min_size=1, max_size=300))
def test_one_pass_quantiles_equal_ddsketch(values):
	"""The bins equal those DDSketch.add builds itself, value by value, and read the same."""
	s, reference = summary_of(values), DDSketch(RELATIVE_ACCURACY)
	for v in values:
		reference.add(v)
	assert s.sketch.count == reference.count
	assert s.bins.zero_count == sum(
		1 for v in values if v <= LogarithmicMapping(RELATIVE_ACCURACY).min_possible
	)
	for q, ours in zip(
		(0.0, 0.5, 0.9, 0.95, 0.99, 1.0), s.quantiles((0.0, 0.5, 0.9, 0.95, 0.99, 1.0)), strict=True
	):
		theirs = reference.get_quantile_value(q)
		assert ours == min(max(theirs, s.duration_min_ms), s.duration_max_ms)
		assert s.sketch.get_quantile_value(q) == theirs


def test_format_1_sketches_are_still_read():
	values = [0.0, 1.5, 2.0, 2.0, 300.0, 70_000.0]
	reference = DDSketch(RELATIVE_ACCURACY)
	for v in values:
		reference.add(v)
	mapping = LogarithmicMapping(RELATIVE_ACCURACY)
	keys = [mapping.key(v) for v in values if v > 0]
	first = min(keys)
	counts = array("I", [0] * (max(keys) - first + 1))
	for k in keys:
		counts[k - first] += 1
	raw = struct.pack("<BIi", 1, values.count(0.0), first) + counts.tobytes()
	text = base64.b64encode(zlib.compress(raw)).decode()
	again = loads(text)
	assert again.count == reference.count
	for q in (0.0, 0.5, 0.99, 1.0):
		assert again.get_quantile_value(q) == reference.get_quantile_value(q)
	summary = Summary.from_values({**Summary().as_values(), "count": len(values), "sketch": text})
	assert loads(summary.bins.dumps()).get_quantile_value(0.5) == reference.get_quantile_value(0.5)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(min_value=1e-6, max_value=1e9, allow_nan=False), min_size=1, max_size=300))
def test_keys_are_those_of_the_pinned_ddsketch_mapping(values):
	"""The bins use only ddsketch's public mapping; a ddsketch release that changed its keys would
	make stored sketches unreadable, so this checks the keys against DDSketch itself."""
	s, reference = summary_of(values), DDSketch(RELATIVE_ACCURACY)
	for v in values:
		reference.add(v)
	for q in (0.0, 0.25, 0.5, 0.75, 1.0):
		assert s.sketch.get_quantile_value(q) == reference.get_quantile_value(q)


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), min_size=1, max_size=200))
def test_add_many_equals_adding_one_by_one(values):
	one, many = summary_of(values), Summary()
	many.add_many(
		values,
		0,
		[i % 7 for i in range(len(values))],
		[v / 10 for v in values],
		[100 + i % 3 for i in range(len(values))],
	)
	assert (many.count, many.query_sum, many.query_max, many.memory_max_mb) == (
		one.count,
		one.query_sum,
		one.query_max,
		one.memory_max_mb,
	)
	assert math.isclose(many.duration_sum_ms, one.duration_sum_ms, rel_tol=1e-9, abs_tol=1e-9)
	assert many.quantiles(tuple(QUANTILES.values())) == one.quantiles(tuple(QUANTILES.values()))


@settings(max_examples=200, deadline=None)
@given(
	values=st.lists(st.floats(min_value=1e-300, max_value=1e300, allow_nan=False), min_size=1, max_size=300)
)
def test_keys_of_an_array_are_the_mappings_keys_one_by_one(values):
	mapping = LogarithmicMapping(RELATIVE_ACCURACY)
	assert keys_of(np.array(values)).tolist() == [mapping.key(v) for v in values]


def test_keys_next_to_bin_boundaries_are_the_mappings():
	"""The values where numpy's logarithm and the C library's could disagree: the bin boundaries
	(gamma to a whole power) and the floats just around them."""
	mapping = LogarithmicMapping(RELATIVE_ACCURACY)
	boundaries = np.array([mapping.gamma**k for k in range(-600, 1400)])
	values = np.concatenate(
		[boundaries, np.nextafter(boundaries, 0), np.nextafter(boundaries, np.inf), [1.0, 2.0, 1000.0]]
	)
	values = values[(values > mapping.min_possible) & np.isfinite(values)]
	assert keys_of(values).tolist() == [mapping.key(float(v)) for v in values]


@settings(max_examples=200, deadline=None)
@given(
	rows=st.lists(
		st.tuples(
			st.integers(min_value=0, max_value=6),
			st.one_of(
				st.just(0.0),
				st.floats(min_value=1e-12, max_value=1e9, allow_nan=False),
				st.floats(min_value=0, max_value=1e-300),
			),
		),
		min_size=1,
		max_size=400,
	)
)
def test_binning_many_groups_at_once_equals_adding_each_group_s_durations(rows):
	"""`bin_by_group` over a page of rows of several groups gives every group the bins (and zeros)
	that adding its own durations gives, and no group without rows."""
	group_ids = np.array([group for group, _ in rows], dtype=np.int64)
	durations = np.array([value for _, value in rows])
	binned: dict[int, Summary] = {}
	for entry in bin_by_group(group_ids, durations):
		summary = binned.setdefault(entry.group, Summary())
		summary.bins.add_counts(entry.keys, entry.counts)
		summary.bins.zero_count += entry.zero_count
	expected: dict[int, Summary] = {}
	for group, value in rows:
		expected.setdefault(group, Summary()).add_durations([value])
	assert binned.keys() == expected.keys()
	for group, summary in expected.items():
		assert binned[group].bins.dumps() == summary.bins.dumps(), group
