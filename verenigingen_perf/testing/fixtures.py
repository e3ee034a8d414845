"""The app's test kit: the pytest fixtures of its integration tests, on a real bench site or on a site a
runtime provides (the repository's conftest.py registers this plugin).

Real bench site: set VPERF_BENCH_SITES (the bench's sites folder) and VPERF_BENCH_SITE (the site
name); VPERF_BENCH_URL (where the bench's web server answers for that site) defaults to
http://127.0.0.1:<webserver_port of common_site_config.json>. The fixtures then only call
frappe.init/frappe.connect (from the sites folder, as bench does) and touch nothing else of the bench.
Administrator's HTTP session is created on the site itself, so no password is needed (one given in
VPERF_BENCH_ADMIN_PASSWORD is used to log in instead).

Elsewhere a plugin provides the site by implementing the hook `pytest_vperf_site_provider` (the
repository's dev runtime does: it creates or migrates its own site and starts its web server); with
neither, the integration tests fail and say so.

Browser fixtures (`desk_browser`, `desk_page(user)`): Debian's Chromium (VPERF_CHROMIUM, default
/usr/bin/chromium) driven by Playwright, on the same server as `http`. On a bench the browser asks for
the site by its name (resolved to the server's address), as the bench tells its sites apart by Host.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import pytest
import requests

from verenigingen_perf.testing.members import forget_deleted

if TYPE_CHECKING:
	from playwright.sync_api import Browser, BrowserContext, Page

BENCH_SITES = (
	os.path.abspath(os.environ["VPERF_BENCH_SITES"]) if os.environ.get("VPERF_BENCH_SITES") else None
)
BENCH_SITE = os.environ.get("VPERF_BENCH_SITE")
BENCH_URL = os.environ.get("VPERF_BENCH_URL")
TEST_PASSWORD = "Vperf-test-" + secrets.token_hex(6)


def bench_mode() -> bool:
	"""The tests run on a real bench's site (VPERF_BENCH_SITES and VPERF_BENCH_SITE are set)."""
	return bool(BENCH_SITES and BENCH_SITE)


class SiteProvider(Protocol):
	"""Where the integration tests' site comes from: a real bench, or a runtime of the repository."""

	def environment(self) -> dict[str, str]:
		"""The process environment the site needs (set for this process and its children)."""

	def init_site(self) -> None:
		"""`frappe.init` for the site, in the calling thread."""

	def serve(self, site_env: dict[str, str]) -> AbstractContextManager[str]:
		"""The base URL of the site's web server while the context is open."""

	def admin_password(self) -> str | None:
		"""Administrator's password (None: a session is created on the site itself instead)."""

	def run_queued_jobs(self, site_env: dict[str, str]) -> None:
		"""Every queued background job run to completion (or seen done by the site's own workers)."""

	def process_init(self) -> tuple[str, list[str], str | None]:
		"""How a new Python process connects to the site: the code that calls frappe.init, the
		arguments it reads (sys.argv[1:]) and the working directory."""

	def command(self, group: str, *args: str) -> tuple[list[str], str | None]:
		"""The command line (and its working directory) of `bench --site S <group> <args>`."""


