"""Alert rules, states and notification discipline with a fake clock. No site needed."""

from datetime import datetime, timedelta

import pytest

from verenigingen_perf.utils.performance.alerts import rules as r

T0 = datetime(2026, 11, 16, 12, 0)
MINUTE = timedelta(minutes=1)
WAIT = timedelta(seconds=30)


def rule(**fields) -> r.Rule:
	data = {"name": "slow", "source": "operation", "metric": "p95_ms", "comparison": ">", "threshold": 100}
	return r.validate({**data, **fields})


def run(the_rule: r.Rule, values: list[float | None], instance: str = "op", start: datetime = T0):
	"""The states of one instance over one evaluation a minute, with its notifications."""
	current, history, sent = None, [], []
	for i, value in enumerate(values):
		now = start + MINUTE * i
		observation = r.Observation(instance, value)
		labels = r.instance_labels(the_rule, observation)
		current = r.step(the_rule, labels, current, r.breaches(the_rule, observation), value, now)
		alerts = [current] if current else []
		sent += [(i, n.status) for n in r.plan_notifications({the_rule.name: the_rule}, alerts, now, WAIT)]
		history.append(current.state if current else None)
		if current and current.state == r.RESOLVED:
			current = None
	return history, sent


def test_pending_until_for_elapses_then_firing_then_resolved():
	history, sent = run(rule(for_minutes=3), [150, 150, 150, 150, 150, 50, None])
	assert history == ["pending", "pending", "pending", "firing", "firing", "resolved", None]
	# group_wait (30 s) after firing at minute 3: notified at minute 4; resolved at once
	assert sent == [(4, "firing"), (5, "resolved")]


def test_a_pending_alert_that_clears_never_notifies():
	history, sent = run(rule(for_minutes=5), [150, 150, 50])
	assert history == ["pending", "pending", "resolved"] and sent == []


def test_a_firing_alert_notifies_once_then_after_each_repeat_interval():
	_history, sent = run(rule(repeat_interval_minutes=60), [150] * 130)
	assert [i for i, status in sent if status == "firing"] == [1, 61, 121]


def test_alerts_of_one_group_go_out_as_one_notification():
	the_rule = rule(group_by="rule")
	alerts = []
	for i in range(500):
		observation = r.Observation(f"op{i}", 150.0, labels=(("operation", f"op{i}"),))
		labels = r.instance_labels(the_rule, observation)
		alerts.append(r.step(the_rule, labels, None, True, 150.0, T0))
	assert r.plan_notifications({"slow": the_rule}, alerts, T0, WAIT) == []
	planned = r.plan_notifications({"slow": the_rule}, alerts, T0 + MINUTE, WAIT)
	assert len(planned) == 1 and len(planned[0].alerts) == 500
	by_operation = rule(group_by="operation")
	for alert in alerts:
		alert.notified_state = None
	assert len(r.plan_notifications({"slow": by_operation}, alerts, T0 + MINUTE, WAIT)) == 500


def test_a_firing_critical_inhibits_the_warning_of_the_same_labels():
	critical, warning = rule(name="slow", severity="critical"), rule(name="slow", severity="warning")
	observation = r.Observation("op", 500.0)
	alerts = [
		r.step(critical, r.instance_labels(critical, observation), None, True, 500.0, T0),
		r.step(warning, r.instance_labels(warning, observation), None, True, 500.0, T0),
	]
	keys = r.inhibited_keys(alerts)
	assert [r.is_inhibited(a, keys) for a in alerts] == [False, True]


def test_silences_and_maintenance_windows_hold_back_then_release():
	the_rule = rule()
	labels = r.instance_labels(the_rule, r.Observation("op", 150.0))
	alert = r.step(the_rule, labels, None, True, 150.0, T0)
	silence = r.Silence((("rule", "slow"),), T0, T0 + 10 * MINUTE)
	window = r.MaintenanceWindow((("instance", "o*"),), "0 12 * * *", 30)
	assert r.suppressed(labels, [silence], [], T0 + 5 * MINUTE)
	assert not r.suppressed(labels, [silence], [], T0 + 10 * MINUTE)
	assert r.suppressed(labels, [], [window], T0 + 29 * MINUTE)
	assert not r.suppressed(labels, [], [window], T0 + 30 * MINUTE)
	assert not r.suppressed(labels, [], [window], T0 - MINUTE)
	alert.silenced = True
	assert r.plan_notifications({"slow": the_rule}, [alert], T0 + 5 * MINUTE, WAIT) == []
	alert.silenced = False  # the silence ended, the alert still fires: it notifies now
	assert [n.status for n in r.plan_notifications({"slow": the_rule}, [alert], T0 + 11 * MINUTE, WAIT)] == [
		"firing"
	]


@pytest.mark.parametrize(
	("fields", "rule_text"),
	[
		({"source": "logs"}, "source: must be one of"),
		({"metric": "p42"}, "metric: an operation rule watches one of"),
		({"comparison": "=="}, "comparison: must be one of"),
		({"comparison": "level"}, "'level' compares"),
		({"threshold": "lots"}, "threshold: must be a number"),
		({"window_minutes": 1441}, "window_minutes: must be a whole number from 1 to 1440"),
		({"for_minutes": -1}, "for_minutes: must be a whole number"),
		({"severity": "panic"}, "severity: must be one of"),
		({"labels": "team"}, "labels: line 1 must be name=value"),
		({"labels": {"Team": "x"}}, "must be lower-case letters"),
		({"labels": {"severity": "x"}}, "is set by the app"),
		({"group_by": "Bad Label"}, "group_by:"),
		({"name": ""}, "name: must not be empty"),
		({"channels": ["nowhere"]}, "channels: no channel is named 'nowhere'"),
		({"source": "database", "metric": "rows"}, "metric: a database rule watches one of"),
		(
			{"source": "database", "metric": "total_mb", "comparison": "level"},
			"'level' on a database rule compares cache_hit_ratio's level only",
		),
	],
)
def test_bad_rules_are_refused_naming_the_field(fields, rule_text):
	with pytest.raises(r.RuleError) as raised:
		r.validate(
			{"name": "slow", "source": "operation", "metric": "p95_ms", **fields}, known_channels=["ops"]
		)
	assert rule_text in str(raised.value)


def test_cron_and_matchers_are_checked():
	assert r.validate_cron("0 2 * * 0") is None
	assert "five fields" in r.validate_cron("0 2 * *")
	assert "not a valid cron" in r.validate_cron("61 2 * * 0")
	_m, errors = r.parse_matchers("", "silence")
	assert "name at least one" in errors[0]
	matchers, errors = r.parse_matchers("rule=slow\ninstance=/api/*", "silence")
	assert not errors and r.matchers_match(matchers, {"rule": "slow", "instance": "/api/method/x"})
	assert not r.matchers_match(matchers, {"rule": "slow", "instance": "/app"})


def test_a_database_rule_compares_a_figure_or_the_cache_ratio_level():
	rule = r.validate({"name": "big", "source": "database", "metric": "total_mb", "threshold": 500})
	assert r.breaches(rule, r.Observation("total_mb", 501.0)) and not r.breaches(
		rule, r.Observation("total_mb", 499.0)
	)
	cache = r.validate(
		{
			"name": "cache",
			"source": "database",
			"metric": "cache_hit_ratio",
			"comparison": "level",
			"level": "warning",
		}
	)
	assert r.breaches(cache, r.Observation("cache_hit_ratio", 0.9, "warning"))
	assert not r.breaches(cache, r.Observation("cache_hit_ratio", 0.999, "healthy"))
