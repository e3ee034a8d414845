// The Performance Dashboard: renders verenigingen_perf.api.performance.performance_dashboard_data and
// reloads it every `desk_refresh_s` seconds (the answer itself is cached for `dashboard_cache_ttl_s`).
frappe.pages["performance-dashboard"].on_page_load = function (wrapper) {
	const page = frappe.ui.make_app_page({
		parent: wrapper,
		title: __("Performance Dashboard"),
		single_column: true,
	});
	wrapper.dashboard = new PerformanceDashboard(page, wrapper);
};

frappe.pages["performance-dashboard"].on_page_show = function (wrapper) {
	wrapper.dashboard && wrapper.dashboard.refresh();
};

frappe.pages["performance-dashboard"].on_page_hide = function (wrapper) {
	wrapper.dashboard && wrapper.dashboard.stop();
};

class PerformanceDashboard {
	constructor(page, wrapper) {
		this.page = page;
		this.desk = verenigingen_perf.desk;
		this.$body = $('<div class="vperf-dashboard"></div>').appendTo(page.main);
		this.page.set_primary_action(__("Refresh"), () => this.refresh(), "refresh");
		this.page.add_inner_button(__("Settings"), () => frappe.set_route("Form", "Performance Settings"));
		this.desk.bind_links(this.$body);
		this.timer = null;
	}

	stop() {
		clearTimeout(this.timer);
		this.timer = null;
	}

	refresh() {
		this.stop();
		return frappe
			.xcall(`${this.desk.API}.performance.performance_dashboard_data`)
			.then((data) => {
				this.render(data);
				this.timer = setTimeout(() => this.refresh(), data.refresh_s * 1000);
			})
			// frappe.xcall has shown the server's message; Refresh tries again
			.catch(() => this.page.set_indicator(__("Not loaded"), "red"));
	}

	render(data) {
		const d = this.desk;
		this.page.set_indicator(
			data.cached ? __("Cached") : __("Fresh"),
			data.cached ? "blue" : "green"
		);
		this.$body.html(
			[
				`<div class="text-muted small mb-3 vperf-generated" data-generated-at="${d.escape(
					data.generated_at
				)}" data-cached="${data.cached ? 1 : 0}">${d.escape(
					__("Generated at {0} ({1}), environment {2}; reloads every {3}", [
						d.datetime(data.generated_at),
						data.cached ? __("cached") : __("fresh"),
						data.environment,
						d.duration(data.refresh_s * 1000),
					])
				)}</div>`,
				this.health_html(data.health),
				this.windows_html(data.windows),
				d.section(__("Last 24 hours, by hour"), '<div class="vperf-hourly-p"></div><div class="vperf-hourly-n"></div>', "hourly"),
				d.section(__("Last 30 days, by day"), '<div class="vperf-daily-p"></div><div class="vperf-daily-n"></div>', "daily"),
				this.slowest_html(data.slowest_operations_24h),
				this.detection_html(data.detection, data.alerts),
				this.storage_html(data.storage, data.freshness),
				// filled by its own call, for System Managers only (statement shapes reveal the schema)
				frappe.user.has_role("System Manager") ? '<div class="vperf-database"></div>' : "",
			].join("")
		);
		this.load_database();
		const counts = [
			{ key: "count", label: __("Requests") },
			{ key: "errors", label: __("Errors") },
			{ key: "jobs", label: __("Jobs") },
		];
		d.percentile_chart(this.$body.find(".vperf-hourly-p")[0], data.hourly_series, { title: __("Requests: p50 and p95 (ms)") });
		d.count_chart(this.$body.find(".vperf-hourly-n")[0], data.hourly_series, counts, { title: __("Counts") });
		d.percentile_chart(this.$body.find(".vperf-daily-p")[0], data.daily_series, { title: __("Requests: p50 and p95 (ms)"), hourly: false });
		d.count_chart(this.$body.find(".vperf-daily-n")[0], data.daily_series, counts, { title: __("Counts"), hourly: false });
	}

