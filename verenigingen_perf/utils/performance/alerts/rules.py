"""Alert rules, alert states and notification discipline: the decisions, on values already read. Pure Python.

A rule watches one source and yields one *instance* per thing it watches (the site, an operation, a
signal, a regression), identified by a fingerprint of its labels. Each evaluation moves an instance's
state (`step`): pending while the condition holds for less than the rule's `for`, firing after, resolved
when it no longer holds. Notifications follow Alertmanager's discipline (`plan_notifications`): alerts
are grouped by the rule's group-by labels; a new group's first firing alerts wait `group_wait` and then
go out together; after that the group is notified at most once per `group_interval`, when alerts have
started firing or have resolved since its last notification (the resolved ones batched into it), and
again after `repeat_interval` while it keeps firing with nothing new. A firing critical alert inhibits
the warning alert of the same labels; a silence or a maintenance window matching the labels holds
notifications back (the alert is still recorded, marked silenced) and an alert still firing when it
ends is notified then. A rule's three intervals default to the site's (`NotificationTiming`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter

from verenigingen_perf.utils.performance.messages import _

SOURCES = ("health", "operation", "monitor", "regressions", "anomalies", "database")
COMPARISONS = (">", ">=", "<", "<=", "level")
LEVELS = ("warning", "critical")
SEVERITIES = ("warning", "critical")
PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
# the metrics an operation rule may watch (read from the detail rows of the last minutes)
OPERATION_METRICS = ("p50_ms", "p95_ms", "p99_ms", "error_rate", "count", "statements_per_call")
# the figures of the latest database health snapshot a database rule may watch (database/)
DATABASE_METRICS = (
	"cache_hit_ratio",
	"connections_used_ratio",
	"long_running",
	"recommendations",
	"missing_indexes",
	"unused_indexes",
	"fragmented_tables",
	"total_mb",
)
# sources whose observations carry a level from the configuration ("level" comparisons)
LEVELLED_SOURCES = ("health", "monitor", "database")
# operation rules look back at most a day (longer trends are the regression detector's)
MAX_WINDOW_MINUTES = 1440
# labels every instance carries (a rule's own labels may not redefine them)
RESERVED_LABELS = ("rule", "severity", "instance")
_LABEL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_MAX_LABELS = 20
_MAX_LABEL_VALUE = 200
_MAX_RULE_NAME = 140
# a rule's notification intervals: 0 takes the site's default (Performance Settings), else at most these
MAX_GROUP_WAIT_S = 3600
MAX_GROUP_INTERVAL_MINUTES = 1440
MAX_REPEAT_INTERVAL_MINUTES = 10_080


@dataclass(frozen=True)
class Skipped:
	"""Something a pass could not evaluate and went on without (a rule, a source, a silence, a
	maintenance window): each is reported, none stops the others."""

	kind: str
	name: str
	error: BaseException

	def __str__(self) -> str:
		return f"{self.kind} {self.name!r}: {type(self.error).__name__}: {str(self.error)[:300]}"


class RuleError(ValueError):
	"""Every broken rule of a rule (or a set of rules), each naming the rule, the field and the rule."""

	def __init__(self, errors: list[str]):
		self.errors = errors
		super().__init__("; ".join(errors))


@dataclass(frozen=True)
class Rule:
	name: str
	source: str
	metric: str
	comparison: str
	threshold: float = 0.0
	level: str = "critical"
	operation: str = ""
	window_minutes: int = 5
	for_minutes: int = 0
	severity: str = "warning"
	labels: tuple[tuple[str, str], ...] = ()
	group_by: tuple[str, ...] = ("rule",)
	# 0: the site's default (NotificationTiming)
	group_wait_s: int = 0
	group_interval_minutes: int = 0
	repeat_interval_minutes: int = 0
	channels: tuple[str, ...] = ()
	enabled: bool = True
	description: str = ""

	def as_dict(self) -> dict[str, Any]:
		return {
			"name": self.name,
			"enabled": self.enabled,
			"description": self.description,
			"source": self.source,
			"metric": self.metric,
			"operation": self.operation,
			"window_minutes": self.window_minutes,
			"comparison": self.comparison,
			"threshold": self.threshold,
			"level": self.level,
			"for_minutes": self.for_minutes,
			"severity": self.severity,
			"labels": dict(self.labels),
			"group_by": list(self.group_by),
			"group_wait_s": self.group_wait_s,
			"group_interval_minutes": self.group_interval_minutes,
			"repeat_interval_minutes": self.repeat_interval_minutes,
			"channels": list(self.channels),
		}


def parse_labels(
	value: Any, where: str, reserved_allowed: bool = False, part: str | None = None
) -> tuple[tuple[tuple[str, str], ...], list[str]]:
	"""Labels as a mapping, a JSON object or `name=value` lines; sorted, with the errors found."""
	errors: list[str] = []
	part = part or _("labels")
	if value in (None, ""):
		return (), errors
	items: Any = value
	if isinstance(value, str):
		text = value.strip()
		if text.startswith("{"):
			try:
				items = json.loads(text)
			except ValueError:
				return (), [
					_(
						"{where} {part}: starts like a JSON object but is not valid JSON",
						where=where,
						part=part,
					)
				]
		else:
			items = {}
			for number, line in enumerate(text.splitlines(), 1):
				if not line.strip():
					continue
				if "=" not in line:
					errors.append(
						_(
							"{where} {part}: line {number} must be name=value",
							where=where,
							part=part,
							number=number,
						)
					)
					continue
				name, _equals, label_value = line.partition("=")
				items[name.strip()] = label_value.strip()
	if not isinstance(items, Mapping):
		return (), [_("{where} {part}: must be a mapping of names to values", where=where, part=part)]
	if len(items) > _MAX_LABELS:
		errors.append(
			_(
				"{where} {part}: at most {limit}, got {count}",
				where=where,
				part=part,
				limit=_MAX_LABELS,
				count=len(items),
			)
		)
	clean = {}
	for name, label_value in items.items():
		if not isinstance(name, str) or not _LABEL_NAME.match(name):
			errors.append(
				_(
					"{where} {part}: {name} must be lower-case letters, digits and _ (at most 40)",
					where=where,
					part=part,
					name=repr(str(name)[:40]),
				)
			)
		elif name in RESERVED_LABELS and not reserved_allowed:
			errors.append(
				_(
					"{where} {part}: {name} is set by the app ({reserved})",
					where=where,
					part=part,
					name=repr(name),
					reserved=", ".join(RESERVED_LABELS),
				)
			)
		elif not isinstance(label_value, str | int | float) or len(str(label_value)) > _MAX_LABEL_VALUE:
			errors.append(
				_(
					"{where} {part}: the value of {name} must be text of at most {limit} characters",
					where=where,
					part=part,
					name=repr(name),
					limit=_MAX_LABEL_VALUE,
				)
			)
		else:
			clean[name] = str(label_value)
	return tuple(sorted(clean.items())), errors


def validate(data: Mapping[str, Any], known_channels: Iterable[str] | None = None) -> Rule:
	"""A rule from its fields, or RuleError naming every broken rule (field by field)."""
	name = str(data.get("name") or "").strip()
	where = _("rule {name}", name=repr(name[:60])) if name else _("rule (unnamed)")
	errors: list[str] = []

	def field_error(fieldname: str, message: str) -> None:
		errors.append(_("{where}: {field}: {message}", where=where, field=fieldname, message=message))

	if not name:
		field_error("name", _("must not be empty"))
	elif len(name) > _MAX_RULE_NAME or re.search(r"[\x00-\x1f\x7f]", name):
		field_error("name", _("at most {limit} characters, no control characters", limit=_MAX_RULE_NAME))
	source = data.get("source")
	if source not in SOURCES:
		field_error(
			"source",
			_("must be one of {known}, got {value}", known=", ".join(SOURCES), value=repr(str(source)[:40])),
		)
	metric = str(data.get("metric") or "").strip()
	if source == "operation" and metric not in OPERATION_METRICS:
		field_error(
			"metric",
			_(
				"an operation rule watches one of {known}, got {value}",
				known=", ".join(OPERATION_METRICS),
				value=repr(metric[:40]),
			),
		)
	elif source == "database" and metric not in DATABASE_METRICS:
		field_error(
			"metric",
			_(
				"a database rule watches one of {known}, got {value}",
				known=", ".join(DATABASE_METRICS),
				value=repr(metric[:40]),
			),
		)
	elif source in ("health", "monitor") and not metric:
		field_error(
			"metric", _("must name a health component (or score) or a monitor signal (a glob is allowed)")
		)
	comparison = data.get("comparison") or ">"
	if comparison not in COMPARISONS:
		field_error(
			"comparison",
			_(
				"must be one of {known}, got {value}",
				known=", ".join(COMPARISONS),
				value=repr(str(comparison)[:20]),
			),
		)
	if comparison == "level" and source not in LEVELLED_SOURCES:
		field_error(
			"comparison",
			_(
				"'level' compares a health component's, a monitor signal's or the database cache ratio's level only"
			),
		)
	elif comparison == "level" and source == "database" and metric != "cache_hit_ratio":
		field_error("comparison", _("'level' on a database rule compares cache_hit_ratio's level only"))
	level = data.get("level") or "critical"
	if level not in LEVELS:
		field_error(
			"level",
			_("must be one of {known}, got {value}", known=", ".join(LEVELS), value=repr(str(level)[:20])),
		)
	threshold = _number(data.get("threshold", 0), "threshold", field_error, -1e12, 1e12)
	window = _number(
		data.get("window_minutes", 5), "window_minutes", field_error, 1, MAX_WINDOW_MINUTES, whole=True
	)
	for_minutes = _number(data.get("for_minutes", 0), "for_minutes", field_error, 0, 10_080, whole=True)
	group_wait = _number(
		data.get("group_wait_s") or 0, "group_wait_s", field_error, 0, MAX_GROUP_WAIT_S, whole=True
	)
	group_interval = _number(
		data.get("group_interval_minutes") or 0,
		"group_interval_minutes",
		field_error,
		0,
		MAX_GROUP_INTERVAL_MINUTES,
		whole=True,
	)
	repeat = _number(
		data.get("repeat_interval_minutes") or 0,
		"repeat_interval_minutes",
		field_error,
		0,
		MAX_REPEAT_INTERVAL_MINUTES,
		whole=True,
	)
	severity = data.get("severity") or "warning"
	if severity not in SEVERITIES:
		field_error(
			"severity",
			_(
				"must be one of {known}, got {value}",
				known=", ".join(SEVERITIES),
				value=repr(str(severity)[:20]),
			),
		)
	operation = str(data.get("operation") or "").strip()
	if len(operation) > _MAX_RULE_NAME:
		field_error("operation", _("at most {limit} characters", limit=_MAX_RULE_NAME))
	labels, label_errors = parse_labels(data.get("labels"), where)
	errors += label_errors
	group_by = _names(data.get("group_by") or ["rule"])
	for label in group_by:
		if not _LABEL_NAME.match(label):
			field_error("group_by", _("{label} is not a label name", label=repr(label[:40])))
	channels = tuple(dict.fromkeys(_names(data.get("channels") or [])))
	if known_channels is not None:
		known = set(known_channels)
		for channel in channels:
			if channel not in known:
				field_error("channels", _("no channel is named {channel}", channel=repr(channel[:60])))
	if errors:
		raise RuleError(errors)
	return Rule(
		name=name,
		source=source,
		metric=metric,
		comparison=comparison,
		threshold=float(threshold),
		level=level,
		operation=operation,
		window_minutes=int(window),
		for_minutes=int(for_minutes),
		severity=severity,
		labels=labels,
		group_by=tuple(dict.fromkeys(group_by)),
		group_wait_s=int(group_wait),
		group_interval_minutes=int(group_interval),
		repeat_interval_minutes=int(repeat),
		channels=channels,
		enabled=bool(data.get("enabled", True)),
		description=str(data.get("description") or "")[:1000],
	)


def _number(value: Any, fieldname: str, error, low: float, high: float, whole: bool = False) -> float:
	try:
		number = float(value)
	except (TypeError, ValueError):
		error(fieldname, _("must be a number, got {value}", value=repr(str(value)[:40])))
		return low
	if (
		isinstance(value, bool)
		or number != number
		or not low <= number <= high
		or (whole and not number.is_integer())
	):
		message = (
			_(
				"must be a whole number from {low:g} to {high:g}, got {value}",
				low=low,
				high=high,
				value=repr(str(value)[:40]),
			)
			if whole
			else _(
				"must be a number from {low:g} to {high:g}, got {value}",
				low=low,
				high=high,
				value=repr(str(value)[:40]),
			)
		)
		error(fieldname, message)
		return low
	return number


def _names(value: Any) -> list[str]:
	if isinstance(value, str):
		value = [part for part in re.split(r"[,\n]", value)]
	if not isinstance(value, list | tuple):
		return [str(value)]
	return [str(item).strip() for item in value if str(item).strip()]


# --- instances and states ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
	"""One thing a rule watches, now: its own labels (beyond the rule's), its value and level."""

	instance: str
	value: float | None
	level: str | None = None
	labels: tuple[tuple[str, str], ...] = ()


_LEVEL_RANK = {"healthy": 0, "no data": -1, "warning": 1, "critical": 2}


def breaches(rule: Rule, observation: Observation) -> bool:
	if rule.comparison == "level":
		return _LEVEL_RANK.get(observation.level or "no data", -1) >= _LEVEL_RANK[rule.level]
	if observation.value is None:
		return False
	value, threshold = observation.value, rule.threshold
	return {
		">": value > threshold,
		">=": value >= threshold,
		"<": value < threshold,
		"<=": value <= threshold,
	}[rule.comparison]


def instance_labels(rule: Rule, observation: Observation) -> dict[str, str]:
	return {
		**dict(rule.labels),
		**dict(observation.labels),
		"rule": rule.name,
		"severity": rule.severity,
		"instance": observation.instance,
	}


def fingerprint(labels: Mapping[str, str]) -> str:
	return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:32]


