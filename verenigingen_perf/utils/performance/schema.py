"""Names the capture, storage and judgement modules share about the stored data."""

METRIC = "Performance Metric"
AGGREGATE = "Performance Aggregate"
ROLLUP_STATE = "Performance Rollup State"
MONITOR_SAMPLE = "Performance Monitor Sample"
SETTINGS = "Performance Settings"

# what kind of work an operation is; each kind is judged on its own levels
API, PAGE, JOB, CUSTOM = "api", "page", "job", "custom"
OPERATION_TYPES = (API, PAGE, JOB, CUSTOM)
REQUEST_TYPES = (API, PAGE)

# a span's outcome: an HTTP 4xx is the caller's error, a 5xx or a job that raised is the site's
OK, CLIENT_ERROR, ERROR = "ok", "client_error", "error"

# the operation of the rollup's site-wide aggregate rows (every operation of a period and type merged);
# capture renames a measured operation that would carry it
ALL_OPERATIONS = "(all operations)"
# where a period's operations past `max_operations_per_hour` are folded
OVERFLOW_OPERATION = "(other operations)"
# requests for what does not exist: never an operation of their own, whatever the path
NOT_FOUND_OPERATION = "(not found)"
UNKNOWN_METHOD_OPERATION = "(unknown method)"
# a page whose request failed otherwise: its path is the visitor's, so it is not a name either
FAILED_PAGE_OPERATION = "(failed page)"
# names the rollup writes itself; a measured operation never carries one of them
RESERVED_OPERATIONS = (ALL_OPERATIONS, OVERFLOW_OPERATION)

# detection (detection/): baselines, and what the detectors found
BASELINE = "Performance Baseline"
REGRESSION = "Performance Regression"
ANOMALY = "Performance Anomaly"
ROLLING, PINNED = "rolling", "pinned"
OPEN, ACKNOWLEDGED, RESOLVED = "open", "acknowledged", "resolved"

# alerting (alerts/): rules, channels, alerts and their deliveries, silences and maintenance windows
ALERT_RULE = "Performance Alert Rule"
ALERT_RULE_CHANNEL = "Performance Alert Rule Channel"
ALERT_CHANNEL = "Performance Alert Channel"
ALERT = "Performance Alert"
ALERT_DELIVERY = "Performance Alert Delivery"
ALERT_SILENCE = "Performance Alert Silence"
MAINTENANCE_WINDOW = "Performance Maintenance Window"

# export (export/): cumulative counters per operation for the Prometheus exposition
EXPORT_COUNTER = "Performance Export Counter"

# database health (database/): snapshots of what the database reports about itself
DATABASE_SNAPSHOT = "Performance Database Snapshot"

# the user a valid metrics token acts as (api/export.py): it has the reader role only, no password and
# no session, and is created and removed with the app
METRICS_USER = "performance-metrics@verenigingen-perf.invalid"
