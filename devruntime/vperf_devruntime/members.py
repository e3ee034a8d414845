"""A "Member" doctype with linked records, for the demo and the tests only (never shipped by the app).

Member: a person (faker names), a primary chapter (Link) and a child table of chapter memberships,
each a Link to a Chapter. Chapters show their title in links, so the desk's form loader fetches one
title per linked chapter: a real N+1 pattern that grows with the number of memberships.

Works on the dev runtime's site and on a bench site (plain Frappe calls; custom doctypes).
"""

from __future__ import annotations

import random
from typing import Any

import frappe

MEMBER = "Member"
CHAPTER = "Chapter"
MEMBERSHIP = "Member Chapter Membership"
MEMBER_MANAGER = "Member Manager"
_PERMISSIONS = [
	{"role": "System Manager", "read": 1, "write": 1, "create": 1, "delete": 1},
	{"role": MEMBER_MANAGER, "read": 1, "write": 1, "create": 1},
]


def _doctype(name: str, fields: list[dict[str, Any]], **extra: Any) -> None:
	if frappe.db.exists("DocType", name):
		return
	frappe.get_doc(
		{
			"doctype": "DocType",
			"name": name,
			"module": "Custom",
			"custom": 1,
			"fields": fields,
			"permissions": [] if extra.get("istable") else _PERMISSIONS,
			**extra,
		}
	).insert(ignore_permissions=True)


def ensure_member_doctypes() -> None:
	"""Create the role and the three doctypes if they are not there yet."""
	if not frappe.db.exists("Role", MEMBER_MANAGER):
		frappe.get_doc({"doctype": "Role", "role_name": MEMBER_MANAGER, "desk_access": 1}).insert(
			ignore_permissions=True
		)
	_doctype(
		CHAPTER,
		[
			{"fieldname": "chapter_name", "fieldtype": "Data", "label": "Chapter name", "reqd": 1},
			{"fieldname": "region", "fieldtype": "Data", "label": "Region"},
		],
		autoname="hash",
		title_field="chapter_name",
		show_title_field_in_link=1,
	)
	_doctype(
		MEMBERSHIP,
		[
			{
				"fieldname": "chapter",
				"fieldtype": "Link",
				"options": CHAPTER,
				"label": "Chapter",
				"in_list_view": 1,
			},
			{"fieldname": "since", "fieldtype": "Date", "label": "Since", "in_list_view": 1},
		],
		istable=1,
		autoname="hash",
	)
	_doctype(
		MEMBER,
		[
			{"fieldname": "full_name", "fieldtype": "Data", "label": "Full name", "reqd": 1},
			{"fieldname": "email", "fieldtype": "Data", "label": "Email", "options": "Email"},
			{"fieldname": "city", "fieldtype": "Data", "label": "City"},
			{
				"fieldname": "primary_chapter",
				"fieldtype": "Link",
				"options": CHAPTER,
				"label": "Primary chapter",
			},
			{"fieldname": "memberships", "fieldtype": "Table", "options": MEMBERSHIP, "label": "Memberships"},
		],
		autoname="hash",
		title_field="full_name",
	)
	frappe.db.commit()


def make_chapters(count: int, fake: Any) -> list[str]:
	names = []
	for _ in range(count):
		doc = frappe.get_doc(
			{"doctype": CHAPTER, "chapter_name": f"{fake.city()} chapter", "region": fake.city()}
		).insert(ignore_permissions=True)
		names.append(doc.name)
	return names


def make_member(fake: Any, chapters: list[str], memberships: int, rng: random.Random | None = None) -> str:
	"""A member of `memberships` distinct chapters (the first is also the primary chapter)."""
	rng = rng or random.Random()
	chosen = rng.sample(chapters, memberships) if memberships else []
	doc = frappe.get_doc(
		{
			"doctype": MEMBER,
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