def matches(operation_pattern: str, name: str) -> bool:
	"""An exact name, or a glob (`*`, `?`, `[...]`)."""
	if not operation_pattern:
		return True
	if any(c in operation_pattern for c in "*?["):
		return fnmatch.fnmatchcase(name, operation_pattern)
	return name == operation_pattern


@dataclass
class AlertState:
	"""An alert record as the state machine sees it."""

	fingerprint: str
	rule: str
	labels: dict[str, str]
	severity: str
	state: str
	started_at: datetime
	value: float | None = None
	fired_at: datetime | None = None
	resolved_at: datetime | None = None
	last_notified_at: datetime | None = None
	notified_state: str | None = None
	silenced: bool = False
	inhibited: bool = False
	name: str | None = None
	changed: bool = False


def step(
	rule: Rule,
	labels: dict[str, str],
	current: AlertState | None,
	holds: bool,
	value: float | None,
	now: datetime,
) -> AlertState | None:
	"""The next state of one instance: a new pending (or firing, with `for` 0) alert when the condition
	starts to hold, firing once it has held for `for_minutes`, resolved when it stops holding. A pending
	alert whose condition stops holding is resolved without ever firing."""
	if current is None:
		if not holds:
			return None
		state = FIRING if rule.for_minutes == 0 else PENDING
		return AlertState(
			fingerprint=fingerprint(labels),
			rule=rule.name,
			labels=labels,
			severity=rule.severity,
			state=state,
			started_at=now,
			value=value,
			fired_at=now if state == FIRING else None,
			changed=True,
		)
	if not holds:
		current.state, current.resolved_at, current.changed = RESOLVED, now, True
		return current
	current.value = value
	if current.state == PENDING and now - current.started_at >= timedelta(minutes=rule.for_minutes):
		current.state, current.fired_at, current.changed = FIRING, now, True
	return current