class _Hooks:
	@pytest.hookspec(firstresult=True)
	def pytest_vperf_site_provider(self) -> SiteProvider | None:
		"""The site the integration tests run on, when it is not a bench's (see the module's docstring)."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
	pluginmanager.add_hookspecs(_Hooks)


class BenchSiteProvider:
	"""A real bench's site, named by VPERF_BENCH_SITES and VPERF_BENCH_SITE; its own web server and
	workers."""

	def environment(self) -> dict[str, str]:
		return {}

	def init_site(self) -> None:
		import frappe

		# Frappe finds its logs and config relative to the sites folder, as bench runs it
		os.chdir(BENCH_SITES)
		frappe.init(site=BENCH_SITE, sites_path=BENCH_SITES)

	@contextmanager
	def serve(self, site_env: dict[str, str]) -> Iterator[str]:
		yield (BENCH_URL or self._default_url()).rstrip("/")

	@staticmethod
	def _default_url() -> str:
		with open(os.path.join(BENCH_SITES, "common_site_config.json")) as f:
			port = json.load(f).get("webserver_port")
		if not port:
			pytest.fail("set VPERF_BENCH_URL: common_site_config.json names no webserver_port")
		return f"http://127.0.0.1:{port}"

	def admin_password(self) -> str | None:
		return os.environ.get("VPERF_BENCH_ADMIN_PASSWORD")

	def run_queued_jobs(self, site_env: dict[str, str]) -> None:
		"""The bench's own workers run them: wait until its queues and workers have been idle a while."""
		from frappe.utils.background_jobs import get_queues
		from rq import Worker
		from rq.registry import StartedJobRegistry

		def busy() -> bool:
			# queued, taken by a worker, or running
			queues = get_queues()
			if any(q.count or StartedJobRegistry(queue=q).count for q in queues):
				return True
			workers = Worker.all(connection=queues[0].connection) if queues else []
			return any(w.get_state() == "busy" for w in workers)

		# RQ takes a job off its queue a moment before it marks it started: idle must be seen for a
		# while, not once
		deadline = time.monotonic() + 120
		idle_since = None
		while time.monotonic() < deadline:
			if busy():
				idle_since = None
			elif idle_since is None:
				idle_since = time.monotonic()
			elif time.monotonic() - idle_since >= 3:
				return
			time.sleep(0.25)

	def process_init(self) -> tuple[str, list[str], str | None]:
		return "frappe.init(site=sys.argv[1], sites_path='.')", [BENCH_SITE], BENCH_SITES

	def command(self, group: str, *args: str) -> tuple[list[str], str | None]:
		bench = os.environ.get("VPERF_BENCH_COMMAND", "bench")
		if shutil.which(bench) is None:
			# else every command test fails with a bare FileNotFoundError (seen on a v15 bench)
			pytest.fail(
				f"VPERF_BENCH_COMMAND: {bench!r} is not an executable on PATH; put the bench CLI on PATH "
				"or name it (e.g. VPERF_BENCH_COMMAND=/usr/local/bin/bench)"
			)
		return [bench, "--site", BENCH_SITE, group, *args], os.path.dirname(BENCH_SITES)


@pytest.fixture(scope="session")
def site_provider(request: pytest.FixtureRequest) -> SiteProvider:
	if bench_mode():
		return BenchSiteProvider()
	provider = request.config.hook.pytest_vperf_site_provider()
	if provider is None:
		pytest.fail(
			"no site for the integration tests: set VPERF_BENCH_SITES and VPERF_BENCH_SITE to run them "
			"on a bench site (docs/operator-guide.md), or run them through the repository's dev runtime"
		)
	return provider


@pytest.fixture(scope="session")
def site_env(site_provider: SiteProvider) -> dict[str, str]:
	"""The process environment of the site (empty on a bench)."""
	env = site_provider.environment()
	os.environ.update(env)
	return env


@pytest.fixture(scope="session")
def site(site_provider: SiteProvider, site_env: dict[str, str]) -> Iterator[Any]:
	"""A connected site (frappe.init + frappe.connect), as Administrator."""
	import frappe

	site_provider.init_site()
	frappe.connect()
	frappe.set_user("Administrator")
	# as Frappe's own test runner: the app's internal errors raise, framework jobs run inline
	frappe.flags.in_test = True
	yield frappe.local
	frappe.db.rollback()
	frappe.destroy()


@pytest.fixture(autouse=True)
def _site_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
	"""Each integration test starts and ends as Administrator with no open transaction."""
	if "site" not in request.fixturenames:
		yield
		return
	import frappe

	frappe.set_user("Administrator")
	yield
	frappe.db.rollback()
	frappe.set_user("Administrator")


@pytest.fixture(scope="session")
def server_url(site: Any, site_provider: SiteProvider, site_env: dict[str, str]) -> Iterator[str]:
	"""Base URL of the site's real web server (the bench's; the runtime's, started for the session)."""
	with site_provider.serve(site_env) as url:
		yield url


@dataclass
class HttpClient:
	"""A requests session against the site, logged in as `user` (or Guest)."""

	base_url: str
	user: str
	session: requests.Session

	def call(self, method: str, http_method: str = "POST", **params: Any) -> requests.Response:
		url = f"{self.base_url}/api/method/{method}"
		data = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in params.items()}
		if http_method == "GET":
			return self.session.get(url, params=data, timeout=60)
		return self.session.post(url, data=data, timeout=60)


