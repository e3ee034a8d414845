"""Detail rows planted by the desk's and the commands' tests, as the drain would have inserted them."""

from typing import Any

from verenigingen_perf.utils.performance import buffer, capture


def detail_values(operation: str, moment: str, duration_ms: float, **extra: Any) -> dict[str, Any]:
	"""One measured API call that started at `moment` (a database datetime text); `extra` overrides."""
	return {
		"operation": operation,
		"operation_type": "api",
		"started_at": moment,
		"duration_ms": duration_ms,
		"query_count": 2,
		"db_time_ms": 0.5,
		"peak_rss_mb": 1.0,
		"rss_growth_kb": 0,
		"peak_alloc_kb": 0.0,
		"status": "ok",
		"http_status": 200,
		"user": "Administrator",
		"trace_id": capture.new_id(),
		**extra,
	}


def detail_row(values: dict[str, Any], name: str | None = None) -> tuple:
	"""The row `buffer.insert_rows` writes, ingested when it started."""
	return buffer.detail_row(name or capture.new_id(), values["started_at"], values)