# --- silences, maintenance windows and inhibition ---------------------------------------------------


def parse_matchers(value: Any, where: str) -> tuple[tuple[tuple[str, str], ...], list[str]]:
	"""Matchers: `label=glob` lines or a JSON object; all must match (an empty set matches nothing)."""
	matchers, errors = parse_labels(value, where, reserved_allowed=True, part=_("matchers"))
	if not matchers and not errors:
		errors.append(
			_(
				"{where} matchers: name at least one label=value (a silence of everything is refused)",
				where=where,
			)
		)
	return matchers, errors


def matchers_match(matchers: Iterable[tuple[str, str]], labels: Mapping[str, str]) -> bool:
	pairs = list(matchers)
	return bool(pairs) and all(fnmatch.fnmatchcase(labels.get(name, ""), pattern) for name, pattern in pairs)


@dataclass(frozen=True)
class Silence:
	matchers: tuple[tuple[str, str], ...]
	starts_at: datetime
	ends_at: datetime
	name: str = ""

	def active(self, now: datetime) -> bool:
		return self.starts_at <= now < self.ends_at


@dataclass(frozen=True)
class MaintenanceWindow:
	"""Recurring: starts at each time the cron expression names, lasts `duration_minutes`."""

	matchers: tuple[tuple[str, str], ...]
	cron: str
	duration_minutes: int
	name: str = ""

	def active(self, now: datetime) -> bool:
		"""Raises croniter's errors for an expression that never matches (30 February)."""
		last_start = croniter(self.cron, now + timedelta(seconds=1)).get_prev(datetime)
		return last_start <= now < last_start + timedelta(minutes=self.duration_minutes)


