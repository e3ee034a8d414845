"""The levels every judgement of the app speaks in, and how a measured value gets one. Pure Python.

Health, meta-monitoring, member analysis and database health judge against the configuration's
warning and critical levels (`config.Level`) and answer in these words.
"""

from __future__ import annotations

from verenigingen_perf.utils.performance.config import Level

HEALTHY, WARNING, CRITICAL, NO_DATA = "healthy", "warning", "critical", "no data"


def value_level(value: float, level: Level) -> str:
	"""A value where lower is better, against its warning and critical levels."""
	if value <= level.warning:
		return HEALTHY
	return WARNING if value <= level.critical else CRITICAL