	load_database() {
		const $target = this.$body.find(".vperf-database");
		if (!$target.length) return;
		frappe
			.xcall(`${this.desk.API}.database.database_health`)
			.then((db) => $target.html(this.database_html(db)))
			.catch(() => $target.empty()); // frappe.xcall has shown the server's message
	}

	database_html(db) {
		const d = this.desk;
		if (!db.snapshot) {
			return d.section(__("Database"), `<div class="text-muted vperf-empty">${d.escape(db.message)}</div>`, "database");
		}
		const c = db.connections || {};
		const figures = d.table(
			[
				{ label: __("What"), render: (r) => d.escape(r[0]) },
				{ label: __("Value"), render: (r) => r[1] },
			],
			[
				[__("Snapshot"), d.escape(`${d.datetime(db.taken_at)} (${__(db.kind)}, ${db.db_type})`)],
				[__("Tables"), d.figure(db.tables, { key: "database.tables" })],
				[__("Size (MB)"), d.figure(db.total_bytes / 1048576, { key: "database.total_mb", digits: 1 })],
				[__("Statement shapes"), d.figure(db.statements, { key: "database.statements" })],
				[
					__("Buffer pool hit ratio"),
					`${d.figure(db.cache_hit_ratio, { key: "database.cache_hit_ratio" })} ${d.level(db.cache_level)}`,
				],
				[__("Connections / max"), `${d.figure(c.connected ?? null)} / ${d.figure(c.max_connections ?? null)}`],
				[__("Threads running"), d.figure(c.running ?? null)],
				[__("Long-running statements"), d.figure(db.long_running.length, { key: "database.long_running" })],
			]
		);
		const recommendations = d.table(
			[
				{ label: __("Kind"), render: (r) => d.escape(__(r.kind)) },
				{ label: __("About"), render: (r) => `<code>${d.escape(r.subject)}</code>` },
				{ label: __("Measured"), render: (r) => d.escape(r.message) },
				{ label: __("Action"), render: (r) => `<code class="vperf-action">${d.escape(r.action)}</code>` },
			],
			db.recommendations,
			{ empty: __("No recommendation: nothing passed its threshold") }
		);
		const unavailable = db.unavailable.length
			? `<div class="text-muted small mt-2">${db.unavailable
					.map((u) => d.escape(`${__("Not measured")}: ${u.what}: ${u.why}${u.how ? ` (${u.how})` : ""}`))
					.join("<br>")}</div>`
			: "";
		return d.section(__("Database"), figures + recommendations + unavailable, "database");
	}

	health_html(health) {
		const d = this.desk;
		const head = `<div class="d-flex align-items-center mb-3">
			<div class="vperf-score mr-3" style="font-size: 2.5rem; font-weight: 600">${d.figure(health.score, { key: "health.score" })}</div>
			<div>${d.level(health.level)}<div class="text-muted small mt-1 vperf-health-message">${d.escape(health.message)}</div></div>
		</div>`;
		const components = d.table(
			[
				{ label: __("Component"), render: (c) => d.escape(__(c.name)) },
				{ label: __("Value"), render: (c) => d.figure(c.value, { key: `health.components.${c.name}.value`, unit: c.unit }) },
				{ label: __("Warning at"), render: (c) => d.figure(c.warning, { unit: c.unit }) },
				{ label: __("Critical at"), render: (c) => d.figure(c.critical, { unit: c.unit }) },
				{ label: __("Score"), render: (c) => d.figure(c.score, { key: `health.components.${c.name}.score` }) },
				{ label: __("Level"), render: (c) => d.level(c.level) },
			],
			health.components
		);
		return d.section(__("Health"), head + components, "health");
	}

	windows_html(windows) {
		const d = this.desk;
		const names = { last_hour: __("Last hour"), last_24h: __("Last 24 hours"), last_7d: __("Last 7 days") };
		const rows = Object.keys(names).map((name) => ({ name, ...windows[name] }));
		const figure = (key, unit) => (r) => d.figure(r[key], { key: `windows.${r.name}.${key}`, unit });
		return d.section(
			__("Requests"),
			d.table(
				[
					{ label: __("Window"), render: (r) => d.escape(names[r.name]) },
					{ label: __("Requests"), render: figure("count") },
					{ label: __("p50"), render: figure("p50_ms", "ms") },
					{ label: __("p95"), render: figure("p95_ms", "ms") },
					{ label: __("Mean"), render: figure("mean_ms", "ms") },
					{ label: __("Per minute"), render: figure("throughput_per_min") },
					{ label: __("Error rate"), render: figure("error_rate") },
					{ label: __("Statements per request"), render: figure("queries_per_operation") },
				],
				rows
			),
			"windows"
		);
	}

