"""Whitelisted entry points of the app: each parses its input, checks permission and delegates."""

import frappe


def begin_api_call(*roles: str) -> None:
	"""Common start of every endpoint: error responses carry the message, never a stack trace, and
	only the given roles (or Administrator) get any further."""
	frappe.flags.disable_traceback = True
	frappe.only_for(list(roles))
