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
