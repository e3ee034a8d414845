"""How stored datetimes are shown to a person (no site needed)."""

from datetime import datetime

from verenigingen_perf.utils.performance.timeutil import format_datetime, shown_datetime


def test_a_stored_datetime_is_shown_to_the_second_with_its_zone_named():
	moment = datetime(2026, 12, 7, 6, 0, 0, 123456)
	assert shown_datetime(moment, "Europe/Amsterdam") == "2026-12-07 06:00:00 Europe/Amsterdam"
	# the stored text (microseconds) reads the same
	assert shown_datetime(format_datetime(moment), "UTC") == "2026-12-07 06:00:00 UTC"


def test_a_missing_datetime_is_shown_as_a_dash():
	assert shown_datetime(None, "UTC") == "-"