@contextmanager
def _framework_jobs_inline() -> Iterator[None]:
	"""Deleting a document enqueues the framework's clean-up of its dynamic links, run at once in tests
	(`now=frappe.flags.in_test` in v15, `frappe.in_test` in v16). Queued instead, a session's deleted
	users left some 150 such jobs for the next test's burst worker, which outran its timeout."""
	import frappe

	flag, attribute = frappe.flags.in_test, getattr(frappe, "in_test", None)
	frappe.flags.in_test = True
	if attribute is not None:
		frappe.in_test = True
	try:
		yield
	finally:
		frappe.flags.in_test = flag
		if attribute is not None:
			frappe.in_test = attribute


@pytest.fixture
def make_user(site: Any) -> Iterator[Callable[..., str]]:
	"""Create a committed test user with the given roles; removed after the test, with the contact
	the framework creates for every user."""
	import frappe

	created: list[str] = []

	def _make(*roles: str) -> str:
		email = f"vperf-test-{secrets.token_hex(5)}@example.com"
		user = frappe.get_doc(
			{
				"doctype": "User",
				"email": email,
				"first_name": "Perf Test",
				"send_welcome_email": 0,
				"user_type": "System User" if roles else "Website User",
				"new_password": TEST_PASSWORD,
				"roles": [{"role": role} for role in roles],
			}
		)
		user.flags.ignore_password_policy = True
		user.insert(ignore_permissions=True)
		frappe.db.commit()
		created.append(email)
		return email

	yield _make
	frappe.db.rollback()
	frappe.set_user("Administrator")
	for email in created:
		contacts = set(frappe.get_all("Contact", filters={"user": email}, pluck="name"))
		contacts |= set(frappe.get_all("Contact Email", filters={"email_id": email}, pluck="parent"))
		with _framework_jobs_inline():
			frappe.delete_doc("User", email, ignore_permissions=True, force=True)
			for contact in contacts:
				frappe.delete_doc("Contact", contact, ignore_permissions=True, force=True)
		# what the framework keeps of a user: its defaults, the copies of the deleted user, contact
		# and notification settings, the "deleted" comments, versions and its login activity
		names = [email, *contacts]
		frappe.db.delete("DefaultValue", {"parent": email})
		forget_deleted("User", [email])
		forget_deleted("Notification Settings", [email])
		forget_deleted("Contact", list(contacts))
		frappe.db.delete("Comment", {"reference_name": ("in", names)})
		frappe.db.delete("Version", {"docname": ("in", names)})
		frappe.db.delete("Activity Log", {"user": email})
		frappe.db.delete("Activity Log", {"reference_name": ("in", names)})
	frappe.db.commit()


@pytest.fixture
def http(server_url: str, site_provider: SiteProvider) -> Callable[[str | None], HttpClient]:
	"""`http(user)` is an HttpClient logged in as that user; `http(None)` is Guest."""

	def _client(user: str | None) -> HttpClient:
		session = requests.Session()
		if BENCH_SITE:
			session.headers["Host"] = BENCH_SITE
		if user == "Administrator" and not site_provider.admin_password():
			session.cookies.set("sid", _administrator_session())
		elif user:
			password = site_provider.admin_password() if user == "Administrator" else TEST_PASSWORD
			response = session.post(
				f"{server_url}/api/method/login", data={"usr": user, "pwd": password}, timeout=30
			)
			assert response.status_code == 200, f"login as {user} failed: {response.text[:300]}"
		return HttpClient(server_url, user or "Guest", session)

	return _client


def _administrator_session() -> str:
	"""A new session of Administrator created on the site itself, as Frappe's own API tests do. One per
	client: a session the browser opened the desk with holds a CSRF token, which Frappe then asks of
	every POST of that session (an HTTP client sharing it was refused; seen on a v15 bench)."""
	import frappe
	from frappe.auth import CookieManager, LoginManager
	from frappe.utils import set_request

	set_request(path="/")
	frappe.local.cookie_manager = CookieManager()
	frappe.local.login_manager = LoginManager()
	frappe.local.login_manager.login_as("Administrator")
	sid = frappe.session.sid
	frappe.db.commit()
	frappe.local.request = None
	frappe.set_user("Administrator")
	return sid


@pytest.fixture
def run_scheduled_job(site: Any) -> Callable[[str], None]:
	"""Run one of the app's scheduled jobs now, through its Scheduled Job Type, as the scheduler does."""
	import frappe

	def _run(method: str) -> None:
		job = frappe.get_doc("Scheduled Job Type", {"method": method})
		job.execute()
		frappe.db.commit()

	return _run


