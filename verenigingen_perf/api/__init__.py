"""Whitelisted entry points of the app: each parses its input, checks permission and delegates."""

import frappe

# requests to the app's own endpoints (the method paths start with the package name)
_OWN_API_PREFIXES = tuple(f"/api{version}/method/verenigingen_perf." for version in ("", "/v1", "/v2"))


def begin_api_call(*roles: str) -> None:
	"""Common start of every endpoint: error responses carry the message, never a stack trace, and
	only the given roles (or Administrator) get any further."""
	frappe.flags.disable_traceback = True
	frappe.only_for(list(roles))


def before_request() -> None:
	"""Hook: no error answer of the app's endpoints carries a stack trace, also when the framework
	itself refuses the call before the endpoint runs (a Guest calling a method not open to Guests)."""
	request = getattr(frappe.local, "request", None)
	if request is not None and request.path.startswith(_OWN_API_PREFIXES):
		frappe.flags.disable_traceback = True
