"""The base-commit comparison's judgement (benchmarks/compare.py): which way a figure is better, the
ratio's orientation, and a verdict only beyond both sides' spread. No site needed."""

import pytest

from benchmarks import compare


@pytest.mark.parametrize(
	("figure", "better"),
	[
		("aggregate_rows_per_s", "higher"),
		("drain_rows_per_s", "higher"),
		("storage_ratio", "higher"),
		("overhead_us_p50", "lower"),
		("dashboard_p95_ms_cold", "lower"),
		("aggregate_peak_mb", "lower"),
		("p99_rel_err", "lower"),
		("dashboard_queries_cold", "lower"),
		("flood_health_ratio", "lower"),
		("retention_max_batch_s", "lower"),
		("plain_us_p50", None),
		("rows", None),
		("settle_s", None),
	],
)
def test_which_way_a_figure_is_better(figure, better):
	assert compare.direction(figure) == better


def test_the_ratio_is_above_one_when_the_head_is_better_and_noise_is_not_a_verdict():
	faster = compare.compare("rollup", "aggregate_rows_per_s", [100, 102, 98], [150, 151, 149])
	assert faster.ratio == pytest.approx(1.5) and faster.verdict == "better"
	slower = compare.compare("capture", "overhead_us_p50", [10, 10.2, 9.9], [12, 12.1, 11.9])
	assert slower.ratio == pytest.approx(10 / 12) and slower.verdict == "worse"
	# 5% apart, but each side's runs spread 20%: within the noise
	noisy = compare.compare("api", "health_p95_ms", [9, 10, 11], [9.5, 10.5, 11.5])
	assert noisy.verdict == "same"
	assert compare.compare("rollup", "rows", [1, 1], [1, 1]).verdict == "context"


def test_only_figures_every_run_printed_are_compared():
	base = [{"a_per_s": 1.0, "gone_ms": 2.0, "name": "x"}] * 2
	head = [{"a_per_s": 2.0, "new_ms": 3.0, "name": "x", "flag": True}] * 2
	assert [c.figure for c in compare.compare_runs("b", base, head)] == ["a_per_s"]
