"""The site's real WSGI application, served on loopback for the HTTP tests and the demo."""

import logging
import os
from collections.abc import Callable

from werkzeug.middleware.shared_data import SharedDataMiddleware

# defect: the framework's logo (its hooks' app_logo_url, shown on the login page and the desk's
# navbar) is not shipped; Frappe's framework logo, which is, stands in
MISSING_FILES = {"images/monoframe-logo.svg": "images/frappe-framework-logo.svg"}


class StaticFiles(SharedDataMiddleware):
	"""/assets and /files, as bench's nginx serves them (the framework's own dev server serves them
	from the working directory)."""

	def get_directory_loader(self, directory: str) -> Callable:
		load = super().get_directory_loader(directory)

		def loader(path: str | None):
			found = load(path)
			if found[1] is None and path:
				if path in MISSING_FILES:
					found = load(MISSING_FILES[path])
				elif "monoframe" in path:
					# defect: the framework names images monoframe-*.svg, the shipped files kept frappe-*
					found = load(path.replace("monoframe", "frappe"))
			return found

		return loader


def static_exports() -> list[tuple[str, str]]:
	"""Where each URL prefix is served from, first match first: the built bundles (<sites>/assets,
	with assets.json and monoframe/node_modules), each app's public/ (bench links
	sites/assets/<app> to it), and the site's public files."""
	import frappe

	exports = [("/assets", os.path.join(frappe.local.sites_path, "assets"))]
	for app in frappe.get_all_apps():
		public = os.path.join(frappe.get_app_path(app), "public")
		if os.path.isdir(public):
			exports.append((f"/assets/{app}", public))
	exports.append(("/files", frappe.get_site_path("public", "files")))
	return exports


def frappe_request_headers(app: Callable) -> Callable:
	"""defect: the framework reads X-Monoframe-* request headers (the CSRF token, ...); apps' own
	requests send Frappe's X-Frappe-* ones, which count the same here."""

	def application(environ: dict, start_response: Callable):
		for key in [k for k in environ if k.startswith("HTTP_X_FRAPPE_")]:
			environ.setdefault("HTTP_X_MONOFRAME_" + key.removeprefix("HTTP_X_FRAPPE_"), environ[key])
		return app(environ, start_response)

	return application


def serve(port: int, threaded: bool = True) -> None:
	import frappe
	from frappe.app import application
	from werkzeug.serving import run_simple

	frappe.init(force=True)  # applies the runtime fixes before the first request
	logging.getLogger("werkzeug").setLevel(logging.ERROR)
	# framework default is 0.0.0.0 with the interactive debugger on: loopback, no debugger here
	run_simple(
		"127.0.0.1",
		port,
		StaticFiles(frappe_request_headers(application), static_exports()),
		use_reloader=False,
		use_debugger=False,
		use_evalex=False,
		threaded=threaded,
	)
