"""The Prometheus/OpenMetrics endpoint and its token.

`metrics` answers the exposition (text written by prometheus_client, see utils/performance/export/) to
System Manager and Performance Manager (a session, or Frappe's `Authorization: token key:secret` of such
a user), and to a scraper presenting the metrics token of Performance Settings as `Authorization:
Bearer <token>`: the request then runs as the app's metrics user (schema.METRICS_USER), which has the
reader role only, on the metrics endpoint only. Guest and every other user are refused; a wrong token
is refused by the framework (an Authorization header that logs nobody in is an authentication error).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

import frappe
from frappe import _
from frappe.permissions import ALL_USER_ROLE, GUEST_ROLE, SYSTEM_USER_ROLE
from werkzeug.wrappers import Response

from verenigingen_perf.api import begin_api_call
from verenigingen_perf.install import PERFORMANCE_MANAGER, READER_ROLES
from verenigingen_perf.utils.performance.config import get_config
from verenigingen_perf.utils.performance.export import prometheus
from verenigingen_perf.utils.performance.schema import METRICS_USER, SETTINGS

METRICS_METHOD = "verenigingen_perf.api.export.metrics"
METRICS_PATHS = tuple(f"/api{version}/method/{METRICS_METHOD}" for version in ("", "/v1", "/v2"))
TOKEN_FIELD = "metrics_token"
# a presented token longer than this is refused unread (a generated one has 43 characters)
_TOKEN_MAX_CHARS = 200
# random bytes of a generated token (secrets.token_urlsafe: 256 bits)
_TOKEN_BYTES = 32
# what the metrics user may hold: the reader role, and the roles Frappe gives every desk user
_TOKEN_USER_ROLES = {PERFORMANCE_MANAGER, GUEST_ROLE, ALL_USER_ROLE, SYSTEM_USER_ROLE}


def authenticate() -> None:
	"""Auth hook (hooks.py `auth_hooks`, run for every request: cheap unless it is a metrics scrape
	with a bearer token): a valid metrics token logs the request in, on the metrics endpoint only."""
	request = getattr(frappe.local, "request", None)
	if request is None or request.path not in METRICS_PATHS:
		return
	if frappe.session.user not in ("", "Guest"):
		return
	scheme, _space, credentials = (request.headers.get("Authorization") or "").partition(" ")
	if scheme.lower() != "bearer" or not valid_token(credentials.strip()) or not token_user_is_least():
		return
	frappe.set_user(METRICS_USER)


def token_user_is_least() -> bool:
	"""The metrics user exists, is enabled and holds the reader role and nothing more (an
	administrator who gave it another role, or disabled it, disabled the token)."""
	if not frappe.db.get_value("User", METRICS_USER, "enabled"):
		return False
	roles = set(frappe.get_roles(METRICS_USER))
	return PERFORMANCE_MANAGER in roles and roles <= _TOKEN_USER_ROLES


def valid_token(token: Any) -> bool:
	"""The metrics token of Performance Settings, compared in constant time (none set: no token is)."""
	if not isinstance(token, str) or not token or len(token) > _TOKEN_MAX_CHARS:
		return False
	from frappe.utils.password import get_decrypted_password

	expected = get_decrypted_password(SETTINGS, SETTINGS, TOKEN_FIELD, raise_exception=False)
	return bool(expected) and hmac.compare_digest(expected.encode(), token.encode())


@frappe.whitelist(methods=["GET"])
def metrics() -> Response:
	"""The exposition: OpenMetrics when the scraper asks for it (Accept), else Prometheus text."""
	frappe.flags.disable_traceback = True
	frappe.only_for(list(READER_ROLES))
	snapshot = prometheus.snapshot(get_config())
	body, content_type = prometheus.render(snapshot, frappe.get_request_header("Accept"))
	return Response(body, status=200, content_type=content_type)


@frappe.whitelist(methods=["POST"])
def rotate_metrics_token() -> dict[str, str]:
	"""A new metrics token (System Manager): the old one stops working at once; the new one is in
	this answer only (stored encrypted, never shown again)."""
	begin_api_call("System Manager")
	from frappe.utils.password import set_encrypted_password

	token = secrets.token_urlsafe(_TOKEN_BYTES)
	set_encrypted_password(SETTINGS, SETTINGS, token, TOKEN_FIELD)
	# the form keeps the usual mask, so saving it later keeps the token
	frappe.db.set_single_value(SETTINGS, TOKEN_FIELD, "*" * len(token))
	return {
		"token": token,
		"message": _("The new metrics token is shown this once: put it in the scrape configuration now."),
	}
