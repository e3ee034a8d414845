"""When the app's jobs are due, and how far past it their last run is."""

from __future__ import annotations

from datetime import datetime

import frappe
from croniter import croniter

# how often Frappe's named scheduler events run, in seconds
EVENT_PERIOD_S = {
	"all": 60,
	"hourly": 3600,
	"hourly_long": 3600,
	"hourly_maintenance": 3600,
	"daily": 86400,
	"daily_long": 86400,
	"daily_maintenance": 86400,
	"weekly": 7 * 86400,
	"weekly_long": 7 * 86400,
	"monthly": 31 * 86400,
	"monthly_long": 31 * 86400,
}


def schedule_period_s(method: str) -> float | None:
	"""How often `hooks.py` schedules a job, read from the hooks (Frappe caches them: no SQL)."""
	for event, methods in frappe.get_hooks("scheduler_events").items():
		if event == "cron":
			for expression, cron_methods in methods.items():
				if method in cron_methods:
					first = croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
					return (croniter(expression, first).get_next(datetime) - first).total_seconds()
		elif method in methods:
			return EVENT_PERIOD_S.get(event)
	return None


def job_lag_s(last_finished: float | None, period_s: float, now: float) -> float | None:
	"""How long past its schedule a job's last report is (0 while on time); None if it never ran."""
	if last_finished is None:
		return None
	return round(max(0.0, now - last_finished - period_s), 1)
