// One operation: verenigingen_perf.api.desk.operation_detail, opened with ?operation=<name> (or
// frappe.set_route("performance-operation", {operation})).
frappe.pages["performance-operation"].on_page_load = function (wrapper) {
	const page = frappe.ui.make_app_page({
		parent: wrapper,
		title: __("Performance Operation"),
		single_column: true,
	});
	wrapper.operation_view = new PerformanceOperationView(page);
};

frappe.pages["performance-operation"].on_page_show = function (wrapper) {
	wrapper.operation_view.show(verenigingen_perf.desk.route_option("operation"));
};

class PerformanceOperationView {
	constructor(page) {
		this.page = page;
		this.desk = verenigingen_perf.desk;
		this.$body = $('<div class="vperf-operation"></div>').appendTo(page.main);
		this.operation_field = page.add_field({
			fieldname: "operation",
			label: __("Operation"),
			fieldtype: "Data",
			change: () => {
				const value = this.operation_field.get_value();
				if (value && value !== this.operation) this.show(value);
			},
		});
		// operation names run to 140 characters: the field takes the page form's whole row (a sixth
		// of it by default) so that a long name shows in full
		$(this.operation_field.wrapper).removeClass("col-md-2").addClass("col-md-12");
		this.page.set_primary_action(__("Refresh"), () => this.show(this.operation), "refresh");
		this.page.add_inner_button(__("Dashboard"), () => frappe.set_route("performance-dashboard"));
		this.desk.bind_links(this.$body);
	}

	show(operation) {
		this.operation = operation;
		this.page.clear_indicator();
		if (!operation) {
			this.set_title(__("Performance Operation"));
			this.$body.html(`<div class="text-muted">${this.desk.escape(__("Choose an operation, or open one from the dashboard."))}</div>`);
			return Promise.resolve();
		}
		this.operation_field.set_value(operation);
		this.operation_field.$input.attr("title", operation);
		this.set_title(operation);
		return frappe
			.xcall(`${this.desk.API}.desk.operation_detail`, { operation })
			.then((data) => this.render(data))
			.catch(() => {
				// frappe.xcall has shown the server's message (no permission, a name that is no operation's)
				this.page.set_indicator(__("Not loaded"), "red");
				this.$body.empty();
			});
	}

	// the operation's name as it is (never read as HTML), in the page head and the browser's tab
	set_title(title) {
		this.page.set_title(this.desk.escape(title), null, false, title, title);
	}

	render(data) {
		const d = this.desk;
		if (!data.measured) {
			this.page.set_indicator(__("Not measured"), "gray");
			this.$body.html(
				`<div class="text-muted text-break vperf-empty" data-section="not-measured">${d.escape(
					__("No measurement of {0} is kept (not measured, or older than the retention).", [data.operation])
				)}</div>`
			);
			return;
		}
		const t = data.last_7d;
		const figure = (key, unit) => d.figure(t[key], { key: `last_7d.${key}`, unit });
		this.$body.html(
			[
				`<div class="text-muted small mb-3 vperf-generated" data-generated-at="${d.escape(data.generated_at)}">${d.escape(
					data.operation_types.length
						? __("Generated at {0}; types: {1}", [d.datetime(data.generated_at), data.operation_types.join(", ")])
						: __("Generated at {0}; no aggregates kept, only recent detail rows", [d.datetime(data.generated_at)])
				)}</div>`,
				d.section(
					__("Last 7 days"),
					`<div class="row">
						${[
							[__("Calls"), figure("count")],
							[__("p50"), figure("p50_ms", "ms")],
							[__("p95"), figure("p95_ms", "ms")],
							[__("p99"), figure("p99_ms", "ms")],
							[__("Slowest"), figure("max_ms", "ms")],
							[__("Errors"), figure("errors")],
							[__("Error rate"), figure("error_rate")],
							[__("Statements per call"), figure("queries_per_call")],
						]
							.map(([label, value]) => `<div class="col-sm-3 mb-2"><div class="text-muted small">${d.escape(label)}</div><div>${value}</div></div>`)
							.join("")}
					</div>`,
					"last_7d"
				),
				d.section(__("Hourly, last 7 days"), '<div class="vperf-hourly-p"></div><div class="vperf-hourly-q"></div><div class="vperf-hourly-n"></div>', "hourly"),
				d.section(__("Daily, last 90 days"), '<div class="vperf-daily-p"></div><div class="vperf-daily-n"></div>', "daily"),
				this.baselines_html(data.baselines, data.baseline_status),
				this.regressions_html(data.regressions),
				this.slow_rows_html(data.slow_rows, data.slow_rows_since),
			].join("")
		);
		const counts = [
			{ key: "count", label: __("Calls") },
			{ key: "errors", label: __("Errors") },
		];
		d.percentile_chart(this.$body.find(".vperf-hourly-p")[0], data.hourly_series, { title: __("p50 and p95 (ms)") });
		this.statements_chart(this.$body.find(".vperf-hourly-q")[0], data.hourly_series);
		d.count_chart(this.$body.find(".vperf-hourly-n")[0], data.hourly_series, counts, { title: __("Calls and errors") });
		d.percentile_chart(this.$body.find(".vperf-daily-p")[0], data.daily_series, { title: __("p50 and p95 (ms)"), hourly: false });
		d.count_chart(this.$body.find(".vperf-daily-n")[0], data.daily_series, counts, { title: __("Calls and errors"), hourly: false });
	}

