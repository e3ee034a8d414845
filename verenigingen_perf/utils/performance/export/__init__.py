"""Handing the measurements to outside engines: the Prometheus/OpenMetrics exposition (cumulative
counters kept by the rollup) and the OpenTelemetry span export (fed by the drain)."""
