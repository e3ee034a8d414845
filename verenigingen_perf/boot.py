"""Hook: what the desk's scripts need at load (public/js/verenigingen_perf.js)."""

from __future__ import annotations

from typing import Any

import frappe

from verenigingen_perf.install import READER_ROLES


def boot_session(bootinfo: Any) -> None:
	"""Only users who may read performance data learn the member doctype (the form action's target);
	for everyone else the desk adds nothing."""
	from verenigingen_perf.utils.performance.config import get_config

	user = frappe.session.user
	if user == "Guest" or (user != "Administrator" and not set(READER_ROLES) & set(frappe.get_roles(user))):
		return
	bootinfo.verenigingen_perf = {"member_doctype": get_config().analysis.member_doctype}
