// Copyright (c) 2026, Verenigingen and contributors
// For license information, please see license.txt

// Pinning after a deploy is what a release manager does: one button, a name, optionally operations.
frappe.listview_settings["Performance Baseline"] = {
	onload(listview) {
		if (!frappe.user.has_role(["System Manager", "Performance Manager"])) return;
		listview.page.add_inner_button(__("Pin baselines"), () => {
			frappe.prompt(
				[
					{
						fieldname: "name",
						fieldtype: "Data",
						label: __("Pin as (for example a release)"),
						reqd: 1,
					},
					{
						fieldname: "operations",
						fieldtype: "Small Text",
						label: __("Operations (one per line; empty: all)"),
					},
				],
				(values) => {
					const operations = (values.operations || "")
						.split("\n")
						.map((line) => line.trim())
						.filter(Boolean);
					frappe.call({
						method: "verenigingen_perf.api.detection.pin_baseline",
						args: { name: values.name, operations: operations.length ? operations : null },
						freeze: true,
						callback: (r) => {
							frappe.show_alert({
								message: __("Pinned {0}: {1} operations", [
									r.message.name,
									r.message.operations,
								]),
								indicator: "green",
							});
							listview.refresh();
						},
					});
				},
				__("Pin baselines"),
				__("Pin")
			);
		});
	},
};
