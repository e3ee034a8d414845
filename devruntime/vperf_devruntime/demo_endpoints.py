"""Endpoints the demo drives over HTTP (not part of the app). One of them has an N+1 pattern on purpose."""

import frappe


@frappe.whitelist()
def member_chapters(member: str) -> list[str]:
	"""The titles of a member's chapters, one query per membership: the N+1 the monitoring should find."""
	doc = frappe.get_doc("Member", member)
	doc.check_permission("read")
	return [frappe.db.get_value("Chapter", row.chapter, "chapter_name") for row in doc.memberships]


@frappe.whitelist()
def member_chapters_batched(member: str) -> list[str]:
	"""The same answer in two queries."""
	doc = frappe.get_doc("Member", member)
	doc.check_permission("read")
	names = [row.chapter for row in doc.memberships]
	titles = dict(
		frappe.get_all(
			"Chapter", filters={"name": ("in", names)}, fields=["name", "chapter_name"], as_list=True
		)
	)
	return [titles.get(name) for name in names]
