"""A member doctype with linked records, for the demo and the tests (part of the test kit: the app
never uses it at run time).

Member: a person (faker names), a primary chapter (Link) and a child table of chapter memberships,
each a Link to a Chapter. Chapters show their title in links, so the desk's form loader fetches one
title per linked chapter: a real N+1 pattern that grows with the number of memberships.

The demo uses the names a `verenigingen` site would (`Member`, `Chapter`); the tests use their own,
clearly named set (`Vperf Test Member`, ...), which they create and remove again, so they never touch
a real `verenigingen` site's doctypes and leave nothing behind.

Works on the dev runtime's site and on a bench site (plain Frappe calls; custom doctypes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import frappe


@dataclass(frozen=True)
class MemberDoctypes:
	member: str
	chapter: str
	membership: str
	reader_role: str

	def permissions(self) -> list[dict[str, Any]]:
		return [
			{"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1},
			{"role": self.reader_role, "read": 1, "write": 1, "create": 1},
		]


DEMO = MemberDoctypes("Member", "Chapter", "Member Chapter Membership", "Member Manager")
TEST = MemberDoctypes(
	"Vperf Test Member", "Vperf Test Chapter", "Vperf Test Membership", "Vperf Test Member Reader"
)


def _doctype(names: MemberDoctypes, name: str, fields: list[dict[str, Any]], **extra: Any) -> None:
	if frappe.db.exists("DocType", name):
		return
	frappe.get_doc(
		{
			"doctype": "DocType",
			"name": name,
			"module": "Custom",
			"custom": 1,
			"fields": fields,
			"permissions": [] if extra.get("istable") else names.permissions(),
			**extra,
		}
	).insert(ignore_permissions=True)


def ensure_member_doctypes(names: MemberDoctypes = DEMO) -> MemberDoctypes:
	"""Create the role and the three doctypes if they are not there yet."""
	if not frappe.db.exists("Role", names.reader_role):
		frappe.get_doc({"doctype": "Role", "role_name": names.reader_role, "desk_access": 1}).insert(
			ignore_permissions=True
		)
	_doctype(
		names,
		names.chapter,
		[
			{"fieldname": "chapter_name", "fieldtype": "Data", "label": "Chapter name", "reqd": 1},
			{"fieldname": "region", "fieldtype": "Data", "label": "Region"},
		],
		autoname="hash",
		title_field="chapter_name",
		show_title_field_in_link=1,
	)
	_doctype(
		names,
		names.membership,
		[
			{
				"fieldname": "chapter",
				"fieldtype": "Link",
				"options": names.chapter,
				"label": "Chapter",
				"in_list_view": 1,
			},
			{"fieldname": "since", "fieldtype": "Date", "label": "Since", "in_list_view": 1},
		],
		istable=1,
		autoname="hash",
	)
	_doctype(
		names,
		names.member,
		[
			{"fieldname": "full_name", "fieldtype": "Data", "label": "Full name", "reqd": 1},
			{"fieldname": "email", "fieldtype": "Data", "label": "Email", "options": "Email"},
			{"fieldname": "city", "fieldtype": "Data", "label": "City"},
			{
				"fieldname": "primary_chapter",
				"fieldtype": "Link",
				"options": names.chapter,
				"label": "Primary chapter",
			},
			{
				"fieldname": "memberships",
				"fieldtype": "Table",
				"options": names.membership,
				"label": "Memberships",
			},
		],
		autoname="hash",
		title_field="full_name",
	)
	frappe.db.commit()
	return names


def remove_member_doctypes(names: MemberDoctypes) -> None:
	"""Remove the records, the doctypes (and their tables) and the role: nothing is left behind."""
	for doctype in (names.member, names.membership, names.chapter):
		if frappe.db.exists("DocType", doctype):
			frappe.db.delete(doctype)
			frappe.delete_doc("DocType", doctype, ignore_permissions=True, force=True)
		frappe.db.sql_ddl(f"drop table if exists `tab{doctype}`")
	for doctype in ("Has Role", "Custom DocPerm"):
		frappe.db.delete(doctype, {"role": names.reader_role})
	if frappe.db.exists("Role", names.reader_role):
		frappe.delete_doc("Role", names.reader_role, ignore_permissions=True, force=True)
	# the framework keeps a copy of what it deleted (Deleted Document) and a comment on it: the
	# tests' own doctypes, records and role leave neither behind
	ours = [names.member, names.membership, names.chapter]
	frappe.db.delete("Deleted Document", {"deleted_doctype": ("in", ours)})
	frappe.db.delete("Comment", {"reference_doctype": ("in", ours)})
	forget_deleted("DocType", ours)
	forget_deleted("Role", [names.reader_role])
	frappe.db.commit()


def make_chapters(names: MemberDoctypes, count: int, fake: Any) -> list[str]:
	created = []
	for _ in range(count):
		doc = frappe.get_doc(
			{"doctype": names.chapter, "chapter_name": f"{fake.city()} chapter", "region": fake.city()}
		).insert(ignore_permissions=True)
		created.append(doc.name)
	return created


def make_member(
	names: MemberDoctypes, fake: Any, chapters: list[str], memberships: int, rng: random.Random | None = None
) -> str:
	"""A member of `memberships` distinct chapters (the first is also the primary chapter)."""
	rng = rng or random.Random()
	chosen = rng.sample(chapters, memberships) if memberships else []
	doc = frappe.get_doc(
		{
			"doctype": names.member,
			"full_name": fake.name(),
			"email": fake.email(),
			"city": fake.city(),
			"primary_chapter": chosen[0] if chosen else None,
			"memberships": [
				{"chapter": chapter, "since": fake.date_between(start_date="-10y", end_date="today")}
				for chapter in chosen
			],
		}
	).insert(ignore_permissions=True)
	return doc.name


def forget_deleted(doctype: str, names: list[str]) -> None:
	"""What the framework keeps of deleted test records: their copies (Deleted Document) and the
	"Deleted" feed comments (which name the record only in their subject)."""
	if not names:
		return
	frappe.db.delete("Deleted Document", {"deleted_doctype": doctype, "deleted_name": ("in", names)})
	frappe.db.delete(
		"Comment",
		{
			"comment_type": "Deleted",
			"reference_doctype": doctype,
			"subject": ("in", [f"{doctype} {name}" for name in names]),
		},
	)
