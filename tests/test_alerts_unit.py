"""Alert rules, states and notification discipline with a fake clock. No site needed."""

import itertools
from datetime import datetime, timedelta

import pytest

from verenigingen_perf.utils.performance.alerts import rules as r

T0 = datetime(2026, 11, 16, 12, 0)
MINUTE = timedelta(minutes=1)
# Alertmanager's defaults, the site's defaults too
TIMING = r.NotificationTiming(timedelta(seconds=30), 5 * MINUTE, 240 * MINUTE)


def rule(**fields) -> r.Rule:
	data = {"name": "slow", "source": "operation", "metric": "p95_ms", "comparison": ">", "threshold": 100}
	return r.validate({**data, **fields})


def run(the_rule: r.Rule, values: list[float | None], instance: str = "op", start: datetime = T0):
	"""The states of one instance over one evaluation a minute, with its notifications (an alert
	resolved after it was notified as firing waits for its group's next notification)."""
	current, awaiting, history, sent = None, [], [], []
	for i, value in enumerate(values):
		now = start + MINUTE * i
		observation = r.Observation(instance, value)
		labels = r.instance_labels(the_rule, observation)
		current = r.step(the_rule, labels, current, r.breaches(the_rule, observation), value, now)
		alerts = ([current] if current else []) + awaiting
		sent += [(i, n.status) for n in r.plan_notifications({the_rule.name: the_rule}, alerts, now, TIMING)]
		history.append(current.state if current else None)
		awaiting = [a for a in alerts if r.awaits_resolved_notification(a)]
		if current and current.state == r.RESOLVED:
			current = None
	return history, sent


def test_pending_until_for_elapses_then_firing_then_resolved():
	history, sent = run(rule(for_minutes=3), [150, 150, 150, 150, 150, 50] + [None] * 10)
	assert history == ["pending", "pending", "pending", "firing", "firing", "resolved"] + [None] * 10
	# group_wait (30 s) after firing at minute 3: notified at minute 4; the resolution goes out with
	# the group's next notification, a group interval (5 minutes) after the last
	assert sent == [(4, "firing"), (9, "resolved")]


def test_a_pending_alert_that_clears_never_notifies():
	history, sent = run(rule(for_minutes=5), [150, 150, 50])
	assert history == ["pending", "pending", "resolved"] and sent == []


def test_a_firing_alert_notifies_once_then_after_each_repeat_interval():
	_history, sent = run(rule(repeat_interval_minutes=60), [150] * 130)
	assert [i for i, status in sent if status == "firing"] == [1, 61, 121]
	_history, sent = run(rule(), [150] * 500)
	assert [i for i, status in sent if status == "firing"] == [1, 241, 481]


def test_a_rule_sets_its_own_intervals_and_zero_takes_the_sites():
	own = rule(group_wait_s=120, group_interval_minutes=2, repeat_interval_minutes=30)
	assert TIMING.of(own) == r.NotificationTiming(2 * MINUTE, 2 * MINUTE, 30 * MINUTE)
	assert TIMING.of(rule()) == TIMING
	_history, sent = run(own, [150] * 5 + [50] * 5)
	assert sent == [(2, "firing"), (5, "resolved")]
	for fields, text in (
		({"group_wait_s": 3601}, "group_wait_s: must be a whole number from 0 to 3600"),
		({"group_interval_minutes": -1}, "group_interval_minutes: must be a whole number from 0 to 1440"),
		({"repeat_interval_minutes": 1.5}, "repeat_interval_minutes: must be a whole number"),
	):
		with pytest.raises(r.RuleError, match=text):
			rule(**fields)


def firing_now(the_rule: r.Rule, operation: str, now: datetime) -> r.AlertState:
	observation = r.Observation(operation, 150.0, labels=(("operation", operation),))
	return r.step(the_rule, r.instance_labels(the_rule, observation), None, True, 150.0, now)


