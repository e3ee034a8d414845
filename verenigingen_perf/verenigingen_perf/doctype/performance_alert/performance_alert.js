// Copyright (c) 2026, Verenigingen and contributors
// For license information, please see license.txt

// Every delivery attempt of this alert's notifications, on the alert itself.
frappe.ui.form.on("Performance Alert", {
	refresh(frm) {
		frappe.db
			.get_list("Performance Alert Delivery", {
				filters: [["alerts", "like", `%${frm.doc.name}%`]],
				fields: ["channel", "notification_status", "attempt", "status", "response_code", "error", "sent_at", "creation"],
				order_by: "creation asc",
				limit: 100,
			})
			.then((rows) => {
				if (!rows.length) return;
				const cells = rows
					.map(
						(r) =>
							`<tr><td>${frappe.utils.escape_html(r.channel)}</td><td>${r.notification_status}</td>` +
							`<td>${r.attempt}</td><td>${r.status}</td><td>${r.response_code || ""}</td>` +
							`<td>${frappe.utils.escape_html(r.error || "")}</td><td>${r.sent_at || r.creation}</td></tr>`
					)
					.join("");
				frm.dashboard.add_section(
					`<table class="table table-bordered table-sm"><thead><tr><th>${__("Channel")}</th>` +
						`<th>${__("Notifies")}</th><th>${__("Attempt")}</th><th>${__("Status")}</th>` +
						`<th>${__("Response")}</th><th>${__("Error")}</th><th>${__("When")}</th></tr></thead>` +
						`<tbody>${cells}</tbody></table>`,
					__("Deliveries")
				);
			});
	},
});
