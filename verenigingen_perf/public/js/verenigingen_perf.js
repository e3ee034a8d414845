// Shared by the app's desk pages (performance-dashboard, performance-operation, performance-trace)
// and the member form's "Analyse performance" action. Loaded on every desk page (app_include_js).
frappe.provide("verenigingen_perf.desk");

verenigingen_perf.desk = {
	API: "verenigingen_perf.api",

	// the units of the server's durations (figures' `unit`), in milliseconds
	DURATION_UNITS_MS: { ms: 1, s: 1000 },

	// levels as health.py and monitoring.py name them, coloured as Frappe's indicators are
	LEVEL_COLOURS: { healthy: "green", warning: "orange", critical: "red", "no data": "gray" },

	escape(value) {
		return frappe.utils.escape_html(value === null || value === undefined ? "" : String(value));
	},

	// a figure as shown, with the measured value kept in data-value (the browser tests read it);
	// small values keep their significant digits (an error rate of 0.01 is not "0.0"); a figure in
	// milliseconds or seconds is a duration, shown in the unit its size calls for
	figure(value, { key = "", unit = "", digits = null } = {}) {
		const measured = value !== null && value !== undefined;
		const text = !measured
			? __("No data")
			: unit in this.DURATION_UNITS_MS
			? this.duration(value * this.DURATION_UNITS_MS[unit])
			: `${this.number(value, digits)}${unit ? " " + unit : ""}`;
		return `<span class="vperf-figure${measured ? "" : " text-muted"}" data-key="${this.escape(
			key
		)}" data-value="${measured ? this.escape(value) : ""}">${this.escape(text)}</span>`;
	},

	number(value, digits = null) {
		const magnitude = Math.abs(value);
		const fraction = digits ?? (Number.isInteger(value) ? 0 : magnitude >= 100 ? 1 : magnitude >= 1 ? 2 : 4);
		return Number(value).toLocaleString(undefined, { maximumFractionDigits: fraction });
	},

	// a duration given in milliseconds, in the unit its size calls for: 0.25 ms is "250 µs",
	// 95000 ms "1.58 min"
	duration(ms) {
		const magnitude = Math.abs(ms);
		if (magnitude >= 3600000) return __("{0} h", [this.number(ms / 3600000)]);
		if (magnitude >= 60000) return __("{0} min", [this.number(ms / 60000)]);
		if (magnitude >= 1000) return __("{0} s", [this.number(ms / 1000)]);
		if (magnitude >= 1 || magnitude === 0) return __("{0} ms", [this.number(ms)]);
		return __("{0} µs", [this.number(ms * 1000)]);
	},

	// a datetime as the server stores and sends it (naive, in the system's time zone, often with
	// microseconds: "2026-12-07 06:00:00.000000") as Frappe shows one to this user: in the user's
	// time zone, date format and time format
	datetime(value) {
		if (!value) return "";
		return frappe.datetime.str_to_user(this.datetime_text(value));
	},

	// the same inside HTML, keeping the stored value in data-value (the browser tests read it)
	datetime_html(value, { key = "" } = {}) {
		if (!value) return `<span class="text-muted">${this.escape(__("No data"))}</span>`;
		return `<span class="vperf-datetime" data-key="${this.escape(key)}" data-value="${this.escape(
			value
		)}">${this.escape(this.datetime(value))}</span>`;
	},

	// the start of a day of a chart's series in the user's date format (the system's day, as the
	// server counted it), or of an hour in the user's time zone: the user's date format without
	// the year, so that an axis's labels stay short ("07.12 06:00" for dd.mm.yyyy)
	period_label(period_start, { hourly = true } = {}) {
		const text = this.datetime_text(period_start);
		if (!hourly) return frappe.datetime.str_to_user(text.slice(0, 10), false, true);
		const day_and_month = frappe.datetime
			.get_user_date_fmt()
			.toUpperCase()
			.replace(/^Y+[^A-Z]|[^A-Z]Y+$/, "");
		return frappe.datetime.convert_to_user_tz(text, false).format(`${day_and_month} HH:mm`);
	},

	// "YYYY-MM-DD HH:mm:ss", the form frappe.datetime parses: no "T", no fraction of a second
	datetime_text(value) {
		return String(value).replace("T", " ").slice(0, 19);
	},

	level(level) {
		const colour = this.LEVEL_COLOURS[level] || "gray";
		return `<span class="indicator-pill ${colour}" data-level="${this.escape(level)}">${this.escape(
			__(level || "no data")
		)}</span>`;
	},

	table(columns, rows, { empty = __("No data") } = {}) {
		if (!rows.length) {
			return `<div class="text-muted vperf-empty">${this.escape(empty)}</div>`;
		}
		const head = columns.map((c) => `<th>${this.escape(c.label)}</th>`).join("");
		const body = rows
			.map((row) => `<tr>${columns.map((c) => `<td>${c.render(row)}</td>`).join("")}</tr>`)
			.join("");
		return `<table class="table table-bordered table-sm vperf-table"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
	},

	section(title, body, name) {
		return `<div class="vperf-section frappe-card p-3 mb-3" data-section="${this.escape(name)}">
			<h5 class="mb-3">${this.escape(title)}</h5>${body}</div>`;
	},

	// percentiles over periods: only periods with measurements are drawn (no 0 for "nothing measured")
	percentile_chart(element, points, { title, hourly = true } = {}) {
		const measured = points.filter((p) => p.count);
		if (!measured.length) {
			$(element).html(`<div class="text-muted vperf-empty">${this.escape(__("No data"))}</div>`);
			return null;
		}
		if (measured.length === 1) {
			// frappe-charts draws nothing useful for a single point: say it in words
			const [p] = measured;
			$(element).html(
				`<div class="vperf-single-point">${this.escape(title || "")}: ${this.escape(
					__("only {0} measured: p50 {1}, p95 {2}", [
						this.period_label(p.period_start, { hourly }),
						this.duration(p.p50_ms),
						this.duration(p.p95_ms),
					])
				)}</div>`
			);
			return null;
		}
		return new frappe.Chart(element, {
			title,
			type: "line",
			height: 220,
			data: {
				labels: measured.map((p) => this.period_label(p.period_start, { hourly })),
				datasets: [
					{ name: __("p50 (ms)"), values: measured.map((p) => p.p50_ms) },
					{ name: __("p95 (ms)"), values: measured.map((p) => p.p95_ms) },
				],
			},
			lineOptions: { hideDots: 1, regionFill: 0 },
			axisOptions: { xIsSeries: 1, xAxisMode: "tick" },
		});
	},

	count_chart(element, points, datasets, { title, hourly = true } = {}) {
		if (!points.some((p) => datasets.some((d) => p[d.key]))) return null;
		return new frappe.Chart(element, {
			title,
			type: "bar",
			height: 200,
			data: {
				labels: points.map((p) => this.period_label(p.period_start, { hourly })),
				datasets: datasets.map((d) => ({ name: d.label, values: points.map((p) => p[d.key] || 0) })),
			},
			barOptions: { stacked: 1 },
			axisOptions: { xIsSeries: 1, xAxisMode: "tick" },
		});
	},

	operation_link(operation) {
		return `<a href="#" class="vperf-operation-link text-break" data-operation="${this.escape(operation)}">${this.escape(
			operation
		)}</a>`;
	},

	trace_link(trace_id) {
		if (!trace_id) return "";
		return `<a href="#" class="vperf-trace-link" data-trace="${this.escape(trace_id)}">${this.escape(
			trace_id
		)}</a>`;
	},

	doc_link(doctype, name, label) {
		return `<a href="#" class="vperf-doc-link" data-doctype="${this.escape(doctype)}" data-name="${this.escape(
			name
		)}">${this.escape(label || name)}</a>`;
	},

	// links inside a page route to the operation and trace views (Frappe v15 /app and v16 /desk alike)
	bind_links(wrapper) {
		$(wrapper).on("click", ".vperf-operation-link", (event) => {
			event.preventDefault();
			frappe.set_route("performance-operation", { operation: $(event.currentTarget).attr("data-operation") });
		});
		$(wrapper).on("click", ".vperf-trace-link", (event) => {
			event.preventDefault();
			frappe.set_route("performance-trace", { trace_id: $(event.currentTarget).attr("data-trace") });
		});
		$(wrapper).on("click", ".vperf-doc-link", (event) => {
			event.preventDefault();
			const $link = $(event.currentTarget);
			frappe.set_route("Form", $link.attr("data-doctype"), $link.attr("data-name"));
		});
	},

	// a route option, from frappe.set_route(...) or from the address's query string; kept in the
	// address so the view can be reloaded and shared
	route_option(name) {
		const options = frappe.route_options || {};
		const value = options[name] || new URLSearchParams(window.location.search).get(name) || "";
		// taken, so that a later visit without it does not show it again; the object itself stays:
		// Frappe v16's sidebar reads frappe.route_options.sidebar once the page is shown
		delete options[name];
		if (value) {
			const url = new URL(window.location.href);
			url.searchParams.set(name, value);
			window.history.replaceState(window.history.state, "", url);
		}
		return value;
	},
};

