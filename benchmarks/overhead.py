"""What the app costs a site end to end, against the alternatives an operator would pick.

	devruntime/run bench overhead --db mariadb      (--rounds 30 --seconds 5 --clients 4 by default)

Serves the dev site with gunicorn (2 sync workers, `--preload`, as bench runs it) five times at once,
each server set up differently, and drives each in turn, in interleaved rounds (the order shuffled
every round), with wrk (`--clients` connections) sending a fixed mix of real requests as a logged-in
System Manager (token authentication): a desk form load, a list, a whitelisted call, and a write.

Setups: `none` (the app's hooks absent), `none_b` (the same again: the A/A control, which shows how
much two identical setups differ), `app` (this app, sampling 1.0), `frappe_monitor` (Frappe's built-in
`monitor` on) and `otel` (OpenTelemetry's WSGI instrumentation with the SDK's batch span processor
exporting over OTLP/HTTP to a receiver in this process). Every round checks that each setup was in
effect: `app` answered with its trace header, `none` without, Frappe's monitor queued transactions,
and the receiver got OpenTelemetry spans (the batch span processor exports every 512 spans, several
times a round).

Per setup and round: requests per second, p50 and p99 latency (wrk), and the workers' own CPU time per
request (read from /proc). The last line is one JSON object: each setup's median throughput, its spread
(min and max over the rounds), latencies and CPU; `app_throughput_ratio`, `frappe_monitor_throughput_ratio`,
`otel_throughput_ratio` and `aa_throughput_ratio` (medians of the per-round ratios against `none`),
`app_p99_added_ms` and `app_cpu_ms_per_request_added` (app minus none).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import requests

from benchmarks import connect_site

APP = "verenigingen_perf"
TODOS = 200
SETUPS = ("none", "none_b", "app", "frappe_monitor", "otel")
OTEL_ENDPOINT_VARIABLE = "VPERF_BENCH_OTLP_ENDPOINT"


# --- the OpenTelemetry setup: gunicorn imports this module's application -----------------------------


def _otel_application():
	"""frappe.app.application wrapped in OpenTelemetry's WSGI middleware, spans exported in batches."""
	from frappe.app import application
	from opentelemetry import trace
	from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
	from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
	from opentelemetry.sdk.resources import Resource
	from opentelemetry.sdk.trace import TracerProvider
	from opentelemetry.sdk.trace.export import BatchSpanProcessor

	provider = TracerProvider(resource=Resource.create({"service.name": "frappe-bench"}))
	provider.add_span_processor(
		BatchSpanProcessor(OTLPSpanExporter(endpoint=os.environ[OTEL_ENDPOINT_VARIABLE]))
	)
	trace.set_tracer_provider(provider)
	return OpenTelemetryMiddleware(application)


if os.environ.get(OTEL_ENDPOINT_VARIABLE) and os.environ.get("VPERF_BENCH_OTEL_APP"):
	otel_application = _otel_application()


# --- a local OTLP/HTTP receiver ------------------------------------------------------------------------


@dataclass
class Receiver:
	requests: int = 0
	bytes: int = 0
	lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def otlp_receiver() -> Iterator[tuple[str, Receiver]]:
	received = Receiver()

	class Handler(BaseHTTPRequestHandler):
		def do_POST(self) -> None:
			body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
			with received.lock:
				received.requests += 1
				received.bytes += len(body)
			self.send_response(200)
			self.send_header("Content-Type", "application/x-protobuf")
			self.end_headers()

		def log_message(self, *args: object) -> None:
			pass

	server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
	thread = threading.Thread(target=server.serve_forever, daemon=True)
	thread.start()
	try:
		yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
	finally:
		server.shutdown()


# --- the servers -----------------------------------------------------------------------------------------


@dataclass
class Server:
	setup: str
	port: int
	process: subprocess.Popen

	def workers(self) -> list[psutil.Process]:
		return psutil.Process(self.process.pid).children()

	def cpu_s(self) -> float:
		return sum(sum(worker.cpu_times()[:2]) for worker in self.workers())


