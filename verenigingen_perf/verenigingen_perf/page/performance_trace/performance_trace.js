// One trace as a waterfall: verenigingen_perf.api.desk.trace_detail, opened with ?trace_id=<id> (the
// X-Vperf-Trace response header) or from a detail row's link.
frappe.pages["performance-trace"].on_page_load = function (wrapper) {
	const page = frappe.ui.make_app_page({
		parent: wrapper,
		title: __("Performance Trace"),
		single_column: true,
	});
	wrapper.trace_view = new PerformanceTraceView(page);
};

frappe.pages["performance-trace"].on_page_show = function (wrapper) {
	wrapper.trace_view.show(verenigingen_perf.desk.route_option("trace_id"));
};

class PerformanceTraceView {
	constructor(page) {
		this.page = page;
		this.desk = verenigingen_perf.desk;
		this.$body = $('<div class="vperf-trace"></div>').appendTo(page.main);
		this.trace_field = page.add_field({
			fieldname: "trace_id",
			label: __("Trace id"),
			fieldtype: "Data",
			change: () => {
				const value = (this.trace_field.get_value() || "").trim();
				if (value && value !== this.trace_id) this.show(value);
			},
		});
		// a trace id has up to 32 digits: a third of the page form's row shows them all (a sixth cut them)
		$(this.trace_field.wrapper).removeClass("col-md-2").addClass("col-md-4");
		this.desk.bind_links(this.$body);
	}

	show(trace_id) {
		this.trace_id = trace_id;
		this.page.clear_indicator();
		if (!trace_id) {
			this.set_title(__("Performance Trace"));
			this.$body.html(
				`<div class="text-muted">${this.desk.escape(
					__("Enter a trace id: the X-Vperf-Trace header of a response, or open one from an operation's slow calls.")
				)}</div>`
			);
			return Promise.resolve();
		}
		this.trace_field.set_value(trace_id);
		this.set_title(__("Trace {0}", [trace_id]));
		return frappe
			.xcall(`${this.desk.API}.desk.trace_detail`, { trace_id })
			.then((data) => this.render(data))
			.catch(() => {
				// frappe.xcall has shown the server's message (no permission, not a trace id)
				this.page.set_indicator(__("Not loaded"), "red");
				this.$body.empty();
			});
	}

	// what the user typed is shown as it is (never read as HTML), in the page head and the browser's tab
	set_title(title) {
		this.page.set_title(this.desk.escape(title), null, false, title, title);
	}

	render(data) {
		const d = this.desk;
		if (!data.found) {
			this.page.set_indicator(__("Not found"), "gray");
			this.$body.html(
				`<div class="text-muted vperf-empty" data-section="not-found">${d.escape(
					__("No span of trace {0} is stored: it may still wait in the buffer (drained every minute), have been sampled out, or be older than the detail retention.", [data.trace_id])
				)}</div>`
			);
			return;
		}
		const total = Math.max(data.total_ms, 1e-3);
		const rows = data.spans
			.map((s) => {
				const left = (100 * s.offset_ms) / total;
				const width = Math.max((100 * s.duration_ms) / total, 0.3);
				const colour = s.status === "error" ? "var(--red-500)" : s.status === "client_error" ? "var(--orange-500)" : "var(--blue-500)";
				return `<tr class="vperf-span" data-span="${d.escape(s.span_id)}" data-depth="${s.depth}">
					<td style="padding-left: ${0.5 + s.depth * 1.25}rem">${d.operation_link(s.operation)}
						<span class="text-muted small">${d.escape(s.operation_type)}${s.orphan ? " · " + d.escape(__("parent not stored")) : ""}</span></td>
					<td style="width: 40%"><div style="position: relative; height: 14px; background: var(--gray-100)">
						<div title="${d.escape(__("starts {0} after the first, lasts {1}", [d.duration(s.offset_ms), d.duration(s.duration_ms)]))}" style="position: absolute; left: ${left}%; width: ${width}%; height: 100%; background: ${colour}"></div>
					</div></td>
					<td>${d.figure(s.duration_ms, { key: "span.duration_ms", unit: "ms" })}</td>
					<td>${d.figure(s.query_count, { key: "span.query_count" })}</td>
					<td>${d.figure(s.db_time_ms, { unit: "ms" })}</td>
					<td>${d.escape(s.status + (s.http_status ? ` ${s.http_status}` : ""))}${s.error ? `<div class="text-danger small">${d.escape(s.error)}</div>` : ""}</td>
				</tr>`;
			})
			.join("");
		this.$body.html(
			[
				`<div class="text-muted small mb-3 vperf-trace-summary" data-started-at="${d.escape(data.started_at)}" data-generated-at="${d.escape(data.generated_at)}">${d.escape(
					__("Started {0}; {1} spans, {2} statements, {3} from the first start to the last end", [
						d.datetime(data.started_at),
						data.span_count,
						data.statements,
						d.duration(data.total_ms),
					])
				)}${data.truncated ? " " + d.escape(__("(the first {0} spans only)", [data.max_spans])) : ""}</div>`,
				d.section(
					__("Spans"),
					`<table class="table table-bordered table-sm vperf-table vperf-waterfall"><thead><tr>
						<th>${d.escape(__("Operation"))}</th><th>${d.escape(__("Timeline"))}</th><th>${d.escape(__("Duration"))}</th>
						<th>${d.escape(__("Statements"))}</th><th>${d.escape(__("SQL time"))}</th><th>${d.escape(__("Status"))}</th>
					</tr></thead><tbody>${rows}</tbody></table>`,
					"spans"
				),
			].join("")
		);
	}
}
