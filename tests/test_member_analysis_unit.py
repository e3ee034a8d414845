"""Statement shapes, N+1 detection, recommendations and batch summaries (no site)."""

import pytest

from verenigingen_perf.utils.performance import member_analysis as ma
from verenigingen_perf.utils.performance import statements
from verenigingen_perf.utils.performance.config import build_config

CONFIG = build_config("production", "test")


@pytest.mark.parametrize(
	("first", "second"),
	[
		(
			"select `title` from `tabChapter` where name='a'",
			"select `title` from `tabChapter` where name='bb'",
		),
		(
			'SELECT "x" FROM "tabChapter" WHERE "name"=%(param1)s',
			'SELECT "x" FROM "tabChapter" WHERE "name"=%s',
		),
		("select * from t where id in (1, 2, 3)", "select * from t where id in (7)"),
		("select * from t where a = 1.5 limit 20", "select * from t where a = 3  limit 1"),
	],
)
def test_statements_that_differ_only_in_values_have_one_shape(first, second):
	assert statements.statement_shape(first) == statements.statement_shape(second)


def test_shapes_keep_what_distinguishes_statements():
	assert statements.statement_shape("select a from `tabX` where b=1") != statements.statement_shape(
		"select a from `tabY` where b=1"
	)
	assert statements.statement_shape('select "col2" from t') == 'select "col2" from t'
	assert statements.statement_shape("select 'it''s' from t") == "select ? from t"


def measurement(queries):
	shapes = statements.group_shapes([(q, 0.001) for q in queries])
	return ma.MemberMeasurement(
		doctype="Member",
		member="m1",
		statements=len(queries),
		sql_ms=1.0,
		wall_ms=1.0,
		memory_peak_kb=10.0,
		child_rows=0,
		link_values=0,
		shapes=shapes,
		repeated_shapes=ma.repeated_shapes(shapes, CONFIG),
	)


def test_an_n_plus_one_is_reported_from_the_configured_repeats_and_points_at_its_shape():
	repeats = CONFIG.analysis.n_plus_one_min_repeats
	planted = [f"select title from `tabChapter` where name='c{i}'" for i in range(repeats)]
	judged = ma.judge(measurement([*planted, "select * from `tabMember` where name='m1'"]), CONFIG)
	n_plus_one = [r for r in judged.recommendations if r.kind == "n_plus_one"]
	assert len(n_plus_one) == 1
	assert n_plus_one[0].shape == "select title from `tabChapter` where name=?"
	assert n_plus_one[0].measured == repeats
	assert n_plus_one[0].threshold == repeats
	below = ma.judge(measurement(planted[: repeats - 1]), CONFIG)
	assert not [r for r in below.recommendations if r.kind == "n_plus_one"]


def test_levels_follow_the_statement_thresholds():
	queries = CONFIG.thresholds.api_queries
	few = ma.judge(measurement([f"select a from t{i}" for i in range(int(queries.warning))]), CONFIG)
	assert few.level == ma.HEALTHY and few.recommendations == []
	many = ma.judge(measurement([f"select a{i} from t" for i in range(int(queries.critical) + 1)]), CONFIG)
	assert many.level == ma.CRITICAL
	assert [r.kind for r in many.recommendations] == ["statement_count"]


def test_a_slow_statement_is_reported_from_the_configured_threshold():
	slow_ms = CONFIG.monitoring.slow_query_ms
	shapes = statements.group_shapes(
		[("select a from t where b=1", slow_ms * 2 / 1000), ("select c from u", 0.0001)]
	)
	judged = ma.judge(ma.MemberMeasurement("Member", "m1", 2, 1.0, 1.0, 1.0, 0, 0, shapes, []), CONFIG)
	[slow] = [r for r in judged.recommendations if r.kind == "slow_statement"]
	assert slow.shape == "select a from t where b=?"
	assert slow.measured == round(slow_ms * 2, 3) and slow.threshold == slow_ms


def test_batch_summary_figures():
	results = [
		{"statements": s, "wall_ms": float(s), "level": level}
		for s, level in ((10, "healthy"), (20, "warning"), (30, "critical"), (40, "warning"))
	]
	summary = ma.batch_summary(results, [{"member": "x", "reason": "gone"}])
	assert summary["success_rate"] == 0.8
	assert summary["statements_mean"] == 25
	assert summary["statements_p95"] == 40
	assert summary["levels"] == {"healthy": 1, "warning": 2, "critical": 1}
	assert ma.nearest_rank([float(i) for i in range(1, 21)], 0.95) == 19
	assert ma.batch_summary([], [])["success_rate"] is None
