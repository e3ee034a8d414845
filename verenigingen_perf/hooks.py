app_name = "verenigingen_perf"
app_title = "Verenigingen Perf"
app_publisher = "Verenigingen"
app_description = "Measured performance monitoring for Frappe sites"
app_email = "dev@verenigingen.invalid"
app_license = "agpl-3.0"

# the desk: shared helpers of the app's pages and the member form's "Analyse performance" action,
# told by the boot whether (and on which doctype) the user may use it
app_include_js = ["/assets/verenigingen_perf/js/verenigingen_perf.js"]
boot_session = "verenigingen_perf.boot.boot_session"
# the Performance workspace's number cards and chart (`bench export-fixtures` writes fixtures/)
fixtures = [
	{"dt": "Number Card", "filters": [["module", "=", "Verenigingen Perf"]]},
	{"dt": "Dashboard Chart", "filters": [["module", "=", "Verenigingen Perf"]]},
]

before_install = "verenigingen_perf.install.before_install"
after_install = "verenigingen_perf.install.after_install"
after_migrate = "verenigingen_perf.install.after_migrate"
# uninstalling removes what the app added: its role, settings, scheduled jobs and Redis keys
before_uninstall = "verenigingen_perf.install.before_uninstall"
after_uninstall = "verenigingen_perf.install.after_uninstall"

# `bench clear-cache` (also run by migrate and install-app) deletes every Redis key of the site but
# these: the buffered measurements, drain claims, job locks and reports are state, not cache
persistent_cache_keys = ["verenigingen_perf:"]
# the app's caches among those keys (configuration, dashboard) are dropped by the app itself
clear_cache = "verenigingen_perf.install.clear_caches"

# every request and background job is measured (capture -> in-process queue -> Redis buffer)
before_request = [
	"verenigingen_perf.api.before_request",
	"verenigingen_perf.utils.performance.capture.before_request",
]
after_request = ["verenigingen_perf.utils.performance.capture.after_request"]
before_job = ["verenigingen_perf.utils.performance.capture.before_job"]
after_job = ["verenigingen_perf.utils.performance.capture.after_job"]

# a Prometheus scraping with the metrics token (Authorization: Bearer) is let in on the metrics
# endpoint only (api/export.py)
auth_hooks = ["verenigingen_perf.api.export.authenticate"]

# the stages' consumers, so that no stage knows them: the drain hands every committed batch of rows
# to these (the OpenTelemetry span export), the rollup every fold's summaries, in its transaction (the
# exposition's cumulative counters). Another app may add its own.
vperf_drain_sinks = ["verenigingen_perf.utils.performance.export.otlp.hand_over"]
vperf_rollup_sinks = ["verenigingen_perf.utils.performance.export.counter_store.fold_into_counters"]

scheduler_events = {
	"cron": {
		"* * * * *": [
			# buffer -> Performance Metric rows
			"verenigingen_perf.utils.performance.buffer.drain_job",
			# the monitor's own signals (meta-monitoring)
			"verenigingen_perf.utils.performance.monitoring.sample_job",
			# alert rules -> Performance Alert records -> deliveries (each in its own background job)
			"verenigingen_perf.utils.performance.alerts.evaluate.evaluation_job",
			# the drain's OTLP backlog -> an OpenTelemetry collector (only when the export is on)
			"verenigingen_perf.utils.performance.export.otlp.export_job",
		],
		# Performance Metric rows -> hourly and daily Performance Aggregate rows: every ten minutes, so
		# an hour is folded within minutes of `aggregation_delay_minutes` after it ends (an hourly job
		# runs at the hour, before that delay has passed, and would fold it an hour later); each run
		# stops after `rollup_run_budget_s`, within the default queue's timeout
		"*/10 * * * *": ["verenigingen_perf.utils.performance.rollup.rollup_job"],
	},
	"hourly_long": [
		# aggregated hours -> baselines, Performance Regression and Performance Anomaly records
		"verenigingen_perf.utils.performance.detection.job.detection_job",
	],
	# bounded storage: only rows already folded into aggregates are deleted
	"daily_long": [
		"verenigingen_perf.utils.performance.retention.retention_job",
		# what the database reports about itself -> a Performance Database Snapshot
		"verenigingen_perf.utils.performance.database.snapshot.snapshot_job",
	],
}
