"""Meta-monitoring endpoints: the monitor's own status, and a heartbeat for outside uptime checkers."""

from __future__ import annotations

import hmac
from typing import Any

import frappe
from frappe import _

from verenigingen_perf.api import arguments, begin_api_call
from verenigingen_perf.install import READER_ROLES
from verenigingen_perf.utils.performance import monitoring
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.schema import SETTINGS

# hours of sample history an answer may ask for
MAX_HISTORY_HOURS = 168
_TOKEN_FIELD = "heartbeat_token"
_TOKEN_MAX_CHARS = 200


@frappe.whitelist(methods=["GET", "POST"])
def monitoring_status(hours: Any = 24) -> dict[str, Any]:
	"""The monitor's own signals now, with their levels, and their history (samples of the last
	`hours`, 1 to 168)."""
	begin_api_call(*READER_ROLES)
	return monitoring.status(get_config(), arguments.whole_number(hours, "hours", 1, MAX_HISTORY_HOURS))


@frappe.whitelist(allow_guest=True, methods=["GET"])
def heartbeat(token: Any = None) -> dict[str, Any]:
	"""For an outside uptime checker: HTTP 200 while capture, drain and rollup are fresh, 503 naming
	the stale parts otherwise; never a performance figure. Without a login, only with the token set
	in Performance Settings (no token set: closed to visitors)."""
	frappe.flags.disable_traceback = True
	if frappe.session.user == "Guest" and not _valid_token(token):
		frappe.throw(_("heartbeat: a valid token is required"), frappe.PermissionError)
	if frappe.session.user != "Guest":
		frappe.only_for(list(READER_ROLES))
	stale = monitoring.heartbeat_verdict(get_config())
	if stale:
		frappe.local.response.http_status_code = 503
		return {"status": "stale", "stale": stale}
	return {"status": "ok"}


def _valid_token(token: Any) -> bool:
	if not isinstance(token, str) or not token or len(token) > _TOKEN_MAX_CHARS:
		return False
	from frappe.utils.password import get_decrypted_password

	expected = get_decrypted_password(SETTINGS, SETTINGS, _TOKEN_FIELD, raise_exception=False)
	return bool(expected) and hmac.compare_digest(expected.encode(), token.encode())