# a maintenance window must start at least this often: a cron that never matches within it (30
# February, or 29 February in most years) is refused
CRON_HORIZON = timedelta(days=366)


def validate_cron(expression: Any, now: datetime | None = None) -> str | None:
	"""None when `expression` is a valid five-field cron expression that matches within
	`CRON_HORIZON` of `now` (when given), else the reason."""
	if not isinstance(expression, str) or not expression.strip() or len(expression) > 100:
		return _("must be a cron expression such as '0 2 * * 0' (Sundays 02:00)")
	if len(expression.split()) != 5:
		return _("must have five fields: minute hour day-of-month month day-of-week")
	if not croniter.is_valid(expression):
		return _("{expression} is not a valid cron expression", expression=repr(expression))
	if now is not None:
		try:
			first = croniter(expression, now).get_next(datetime)
		except Exception:
			first = None
		if first is None or first - now > CRON_HORIZON:
			return _(
				"{expression} does not start within a year (a date that does not exist, such as 30 February?)",
				expression=repr(expression),
			)
	return None


def active_suppressions(
	silences: Iterable[Silence], windows: Iterable[MaintenanceWindow], now: datetime
) -> tuple[list[tuple[tuple[str, str], ...]], list[tuple[str, BaseException]]]:
	"""The matchers of every silence and window active now (each judged once a pass, not per alert),
	and the windows that could not be judged (skipped, each with its error: one bad window holds
	nothing back and stops nothing)."""
	active = [s.matchers for s in silences if s.active(now)]
	broken = []
	for window in windows:
		try:
			if window.active(now):
				active.append(window.matchers)
		except Exception as error:
			broken.append((window.name, error))
	return active, broken


