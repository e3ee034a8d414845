"""The site's real WSGI application, served on loopback for the HTTP tests and the demo."""

import logging


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
		application,
		use_reloader=False,
		use_debugger=False,
		use_evalex=False,
		threaded=threaded,
	)