	statements_chart(element, points) {
		const measured = points.filter((p) => p.count);
		// a line needs two points
		if (measured.length < 2) return;
		new frappe.Chart(element, {
			title: __("Statements per call"),
			type: "line",
			height: 180,
			data: {
				labels: measured.map((p) => this.desk.period_label(p.period_start)),
				datasets: [{ name: __("Statements per call"), values: measured.map((p) => p.queries_per_call) }],
			},
			lineOptions: { hideDots: 1 },
			axisOptions: { xIsSeries: 1, xAxisMode: "tick" },
		});
	}

	baselines_html(baselines, status) {
		const d = this.desk;
		return d.section(
			__("Baselines"),
			d.table(
				[
					{ label: __("Kind"), render: (b) => d.escape(b.baseline_kind + (b.pin_name ? `: ${b.pin_name}` : "")) },
					{ label: __("Period"), render: (b) => `${d.datetime_html(b.period_start)} – ${d.datetime_html(b.period_end)}` },
					{ label: __("Samples"), render: (b) => d.figure(b.sample_count, { key: "baselines.sample_count" }) },
					{ label: __("p50 – p95 band"), render: (b) => `${d.figure(b.p50_ms, { key: "baselines.p50_ms", unit: "ms" })} – ${d.figure(b.p95_ms, { key: "baselines.p95_ms", unit: "ms" })}` },
					{ label: __("p99"), render: (b) => d.figure(b.p99_ms, { unit: "ms" }) },
					{ label: __("Statements per call"), render: (b) => d.figure(b.statements_mean) },
					{ label: __("Error rate"), render: (b) => d.figure(b.error_rate) },
				],
				baselines,
				{ empty: status === "ok" ? __("No baseline") : __("No baseline: insufficient data") }
			),
			"baselines"
		);
	}

	regressions_html(regressions) {
		const d = this.desk;
		// a duration metric's values are milliseconds (detection/rules.py: duration_p50, _p95, _p99)
		const value = (r, key) => d.figure(r[key], { unit: r.metric.startsWith("duration_") ? "ms" : "" });
		return d.section(
			__("Regressions"),
			d.table(
				[
					{ label: __("Metric"), render: (r) => d.escape(r.metric) },
					{ label: __("Status"), render: (r) => d.escape(__(r.status)) },
					{ label: __("Before"), render: (r) => value(r, "before_value") },
					{ label: __("After"), render: (r) => value(r, "after_value") },
					{ label: __("Change"), render: (r) => d.figure(r.change_value) },
					{ label: __("First detected"), render: (r) => d.datetime_html(r.first_detected) },
					{ label: "", render: (r) => d.doc_link("Performance Regression", r.name, __("Open")) },
				],
				regressions,
				{ empty: __("No regression recorded") }
			),
			"regressions"
		);
	}

	slow_rows_html(rows, since) {
		const d = this.desk;
		return d.section(
			__("Slowest calls since {0}", [d.datetime(since)]),
			d.table(
				[
					{ label: __("Started"), render: (r) => d.datetime_html(r.started_at, { key: "slow_rows.started_at" }) },
					{ label: __("Duration"), render: (r) => d.figure(r.duration_ms, { key: "slow_rows.duration_ms", unit: "ms" }) },
					{ label: __("Statements"), render: (r) => d.figure(r.query_count) },
					{ label: __("SQL time"), render: (r) => d.figure(r.db_time_ms, { unit: "ms" }) },
					{ label: __("Status"), render: (r) => d.escape(r.status + (r.http_status ? ` ${r.http_status}` : "")) },
					{ label: __("User"), render: (r) => d.escape(r.user) },
					{ label: __("Trace"), render: (r) => d.trace_link(r.trace_id) },
				],
				rows,
				{ empty: __("No detail rows in that time") }
			),
			"slow_rows"
		);
	}
}