def suppressed(labels: Mapping[str, str], active_matchers: Iterable[tuple[tuple[str, str], ...]]) -> bool:
	return any(matchers_match(matchers, labels) for matchers in active_matchers)


def _inhibition_key(labels: Mapping[str, str]) -> tuple:
	return tuple(sorted((k, v) for k, v in labels.items() if k not in ("severity", "rule")))


def inhibited_keys(alerts: Iterable[AlertState]) -> set[tuple]:
	"""The labels (without rule and severity) of every firing critical alert: their warnings are held."""
	return {_inhibition_key(a.labels) for a in alerts if a.state == FIRING and a.severity == "critical"}


def is_inhibited(alert: AlertState, keys: set[tuple]) -> bool:
	return alert.severity == "warning" and _inhibition_key(alert.labels) in keys


# --- notifications ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NotificationTiming:
	"""Alertmanager's three intervals (the site's defaults, or a rule's own)."""

	group_wait: timedelta
	group_interval: timedelta
	repeat_interval: timedelta

	def of(self, rule: Rule) -> NotificationTiming:
		"""The rule's own intervals where it sets them (non-zero), these elsewhere."""
		return NotificationTiming(
			timedelta(seconds=rule.group_wait_s) if rule.group_wait_s else self.group_wait,
			timedelta(minutes=rule.group_interval_minutes)
			if rule.group_interval_minutes
			else self.group_interval,
			timedelta(minutes=rule.repeat_interval_minutes)
			if rule.repeat_interval_minutes
			else self.repeat_interval,
		)