def start_server(setup: str, backend: str, otlp_endpoint: str, log_dir: Path) -> Server:
	from vperf_devruntime import services
	from vperf_devruntime import site as dev_site

	env = {**os.environ, **dev_site.site_env(backend)}
	app = "frappe.app:application"
	# every setup reads its hooks the same way (see the dev runtime's fixes); only `app` has the app's
	env["DEVRUNTIME_HIDDEN_APPS"] = "" if setup == "app" else APP
	if setup == "frappe_monitor":
		env["DEVRUNTIME_SITE_CONFIG_EXTRA"] = json.dumps({"monitor": 1})
	if setup == "otel":
		env.update({OTEL_ENDPOINT_VARIABLE: otlp_endpoint, "VPERF_BENCH_OTEL_APP": "1"})
		app = "benchmarks.overhead:otel_application"
	port = services.free_port()
	log = open(log_dir / f"{setup}.log", "ab")
	process = subprocess.Popen(
		[
			sys.executable,
			"-m",
			"gunicorn",
			"-b",
			f"127.0.0.1:{port}",
			"-w",
			"2",
			"-t",
			"120",
			"--preload",
			app,
		],
		env=env,
		stdout=log,
		stderr=subprocess.STDOUT,
		start_new_session=True,
	)
	deadline = time.monotonic() + 90
	while True:
		try:
			requests.get(f"http://127.0.0.1:{port}/api/method/ping", timeout=2)
			return Server(setup, port, process)
		except requests.ConnectionError:
			if process.poll() is not None or time.monotonic() > deadline:
				raise RuntimeError(f"the {setup} server did not start; see {log_dir / setup}.log") from None
			time.sleep(0.3)


def stop_server(server: Server) -> None:
	with contextlib.suppress(ProcessLookupError):
		os.killpg(server.process.pid, signal.SIGTERM)
	server.process.wait(timeout=30)


# --- the load ----------------------------------------------------------------------------------------------


def prepare_site(backend: str) -> tuple[str, list[str]]:
	"""An API token of Administrator and the ToDos the form loads open."""
	import frappe
	from frappe.core.doctype.user.user import generate_keys

	from verenigingen_perf.utils.performance import config

	connect_site(backend)
	frappe.set_user("Administrator")
	config.update_config({"sampling_rate": 1})
	secret = generate_keys("Administrator")["api_secret"]
	key = frappe.db.get_value("User", "Administrator", "api_key")
	names = frappe.get_all("ToDo", pluck="name", limit=TODOS)
	for i in range(TODOS - len(names)):
		names.append(frappe.get_doc({"doctype": "ToDo", "description": f"overhead bench {i}"}).insert().name)
	frappe.db.commit()
	return f"token {key}:{secret}", names


WRK_SCRIPT = """
local names = {%(names)s}
local auth = "%(auth)s"
math.randomseed(%(seed)d)
request = function()
	local headers = {["Authorization"] = auth, ["Accept"] = "application/json"}
	local pick = math.random(100)
	if pick <= 40 then
		return wrk.format("GET", "/api/method/frappe.desk.form.load.getdoc?doctype=ToDo&name=" .. names[math.random(#names)], headers)
	elseif pick <= 65 then
		return wrk.format("GET", "/api/resource/ToDo?limit_page_length=20&fields=%%5B%%22name%%22%%2C%%22description%%22%%2C%%22status%%22%%5D", headers)
	elseif pick <= 90 then
		return wrk.format("GET", "/api/method/frappe.auth.get_logged_user", headers)
	else
		headers["Content-Type"] = "application/x-www-form-urlencoded"
		return wrk.format("POST", "/api/method/frappe.client.insert", headers, "doc=%%7B%%22doctype%%22%%3A%%22ToDo%%22%%2C%%22description%%22%%3A%%22bench%%22%%7D")
	end
end
"""


def write_wrk_script(path: Path, auth: str, names: list[str], seed: int) -> None:
	path.write_text(
		WRK_SCRIPT % {"names": ", ".join(json.dumps(n) for n in names), "auth": auth, "seed": seed}
	)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, float]:
	def latency(label: str) -> float:
		match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
		if not match:
			raise RuntimeError(f"wrk printed no {label}% latency:\n{output}")
		return float(match.group(1)) * _UNITS[match.group(2)]

	requests_match = re.search(r"(\d+) requests in", output)
	rps_match = re.search(r"Requests/sec:\s+([\d.]+)", output)
	errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
	if not (requests_match and rps_match):
		raise RuntimeError(f"wrk printed no throughput:\n{output}")
	return {
		"requests": int(requests_match.group(1)),
		"rps": float(rps_match.group(1)),
		"p50_ms": latency("50"),
		"p99_ms": latency("99"),
		"errors": int(errors.group(1)) if errors else 0,
	}


def run_wrk(server: Server, script: Path, seconds: int, clients: int) -> dict[str, float]:
	output = subprocess.run(
		[
			"wrk",
			"-t",
			"2",
			"-c",
			str(clients),
			"-d",
			f"{seconds}s",
			"--latency",
			"-s",
			str(script),
			f"http://127.0.0.1:{server.port}",
		],
		capture_output=True,
		text=True,
		check=True,
	).stdout
	return parse_wrk(output)


# --- checking each setup is in effect ----------------------------------------------------------------