@pytest.fixture
def scheduled_jobs_paused(
	site: Any, site_provider: SiteProvider, site_env: dict[str, str]
) -> Callable[..., AbstractContextManager[None]]:
	"""`with scheduled_jobs_paused(method, ...):` keeps the site's scheduler from running those jobs
	meanwhile: a live bench's scheduler runs them on the real clock while a test drives them on a
	clock of its own (seen on a v15 bench: the scheduled alert evaluation fired an alert again that the
	test had just resolved). A run already queued is waited out; the Scheduled Job Types are put back
	as they were, unmodified."""
	import frappe

	@contextmanager
	def _paused(*methods: str) -> Iterator[None]:
		names = frappe.get_all(
			"Scheduled Job Type", filters={"method": ("in", methods), "stopped": 0}, pluck="name"
		)

		def set_stopped(stopped: int) -> None:
			for name in names:
				frappe.db.set_value("Scheduled Job Type", name, "stopped", stopped, update_modified=False)
			frappe.db.commit()

		set_stopped(1)
		try:
			site_provider.run_queued_jobs(site_env)
			yield
		finally:
			frappe.db.rollback()
			set_stopped(0)

	return _paused


@pytest.fixture
def run_background_jobs(
	site: Any, site_provider: SiteProvider, site_env: dict[str, str]
) -> Callable[[], None]:
	"""Run the queued background jobs to completion (a bench's own workers; the runtime's burst worker)."""
	import frappe

	def _run() -> None:
		frappe.db.commit()
		site_provider.run_queued_jobs(site_env)

	return _run


@pytest.fixture
def spawn_job(
	site: Any, site_provider: SiteProvider, site_env: dict[str, str]
) -> Callable[[str], subprocess.Popen]:
	"""Start one of the app's jobs in its own process (so a test can kill it at any point): the site's
	Python, connected to the site."""

	def _spawn(method: str, log_path: str = os.devnull) -> subprocess.Popen:
		"""The job's function run in a process of its own (its return value printed), exit status 0
		only when it returned."""
		init, init_args, cwd = site_provider.process_init()
		script = (
			f"import sys, frappe; {init}; frappe.connect(); "
			"print(frappe.get_attr(sys.argv[-1])(), flush=True); frappe.db.commit(); frappe.destroy()"
		)
		log = open(log_path, "ab")
		return subprocess.Popen(
			[sys.executable, "-c", script, *init_args, method],
			cwd=cwd,
			env={**os.environ, **site_env},
			stdout=log,
			stderr=subprocess.STDOUT,
		)

	return _spawn


