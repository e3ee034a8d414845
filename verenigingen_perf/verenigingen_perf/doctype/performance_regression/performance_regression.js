// Copyright (c) 2026, Verenigingen and contributors
// For license information, please see license.txt

frappe.ui.form.on("Performance Regression", {
	refresh(frm) {
		if (frm.doc.status !== "open") return;
		if (!frappe.user.has_role(["System Manager", "Performance Manager"])) return;
		frm.add_custom_button(__("Acknowledge"), () => {
			frappe.prompt(
				[{ fieldname: "note", fieldtype: "Small Text", label: __("Note") }],
				(values) => {
					frappe.call({
						method: "verenigingen_perf.api.detection.acknowledge_regression",
						args: { name: frm.doc.name, note: values.note || "" },
						freeze: true,
						callback: () => frm.reload_doc(),
					});
				},
				__("Acknowledge regression"),
				__("Acknowledge")
			);
		});
	},
});