def in_effect(server: Server, auth: str, monitor_queued: int, spans_received: int) -> bool:
	"""Whether the setup answered as it must (after its round: the monitor and the spans checked on
	what the round sent)."""
	response = requests.get(
		f"http://127.0.0.1:{server.port}/api/method/frappe.auth.get_logged_user",
		headers={"Authorization": auth},
		timeout=30,
	)
	traced = "X-Vperf-Trace" in response.headers
	if server.setup == "app":
		return traced
	if traced:
		return False
	if server.setup == "frappe_monitor":
		return monitor_queued > 0
	if server.setup == "otel":
		return spans_received > 0
	return True


def monitor_queue_length() -> int:
	import frappe

	return int(frappe.cache.llen("monitor-transactions") or 0)


# --- the run ---------------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
	return statistics.median(values) if values else float("nan")


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__)
	parser.add_argument("--db", default="mariadb", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument("--rounds", type=int, default=30)
	parser.add_argument("--seconds", type=int, default=5)
	parser.add_argument("--clients", type=int, default=4)
	parser.add_argument("--seed", type=int, default=7)
	args = parser.parse_args()
	if not shutil.which("wrk"):
		sys.exit("wrk is missing: devruntime/setup.sh installs Debian's wrk")

	auth, names = prepare_site(args.db)
	rng = random.Random(args.seed)
	results: dict[str, list[dict[str, float]]] = {setup: [] for setup in SETUPS}
	checks: dict[str, list[bool]] = {setup: [] for setup in SETUPS}
	with tempfile.TemporaryDirectory() as work, otlp_receiver() as (endpoint, received):
		work_dir = Path(work)
		script = work_dir / "mix.lua"
		write_wrk_script(script, auth, names, args.seed)
		servers = {setup: start_server(setup, args.db, endpoint, work_dir) for setup in SETUPS}
		try:
			for server in servers.values():  # warm every worker (imports, caches)
				run_wrk(server, script, 2, args.clients)
			for _round in range(args.rounds):
				order = list(SETUPS)
				rng.shuffle(order)
				for setup in order:
					server = servers[setup]
					queued, spans = monitor_queue_length(), received.requests
					cpu_before = server.cpu_s()
					figures = run_wrk(server, script, args.seconds, args.clients)
					cpu = server.cpu_s() - cpu_before
					figures["cpu_ms_per_request"] = cpu * 1000 / max(figures["requests"], 1)
					results[setup].append(figures)
					checks[setup].append(
						in_effect(server, auth, monitor_queue_length() - queued, received.requests - spans)
					)
		finally:
			for server in servers.values():
				stop_server(server)
	print(json.dumps(summarise(results, checks, args, received)))


def summarise(results: dict, checks: dict, args: argparse.Namespace, received: Receiver) -> dict:
	def per_round_ratio(setup: str, key: str = "rps") -> float:
		return round(
			median([a[key] / b[key] for a, b in zip(results[setup], results["none"], strict=True)]), 4
		)

	figures: dict[str, object] = {
		"db": args.db,
		"rounds": args.rounds,
		"seconds_per_round": args.seconds,
		"clients": args.clients,
	}
	for setup in SETUPS:
		runs = results[setup]
		rps = [r["rps"] for r in runs]
		figures[f"{setup}_rps"] = round(median(rps), 1)
		figures[f"{setup}_rps_min_max"] = [round(min(rps), 1), round(max(rps), 1)]
		figures[f"{setup}_p50_ms"] = round(median([r["p50_ms"] for r in runs]), 2)
		figures[f"{setup}_p99_ms"] = round(median([r["p99_ms"] for r in runs]), 2)
		figures[f"{setup}_cpu_ms_per_request"] = round(median([r["cpu_ms_per_request"] for r in runs]), 3)
		figures[f"{setup}_errors"] = sum(r["errors"] for r in runs)
		figures[f"{setup}_in_effect_rounds"] = sum(checks[setup])
	figures["app_throughput_ratio"] = per_round_ratio("app")
	figures["frappe_monitor_throughput_ratio"] = per_round_ratio("frappe_monitor")
	figures["otel_throughput_ratio"] = per_round_ratio("otel")
	figures["aa_throughput_ratio"] = per_round_ratio("none_b")
	figures["app_p99_added_ms"] = round(figures["app_p99_ms"] - figures["none_p99_ms"], 2)
	figures["app_cpu_ms_per_request_added"] = round(
		median(
			[
				a["cpu_ms_per_request"] - b["cpu_ms_per_request"]
				for a, b in zip(results["app"], results["none"], strict=True)
			]
		),
		3,
	)
	figures["aa_cpu_ms_per_request_difference"] = round(
		median(
			[
				a["cpu_ms_per_request"] - b["cpu_ms_per_request"]
				for a, b in zip(results["none_b"], results["none"], strict=True)
			]
		),
		3,
	)
	figures["otlp_exports"] = received.requests
	return figures


if __name__ == "__main__":
	main()
