frappe.provide("frappe.dashboards.chart_sources");

frappe.dashboards.chart_sources["Performance Last 24 Hours"] = {
	method: "verenigingen_perf.api.desk.last_24_hours_chart",
	filters: [],
};