	slowest_html(slowest) {
		const d = this.desk;
		return d.section(
			__("Slowest operations, last 24 hours"),
			d.table(
				[
					{ label: __("Operation"), render: (r) => d.operation_link(r.operation) },
					{ label: __("Type"), render: (r) => d.escape(r.operation_type) },
					{ label: __("p95"), render: (r) => d.figure(r.p95_ms, { key: "slowest.p95_ms", unit: "ms" }) },
					{ label: __("Count"), render: (r) => d.figure(r.count, { key: "slowest.count" }) },
					{ label: __("Error rate"), render: (r) => d.figure(r.error_rate, { key: "slowest.error_rate" }) },
				],
				slowest
			),
			"slowest"
		);
	}

	detection_html(detection, alerts) {
		const d = this.desk;
		const counts = `<p>${d.figure(detection.open_regressions, { key: "detection.open_regressions" })} ${d.escape(
			__("open regressions")
		)} &middot; ${d.figure(detection.anomalies, { key: "detection.anomalies" })} ${d.escape(
			__("anomalies since {0}", [d.datetime(detection.anomalies_since)])
		)} &middot; ${d.figure(alerts.firing, { key: "alerts.firing" })} ${d.escape(__("firing alerts"))} &middot; ${d.figure(
			alerts.pending,
			{ key: "alerts.pending" }
		)} ${d.escape(__("pending"))}</p>`;
		const regressions = d.table(
			[
				{ label: __("Operation"), render: (r) => d.operation_link(r.operation) },
				{ label: __("Metric"), render: (r) => d.escape(r.metric) },
				{ label: __("Change"), render: (r) => d.figure(r.change_value) },
				{ label: __("Since"), render: (r) => d.datetime_html(r.first_detected, { key: "detection.first_detected" }) },
			],
			detection.worst_regressions,
			{ empty: __("No open regressions") }
		);
		return d.section(__("Regressions, anomalies and alerts"), counts + regressions, "detection");
	}

	storage_html(storage, freshness) {
		const d = this.desk;
		const tables = d.table(
			[
				{ label: __("Table"), render: (t) => d.escape(t.doctype) },
				{ label: __("Rows"), render: (t) => d.figure(t.rows, { key: `storage.${t.doctype}.rows` }) },
				{ label: __("Size (MB)"), render: (t) => d.figure(t.bytes / 1048576, { digits: 2 }) },
			],
			storage.tables,
			{ empty: storage.note || __("Not measured yet") }
		);
		const measured = storage.measured_at
			? `<div class="text-muted small mb-2">${d.escape(
					__("Table sizes as the retention job measured them at {0}", [d.datetime(storage.measured_at)])
			  )}</div>`
			: "";
		const when = (key) => d.datetime_html(freshness[key], { key: `freshness.${key}` });
		const fresh = [
			[__("Aggregated until"), when("aggregated_until")],
			[__("Last drain"), when("last_drain_at")],
			[__("Last rollup"), when("last_rollup_at")],
			[__("Last retention"), when("last_retention_at")],
			[__("Waiting in the buffer"), d.figure(freshness.buffered_measurements.buffered ?? null)],
		];
		const unavailable = freshness.unavailable.length
			? `<div class="text-danger">${d.escape(__("Unavailable: {0}", [freshness.unavailable.join("; ")]))}</div>`
			: "";
		return d.section(
			__("Storage and freshness"),
			measured +
				tables +
				d.table(
					[
						{ label: __("What"), render: (r) => d.escape(r[0]) },
						{ label: __("When / how many"), render: (r) => r[1] },
					],
					fresh
				) +
				unavailable,
			"storage"
		);
	}
}