@dataclass
class Notification:
	"""One message to a rule's channels: a group's firing alerts and the ones resolved since its
	previous notification. Its status is firing while any alert in it fires."""

	rule: str
	group: tuple[tuple[str, str], ...]
	status: str
	alerts: list[AlertState] = field(default_factory=list)
	at: datetime | None = None

	@property
	def key(self) -> str:
		"""The notification's identity: its group and moment (every attempt of it sends the same)."""
		return fingerprint(
			{"rule": self.rule, "group": json.dumps(self.group), "status": self.status, "at": str(self.at)}
		)

	@property
	def firing(self) -> list[AlertState]:
		return [a for a in self.alerts if a.state == FIRING]

	@property
	def resolved(self) -> list[AlertState]:
		return [a for a in self.alerts if a.state == RESOLVED]


def group_of(rule: Rule, alert: AlertState) -> tuple[tuple[str, str], ...]:
	return tuple((label, alert.labels.get(label, "")) for label in rule.group_by)


def awaits_resolved_notification(alert: AlertState) -> bool:
	"""Resolved after it was notified as firing, and not yet notified as resolved."""
	return alert.state == RESOLVED and alert.notified_state == FIRING


def plan_notifications(
	rules: Mapping[str, Rule], alerts: Iterable[AlertState], now: datetime, defaults: NotificationTiming
) -> list[Notification]:
	"""What goes out now, at most one notification per rule and group:
	- a group never notified: once the oldest of its new firing alerts has waited `group_wait`;
	- a group notified before: when alerts started firing or resolved since, once its last
	  notification is `group_interval` old; when nothing changed, once it is `repeat_interval` old.
	A notification carries every firing alert of the group that is not silenced or inhibited, and the
	resolved ones not yet notified as resolved. `alerts` are the open ones and those awaiting a
	resolved notification (`awaits_resolved_notification`). Marks what it plans as notified."""
	groups: dict[tuple[str, tuple], list[AlertState]] = defaultdict(list)
	for alert in alerts:
		rule = rules.get(alert.rule)
		if rule is not None:
			groups[(alert.rule, group_of(rule, alert))].append(alert)
	planned = []
	for (rule_name, group), members in groups.items():
		timing = defaults.of(rules[rule_name])
		firing = [a for a in members if a.state == FIRING and not a.silenced and not a.inhibited]
		fresh = [a for a in firing if a.notified_state != FIRING]
		resolved = [a for a in members if awaits_resolved_notification(a)]
		last = max((a.last_notified_at for a in members if a.last_notified_at), default=None)
		if last is None:
			due = bool(fresh) and min(a.fired_at or now for a in fresh) + timing.group_wait <= now
		else:
			since = now - last
			due = bool(fresh or resolved) and since >= timing.group_interval
			due = due or (bool(firing) and since >= timing.repeat_interval)
		if not due:
			continue
		by_fingerprint = lambda a: (a.fingerprint, a.started_at)  # noqa: E731
		planned.append(
			Notification(
				rule_name,
				group,
				FIRING if firing else RESOLVED,
				sorted(firing, key=by_fingerprint) + sorted(resolved, key=by_fingerprint),
				at=now,
			)
		)
		for alert in firing:
			alert.last_notified_at, alert.notified_state, alert.changed = now, FIRING, True
		for alert in resolved:
			alert.last_notified_at, alert.notified_state, alert.changed = now, RESOLVED, True
	return planned
