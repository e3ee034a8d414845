"""What a measurement is filed under: its operation name and its type.

The names are bounded by the site's code and content, never by what a visitor sends, and they never
carry a record name, an e-mail address or other personal data:

- `/api/method/<method>` (v1 and v2): the method's dotted path, type `api`. A request that failed and
  whose method is not a whitelisted function (nor an API server script) is `(unknown method)`.
- `/api/resource/<doctype>[/<name>]`, `/api/v2/document/<doctype>[/<name>[/method/<m>|/copy]]`,
  `/api/v2/method/<doctype>/<method>`, `/api/v2/doctype/<doctype>/(meta|count)`: the verb and the
  route with the doctype and method kept and the record name replaced by `{name}`, type `api`; a
  failed document method call is filed under `{method}`, and a failed request for a doctype that
  does not exist is `(not found)`.
- `/app` and everything under it: `GET /app`, type `page` (the server renders the same desk whatever
  the route; the route is the browser's business).
- Every other path: the verb and its first segment (`GET /blog/*` for deeper paths), type `page`;
  such a request that fails (HTTP 4xx or 5xx) is `(failed page)`, since its path is the visitor's.
- Any request answered 404 is `(not found)`; any other unknown `/api/` route is `(not found)` too.
- Verbs outside the standard set are `OTHER`.
- Background jobs: the job's method; a scheduled job run through Frappe's `run_scheduled_job`
  wrapper is filed under the job it runs.

`clean_name` then bounds every name (Unicode NFC, no control characters, whitespace collapsed, at
most 140 characters) and keeps the rollup's reserved names for the rollup.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from dataclasses import dataclass

from verenigingen_perf.utils.performance.schema import (
	API,
	FAILED_PAGE_OPERATION,
	NOT_FOUND_OPERATION,
	PAGE,
	RESERVED_OPERATIONS,
	UNKNOWN_METHOD_OPERATION,
)

# Performance Metric's operation column
NAME_MAX_CHARS = 140
_VERBS = frozenset(("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"))
# what Frappe accepts as a doctype name
_DOCTYPE = re.compile(r"^[A-Za-z][A-Za-z0-9 _-]{0,60}$")
# a method's dotted path, or a handler shorthand such as `upload_file`
_METHOD = re.compile(r"^[A-Za-z_][\w.]{0,139}$")
_PAGE_SEGMENT = re.compile(r"^[\w.~-]{1,60}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SPACE = re.compile(r"\s+")
_SCHEDULED_JOB_WRAPPER = ".scheduled_job_type.run_scheduled_job"
_API = re.compile(r"^/api(?:/v(?P<version>[12]))?(?P<rest>/.*)?$")


@dataclass(frozen=True)
class Route:
	"""How a request path is filed: under `name` when it succeeds; `method` is the whitelisted
	method to check when it fails; a failed request is filed under `on_error` when that is set."""

	operation_type: str
	name: str
	method: str | None = None
	on_error: str | None = None
	doctype: str | None = None


def request_operation(verb: str, path: str, http_status: int) -> tuple[str, str]:
	"""(operation, type) of a finished HTTP request."""
	route = route_for(verb, path)
	if http_status == 404:
		return NOT_FOUND_OPERATION, route.operation_type
	if http_status >= 400:
		if route.operation_type == PAGE and not route.name.endswith(" /app"):
			return FAILED_PAGE_OPERATION, PAGE
		if route.method is not None and not is_known_method(route.method):
			return UNKNOWN_METHOD_OPERATION, API
		# a refused request for a doctype that does not exist (Guests get 403, not 404)
		if route.doctype is not None and not is_known_doctype(route.doctype):
			return NOT_FOUND_OPERATION, route.operation_type
		if route.on_error is not None:
			return route.on_error, route.operation_type
	return route.name, route.operation_type


@functools.lru_cache(maxsize=4096)
def route_for(verb: str, path: str) -> Route:
	"""The status-independent part of the naming (pure; cached per verb and path)."""
	verb = verb.upper() if verb.upper() in _VERBS else "OTHER"
	if match := _API.match(path):
		return _api_route(verb, match.group("version"), (match.group("rest") or "").strip("/"))
	if path == "/app" or path.startswith("/app/"):
		return Route(PAGE, f"{verb} /app")
	segments = [segment for segment in path.split("/") if segment]
	if not segments:
		return Route(PAGE, f"{verb} /")
	first = segments[0] if _PAGE_SEGMENT.match(segments[0]) else "*"
	return Route(PAGE, f"{verb} /{first}{'/*' if len(segments) > 1 else ''}")


def _api_route(verb: str, version: str | None, rest: str) -> Route:
	parts = rest.split("/") if rest else []
	if not parts:
		return Route(API, NOT_FOUND_OPERATION)
	kind, args = parts[0], parts[1:]
	if kind == "method" and len(args) == 1 and _METHOD.match(args[0]):
		return Route(API, args[0], method=args[0])
	if kind == "method" and version == "2" and len(args) == 2 and _DOCTYPE.match(args[0]):
		base = f"{verb} /api/method/{args[0]}"
		if _METHOD.match(args[1]):
			return Route(API, f"{base}/{args[1]}", on_error=f"{base}/{{method}}", doctype=args[0])
		return Route(API, f"{base}/{{method}}", doctype=args[0])
	if kind in ("resource", "document") and args and _DOCTYPE.match(args[0]):
		return _document_route(verb, kind, args)
	if kind == "doctype" and len(args) == 2 and _DOCTYPE.match(args[0]) and args[1] in ("meta", "count"):
		return Route(API, f"{verb} /api/doctype/{args[0]}/{args[1]}", doctype=args[0])
	return Route(API, NOT_FOUND_OPERATION)


def _document_route(verb: str, kind: str, args: list[str]) -> Route:
	doctype = args[0]
	base = f"{verb} /api/{kind}/{doctype}"
	if len(args) == 1:
		return Route(API, base, doctype=doctype)
	# a record name may itself contain slashes: what follows it is only recognised at the end
	if len(args) >= 4 and args[-2] == "method":
		method_base = f"{base}/{{name}}/method"
		if _METHOD.match(args[-1]):
			return Route(
				API, f"{method_base}/{args[-1]}", on_error=f"{method_base}/{{method}}", doctype=doctype
			)
		return Route(API, f"{method_base}/{{method}}", doctype=doctype)
	if len(args) >= 3 and args[-1] == "copy":
		return Route(API, f"{base}/{{name}}/copy", doctype=doctype)
	return Route(API, f"{base}/{{name}}", doctype=doctype)


def is_known_method(method: str) -> bool:
	"""Whether `method` names a whitelisted function (or an API server script) on this site.

	Read without importing anything: the framework has already imported a method it could resolve
	while it handled the request, so a module that is not loaded means no such method."""
	import frappe

	overrides = frappe.get_hooks("override_whitelisted_methods") or {}
	target = (overrides.get(method) or [method])[-1]
	if "." in target:
		module_name, _dot, attribute = target.rpartition(".")
		function = getattr(sys.modules.get(module_name), attribute, None)
	else:
		function = getattr(sys.modules.get("frappe.handler"), target, None)
	if function is not None and function in frappe.whitelisted:
		return True
	return _is_api_server_script(target)


def is_known_doctype(doctype: str) -> bool:
	"""Whether the doctype exists (asked only for failed requests: one indexed lookup)."""
	import frappe

	return bool(frappe.db.exists("DocType", doctype))


def _is_api_server_script(method: str) -> bool:
	from frappe.core.doctype.server_script.server_script_utils import get_server_script_map

	return method in (get_server_script_map().get("_api") or {})


_PAGE_NAME = re.compile(r"^(?:[A-Z]+) /(?!api/)")


def is_page_name(operation: str) -> bool:
	"""Whether an operation name is that of a page (`GET /app`, `GET /blog/*`), not of an API call:
	how measurements of an earlier version, which had one type for every request, are told apart."""
	return bool(_PAGE_NAME.match(operation))


def job_operation(method: str | None, kwargs: dict | None) -> str:
	"""A job's operation: its method, or for Frappe's scheduled-job wrapper the job it runs."""
	if method and method.endswith(_SCHEDULED_JOB_WRAPPER):
		job_type = (kwargs or {}).get("job_type")
		if isinstance(job_type, str) and job_type:
			return job_type
	return method or "unknown job"


def clean_name(value: object) -> str:
	"""Any operation name made safe to store and to group: NFC, no control characters, whitespace
	collapsed and trimmed, at most NAME_MAX_CHARS characters, never one of the rollup's own names."""
	text = value if isinstance(value, str) else str(value)
	text = unicodedata.normalize("NFC", text)
	text = _SPACE.sub(" ", _CONTROL.sub(" ", text)).strip() or "(unnamed)"
	if text in RESERVED_OPERATIONS:
		text = f"{text} (measured)"
	if len(text) > NAME_MAX_CHARS:
		text = text[: NAME_MAX_CHARS - 3].rstrip() + "..."
	return text