// The member form's action: only where the boot says the user may analyse (see boot.py)
$(document).on("startup", () => {
	const settings = frappe.boot.verenigingen_perf;
	if (!settings || !settings.member_doctype) return;
	frappe.ui.form.on(settings.member_doctype, "refresh", (frm) => {
		if (frm.is_new()) return;
		frm.add_custom_button(__("Analyse performance"), () => verenigingen_perf.desk.analyse_member(frm.doc.name));
	});
});

verenigingen_perf.desk.analyse_member = function (member_name) {
	const desk = verenigingen_perf.desk;
	return frappe
		.xcall(`${desk.API}.performance.comprehensive_member_analysis`, { member_name })
		.then((result) => {
			const dialog = new frappe.ui.Dialog({
				title: __("Performance of {0}", [member_name]),
				size: "large",
				fields: [{ fieldtype: "HTML", fieldname: "analysis" }],
			});
			dialog.fields_dict.analysis.$wrapper.html(desk.member_analysis_html(result));
			dialog.$wrapper.attr("data-vperf-dialog", "member-analysis");
			dialog.show();
			return dialog;
		})
		.catch(() => null); // frappe.xcall has shown the server's message
};

verenigingen_perf.desk.member_analysis_html = function (result) {
	const desk = verenigingen_perf.desk;
	const m = result.measurement;
	const figures = [
		["statements", __("Statements"), ""],
		["sql_ms", __("Time in SQL"), "ms"],
		["wall_ms", __("Load time"), "ms"],
		["memory_peak_kb", __("Memory peak"), "KB"],
		["child_rows", __("Child rows"), ""],
		["link_values", __("Link values"), ""],
	];
	return [
		`<div class="mb-3">${desk.level(m.level)} <span class="text-muted">${desk.escape(
			__("{0} {1}, environment {2}", [m.doctype, m.member, result.environment])
		)}</span></div>`,
		desk.section(
			__("Measured"),
			desk.table(
				[
					{ label: __("Figure"), render: (r) => desk.escape(r[1]) },
					{ label: __("Value"), render: (r) => desk.figure(m[r[0]], { key: `measurement.${r[0]}`, unit: r[2] }) },
				],
				figures
			),
			"measurement"
		),
		desk.section(
			__("Repeated statement shapes (N+1)"),
			desk.table(
				[
					{ label: __("Statement shape"), render: (r) => `<code>${desk.escape(r.shape)}</code>` },
					{ label: __("Times"), render: (r) => desk.figure(r.count, { key: "repeated_shapes.count" }) },
					{ label: __("Total time"), render: (r) => desk.figure(r.total_ms, { key: "repeated_shapes.total_ms", unit: "ms" }) },
				],
				m.repeated_shapes || [],
				{ empty: __("No statement shape repeated {0} times or more", [result.thresholds.n_plus_one_min_repeats]) }
			),
			"repeated_shapes"
		),
		desk.section(
			__("Recommendations"),
			desk.table(
				[
					{ label: __("Level"), render: (r) => desk.level(r.level) },
					{ label: __("Advice"), render: (r) => desk.escape(r.advice) },
					{ label: __("Measured"), render: (r) => desk.figure(r.measured, { key: "recommendations.measured" }) },
					{ label: __("Threshold"), render: (r) => desk.figure(r.threshold, { key: "recommendations.threshold" }) },
				],
				m.recommendations || [],
				{ empty: __("No recommendations: every figure is within its levels") }
			),
			"recommendations"
		),
	].join("");
};
