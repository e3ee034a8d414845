"""Datetimes as the app stores and compares them: naive, in the site's system time zone, to the
microsecond. The one normaliser every module uses."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo


def as_datetime(value: Any) -> datetime:
	"""A datetime from what a database driver returns (a datetime, or its text)."""
	if isinstance(value, datetime):
		return value
	text = str(value)
	try:
		return datetime.fromisoformat(text)
	except ValueError:
		import frappe

		return frappe.utils.get_datetime(text)


def format_datetime(moment: datetime) -> str:
	"""How a datetime is written to and compared in the database: naive, microseconds."""
	return moment.isoformat(sep=" ", timespec="microseconds")


def shown_datetime(value: Any, zone_name: str) -> str:
	"""A stored datetime (or its text) as a person reads it on a terminal: to the second, with the
	site's time zone named (the stored text's microseconds and unnamed zone misled operators)."""
	if value is None:
		return "-"
	return f"{as_datetime(value):%Y-%m-%d %H:%M:%S} {zone_name}"


def floor_hour(moment: datetime) -> datetime:
	return moment.replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
	return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def system_zone() -> ZoneInfo:
	import frappe

	return ZoneInfo(frappe.utils.get_system_timezone())


def from_epoch(epoch: float, zone: ZoneInfo | None = None) -> datetime:
	"""A Unix time as a stored datetime (naive, system time zone; a loop over many passes the
	`system_zone()` it looked up once)."""
	return datetime.fromtimestamp(epoch, zone or system_zone()).replace(tzinfo=None)


def to_epoch(moment: datetime) -> float:
	"""A stored datetime (naive, system time zone) as a Unix time."""
	return moment.replace(tzinfo=system_zone()).timestamp()


def epoch_text(epoch: float | None) -> str | None:
	"""A Unix time as the app prints stored datetimes; None stays None."""
	return None if epoch is None else format_datetime(from_epoch(float(epoch)))