def test_a_storm_that_arrives_over_time_is_notified_once_per_group_interval():
	"""500 alerts in 10 groups (rules), one after another over 50 minutes, an evaluation every
	minute, each alert resolving 20 minutes after it fired: each group is notified at most once per
	group interval (10 x (50 / 5 + 1) in all while they fire), and every alert is in a firing
	notification and, once resolved, in a resolved one."""
	rules = {f"slow {g}": rule(name=f"slow {g}", group_by="rule") for g in range(10)}
	alerts: list[r.AlertState] = []
	told: dict[str, set[str]] = {r.FIRING: set(), r.RESOLVED: set()}
	per_group: dict[str, list[datetime]] = {name: [] for name in rules}
	for minute in range(90):
		now = T0 + minute * MINUTE
		for k in range(10 * minute, min(10 * minute + 10, 500)):
			alerts.append(firing_now(rules[f"slow {k % 10}"], f"op{k:03d}", now))
		for alert in alerts:
			if alert.state == r.FIRING and now - alert.started_at >= 20 * MINUTE:
				alert.state, alert.resolved_at = r.RESOLVED, now
		for notification in r.plan_notifications(rules, alerts, now, TIMING):
			per_group[notification.rule].append(now)
			for alert in notification.alerts:
				told[alert.state].add(alert.labels["instance"])
		alerts = [a for a in alerts if a.state != r.RESOLVED or r.awaits_resolved_notification(a)]
	every = {f"op{k:03d}" for k in range(500)}
	assert told[r.FIRING] == every and told[r.RESOLVED] == every and not alerts
	for times in per_group.values():
		assert all(later - earlier >= TIMING.group_interval for earlier, later in itertools.pairwise(times))
		# firing over 50 minutes, the last resolving 20 minutes later: 70 minutes / 5, and the first
		assert len(times) <= 70 // 5 + 1
	firing_phase = sum(t <= T0 + 50 * MINUTE for times in per_group.values() for t in times)
	assert firing_phase <= 10 * (50 // 5 + 1)


def test_alerts_of_one_group_go_out_as_one_notification():
	the_rule = rule(group_by="rule")
	alerts = []
	for i in range(500):
		observation = r.Observation(f"op{i}", 150.0, labels=(("operation", f"op{i}"),))
		labels = r.instance_labels(the_rule, observation)
		alerts.append(r.step(the_rule, labels, None, True, 150.0, T0))
	assert r.plan_notifications({"slow": the_rule}, alerts, T0, TIMING) == []
	planned = r.plan_notifications({"slow": the_rule}, alerts, T0 + MINUTE, TIMING)
	assert len(planned) == 1 and len(planned[0].alerts) == 500
	by_operation = rule(group_by="operation")
	for alert in alerts:
		alert.notified_state, alert.last_notified_at = None, None
	assert len(r.plan_notifications({"slow": by_operation}, alerts, T0 + MINUTE, TIMING)) == 500


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

	def suppressed(silences, windows, now):
		active, broken = r.active_suppressions(silences, windows, now)
		assert broken == []
		return r.suppressed(labels, active)

	assert suppressed([silence], [], T0 + 5 * MINUTE)
	assert not suppressed([silence], [], T0 + 10 * MINUTE)
	assert suppressed([], [window], T0 + 29 * MINUTE)
	assert not suppressed([], [window], T0 + 30 * MINUTE)
	assert not suppressed([], [window], T0 - MINUTE)
	alert.silenced = True
	assert r.plan_notifications({"slow": the_rule}, [alert], T0 + 5 * MINUTE, TIMING) == []
	alert.silenced = False  # the silence ended, the alert still fires: it notifies now
	assert [
		n.status for n in r.plan_notifications({"slow": the_rule}, [alert], T0 + 11 * MINUTE, TIMING)
	] == ["firing"]


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *"])
def test_a_window_whose_cron_never_matches_is_refused_and_skipped_not_a_failure(cron):
	assert r.validate_cron(cron) is None  # croniter.is_valid accepts it
	assert "does not start within a year" in r.validate_cron(cron, T0)
	# 29 February: in 2028, more than a year after T0
	assert "does not start within a year" in r.validate_cron("0 0 29 2 *", T0)
	assert r.validate_cron("0 0 29 2 *", datetime(2027, 6, 1)) is None
	good = r.MaintenanceWindow((("rule", "slow"),), "0 12 * * *", 30, "noon")
	bad = r.MaintenanceWindow((("rule", "other"),), cron, 30, "never")
	active, broken = r.active_suppressions([], [bad, good], T0 + MINUTE)
	assert active == [good.matchers]
	assert [name for name, _error in broken] == ["never"]


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


@pytest.mark.parametrize("loader", ["CSafeLoader", "SafeLoader"])
def test_a_rules_file_is_refused_before_it_is_built_when_its_shape_is_hostile(monkeypatch, loader):
	"""Anchors and aliases (a few hundred bytes that expand to gigabytes), deep nesting and too many
	values are refused from the parser's events, with the C parser and the pure-Python one."""
	import yaml

	from verenigingen_perf.utils.performance.alerts import store

	if not hasattr(yaml, loader):
		pytest.skip(f"PyYAML was built without {loader}")
	monkeypatch.setattr(store, "_YAML_LOADER", getattr(yaml, loader))
	bomb = 'a: &a ["lol","lol"]\n' + "".join(
		f"{b}: &{b} [*{a}, *{a}]\n" for a, b in zip("abcd", "bcde", strict=True)
	)
	for text, rule_text in (
		(bomb, "anchors and aliases"),
		("rules:\n  - &r {name: x}\n", "anchors and aliases"),
		("rules: " + "[" * 50 + "]" * 50, "nested more than 10 levels"),
	):
		with pytest.raises(r.RuleError, match=rule_text):
			store.check_yaml_shape(text)
	monkeypatch.setattr(store, "MAX_YAML_NODES", 100)
	with pytest.raises(r.RuleError, match="more than 100 values"):
		store.check_yaml_shape("rules: [" + ", ".join(["1"] * 200) + "]")
	store.check_yaml_shape("rules:\n  - name: slow\n    labels: {team: members}\n    group_by: [rule]\n")