@pytest.fixture
def bench_command(site: Any, site_provider: SiteProvider) -> Callable[..., subprocess.CompletedProcess]:
	"""`bench_command("vperf", "report", "--json")` runs an app's bench command on the site, as
	`bench --site S vperf report --json` does (on a bench: the command named by VPERF_BENCH_COMMAND,
	default `bench`, in the bench folder)."""

	def _run(group: str, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
		command, cwd = site_provider.command(group, *args)
		return subprocess.run(
			command, capture_output=True, text=True, timeout=timeout_s, cwd=cwd, check=False
		)

	return _run


@pytest.fixture
def in_threads(site: Any, site_provider: SiteProvider) -> Callable[..., None]:
	"""`in_threads(fn, count)` runs `fn` at the same time in `count` threads, each with its own site
	connection (as separate workers would), and fails the test if any of them raised."""
	import frappe

	def _run(fn: Callable[[], Any], count: int = 2, timeout_s: float = 300) -> None:
		errors: list[BaseException] = []

		def worker() -> None:
			try:
				site_provider.init_site()
				frappe.connect()
				frappe.flags.in_test = True
				fn()
			except BaseException as e:  # handed to the test's thread
				errors.append(e)
			finally:
				frappe.destroy()

		threads = [threading.Thread(target=worker) for _ in range(count)]
		for thread in threads:
			thread.start()
		for thread in threads:
			thread.join(timeout=timeout_s)
		assert not errors, errors
		frappe.db.rollback()

	return _run


CHROMIUM_ARGS = [
	"--no-sandbox",
	"--disable-gpu",
	"--disable-quic",
	"--no-first-run",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
]
DESK_TIMEOUT_MS = 30_000


def _browser_url(server_url: str) -> str:
	"""The server's address as the browser asks for it: by the site's name on a bench."""
	if not BENCH_SITE:
		return server_url
	parts = urlsplit(server_url)
	host = f"{BENCH_SITE}:{parts.port}" if parts.port else BENCH_SITE
	return parts._replace(netloc=host).geturl()


@pytest.fixture(scope="session")
def desk_browser(server_url: str) -> Iterator[Browser]:
	"""Headless Chromium for the session (Debian's; Playwright downloads no browser here)."""
	from playwright.sync_api import sync_playwright

	args = list(CHROMIUM_ARGS)
	if BENCH_SITE:
		args.append(f"--host-resolver-rules=MAP {BENCH_SITE} {urlsplit(server_url).hostname}")
	with sync_playwright() as playwright:
		browser = playwright.chromium.launch(
			executable_path=os.environ.get("VPERF_CHROMIUM", "/usr/bin/chromium"), headless=True, args=args
		)
		yield browser
		browser.close()


# The console message types a desk page must not log: console.error, console.warn, a failed console.assert
CONSOLE_PROBLEM_TYPES = ("error", "warning", "assert")


@dataclass
class DeskPage:
	"""A browser tab in the desk, logged in as `user`. `console_problems` collects, in order, the
	console's errors, warnings and failed assertions and the page's uncaught exceptions; the fixture
	fails the test when any is left at its end (a test that provokes one on purpose removes it with
	`expect_console_problem`)."""

	page: Page
	context: BrowserContext
	user: str
	base_url: str
	console_problems: list[str]

	def expect_console_problem(self, fragment: str, required: bool = True) -> list[str]:
		"""Take the collected problems containing `fragment` out of `console_problems` (the test
		provoked them), returning them; fails when there is none, unless not `required`."""
		expected = [p for p in self.console_problems if fragment in p]
		assert expected or not required, (
			f"no console problem containing {fragment!r}: {self.console_problems}"
		)
		self.console_problems[:] = [p for p in self.console_problems if fragment not in p]
		return expected

	def goto(self, path: str) -> None:
		"""Open `path` (e.g. /app/user) and wait until the desk has shown its page."""
		self.page.goto(self.base_url + path)
		self.wait_for_desk()

	def wait_for_desk(self) -> None:
		self.page.wait_for_function(
			"() => { const f = window.frappe; return !!(f && f.container && f.container.page && f.router); }",
			timeout=DESK_TIMEOUT_MS,
		)
		self.page.wait_for_load_state("networkidle", timeout=DESK_TIMEOUT_MS)


@pytest.fixture
def desk_page(desk_browser: Browser, http: Callable, server_url: str) -> Iterator[Callable[[str], DeskPage]]:
	"""`desk_page(user)` opens a new browser context logged in as `user` (the session of `http(user)`)
	on the desk (/app); the contexts are closed after the test, which fails if a page logged a
	console warning or error it did not expect."""
	contexts: list[BrowserContext] = []
	desks: list[DeskPage] = []
	base_url = _browser_url(server_url)

	def _open(user: str) -> DeskPage:
		session = http(user).session
		context = desk_browser.new_context(viewport={"width": 1400, "height": 900})
		contexts.append(context)
		context.set_default_timeout(DESK_TIMEOUT_MS)
		context.add_cookies(
			[{"name": c.name, "value": c.value or "", "url": base_url} for c in session.cookies]
		)
		page = context.new_page()
		desk = DeskPage(page, context, user, base_url, [])
		desks.append(desk)

		def on_console(message: Any) -> None:
			if message.type in CONSOLE_PROBLEM_TYPES:
				desk.console_problems.append(
					f"console {message.type}: {message.text} ({message.location.get('url')})"
				)

		page.on("console", on_console)

		def on_page_error(error: Any) -> None:
			# where it was thrown: the stack's first frames
			where = " | ".join((error.stack or "").splitlines()[1:4])
			desk.console_problems.append(f"page error: {error} ({where.strip()})")

		page.on("pageerror", on_page_error)
		desk.goto("/app")
		return desk

	yield _open
	for context in contexts:
		context.close()
	left = [f"{desk.user}: {problem}" for desk in desks for problem in desk.console_problems]
	if left:
		pytest.fail("the desk logged console problems:\n" + "\n".join(left), pytrace=False)


@pytest.fixture
def desk_login(desk_page: Callable[[str], DeskPage]) -> Callable[[str], DeskPage]:
	"""The same as `desk_page`."""
	return desk_page
