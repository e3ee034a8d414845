app_name = "verenigingen_perf"
app_title = "Verenigingen Perf"
app_publisher = "Verenigingen"
app_description = "Measured performance monitoring for Frappe sites"
app_email = "dev@verenigingen.invalid"
app_license = "agpl-3.0"
required_apps = ["frappe"]

before_install = "verenigingen_perf.install.before_install"
after_install = "verenigingen_perf.install.after_install"
after_migrate = "verenigingen_perf.install.after_migrate"

# the effective configuration is cached in Redis; `bench clear-cache` drops it with the rest
clear_cache = "verenigingen_perf.utils.performance.config.clear_config_cache"

# every request and background job is measured (capture -> in-process queue -> Redis buffer)
before_request = ["verenigingen_perf.utils.performance.capture.before_request"]
after_request = ["verenigingen_perf.utils.performance.capture.after_request"]
before_job = ["verenigingen_perf.utils.performance.capture.before_job"]
after_job = ["verenigingen_perf.utils.performance.capture.after_job"]

scheduler_events = {
	"cron": {
		# buffer -> Performance Metric rows
		"* * * * *": ["verenigingen_perf.utils.performance.buffer.drain_job"],
	},
	# Performance Metric rows -> hourly and daily Performance Aggregate rows
	"hourly_long": ["verenigingen_perf.utils.performance.rollup.rollup_job"],
	# bounded storage: only rows already folded into aggregates are deleted
	"daily_long": ["verenigingen_perf.utils.performance.retention.retention_job"],
}
