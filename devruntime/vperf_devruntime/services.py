"""Loopback-only Redis, MariaDB and PostgreSQL servers for the throwaway dev/CI site, started and stopped here.

State (ports, pids) lives in the runtime's work folder; every call is idempotent: a live server is
reused, a dead one is started again on a free port.
"""

import contextlib
import glob
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
MARIADB_ROOT_PASSWORD = "devruntime-root"
POSTGRES_SUPERUSER = "postgres"
POSTGRES_PASSWORD = "devruntime-root"
# PostgreSQL refuses to run as root: as root, its processes run as this user (Debian's package creates it)
POSTGRES_OS_USER = "postgres"
# how each server is told to stop: PostgreSQL's SIGTERM waits for every client to disconnect first
_STOP_SIGNAL = {"postgres": signal.SIGINT}


@dataclass
class Service:
	name: str
	pid: int
	port: int

	def alive(self) -> bool:
		try:
			os.kill(self.pid, 0)
		except OSError:
			return False
		with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, self.port), timeout=1):
			return True
		return False


def free_port() -> int:
	with socket.socket() as s:
		s.bind((LOOPBACK, 0))
		return s.getsockname()[1]


def _state_file(work: Path, name: str) -> Path:
	return work / "services" / f"{name}.json"


def _load(work: Path, name: str) -> Service | None:
	path = _state_file(work, name)
	if not path.exists():
		return None
	return Service(**json.loads(path.read_text()))


def _save(work: Path, service: Service) -> None:
	path = _state_file(work, service.name)
	path.parent.mkdir(parents=True, exist_ok=True)
	path.write_text(json.dumps(asdict(service)))


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, seconds: float = 60) -> None:
	deadline = time.monotonic() + seconds
	while time.monotonic() < deadline:
		if proc.poll() is not None:
			raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
		with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
			return
		time.sleep(0.2)
	raise RuntimeError(f"{what} did not listen on {LOOPBACK}:{port} within {seconds}s")


def ensure_redis(work: Path, port: int | None = None) -> Service:
	current = _load(work, "redis")
	if current and current.alive():
		return current
	binary = shutil.which("redis-server")
	if not binary:
		raise RuntimeError("redis-server not found: run devruntime/setup.sh (installs Debian's redis-server)")
	data = work / "redis"
	data.mkdir(parents=True, exist_ok=True)
	port = port or free_port()
	proc = subprocess.Popen(
		[
			binary,
			"--bind",
			LOOPBACK,
			"--port",
			str(port),
			"--save",
			"",
			"--appendonly",
			"no",
			"--dir",
			str(data),
			"--logfile",
			str(data / "redis.log"),
		],
		stdout=subprocess.DEVNULL,
		stderr=subprocess.DEVNULL,
		start_new_session=True,
	)
	_wait_for_port(port, proc, "redis-server")
	service = Service("redis", proc.pid, port)
	_save(work, service)
	return service


def ensure_mariadb(work: Path) -> Service:
	current = _load(work, "mariadb")
	if current and current.alive():
		return current
	daemon = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
	if not os.path.exists(daemon):
		raise RuntimeError("mariadbd not found: run devruntime/setup.sh (installs Debian's mariadb-server)")
	data = work / "mariadb"
	datadir = data / "data"
	fresh = not (datadir / "mysql").exists()
	if fresh:
		datadir.mkdir(parents=True, exist_ok=True)
		subprocess.run(
			[
				"mariadb-install-db",
				f"--datadir={datadir}",
				"--user=root",
				"--auth-root-authentication-method=normal",
				"--skip-test-db",
			],
			check=True,
			stdout=subprocess.DEVNULL,
			stderr=subprocess.DEVNULL,
		)
	port = free_port()
	socket_path = data / "mysqld.sock"
	proc = subprocess.Popen(
		[
			daemon,
			"--no-defaults",
			f"--datadir={datadir}",
			f"--socket={socket_path}",
			f"--pid-file={data / 'mysqld.pid'}",
			f"--port={port}",
			f"--bind-address={LOOPBACK}",
			"--user=root",
			"--skip-name-resolve",
			"--character-set-server=utf8mb4",
			"--collation-server=utf8mb4_unicode_ci",
			# sized to hold the benchmarks' tables, as production servers hold their working set
			"--innodb-buffer-pool-size=1G",
			"--innodb-flush-log-at-trx-commit=2",
			# the database health collector reads statement digests, recent statements (the sample text
			# it EXPLAINs) and index usage from performance_schema, as an operator's my.cnf turns it on
			"--performance-schema=ON",
			# history_long is fed only while the current-statement consumer is on (its parent)
			"--performance-schema-consumer-events-statements-current=ON",
			"--performance-schema-consumer-events-statements-history-long=ON",
			# room for every statement shape of a whole test session (the default table fills up, and
			# a shape that arrives after that is counted under no digest at all)
			"--performance-schema-digests-size=20000",
			f"--log-error={data / 'mysqld.err'}",
		],
		stdout=subprocess.DEVNULL,
		stderr=subprocess.DEVNULL,
		start_new_session=True,
	)
	_wait_for_port(port, proc, "mariadbd")
	if fresh:
		subprocess.run(
			[
				"mariadb",
				f"--socket={socket_path}",
				"-uroot",
				"-e",
				f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{MARIADB_ROOT_PASSWORD}'; "
				f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '{MARIADB_ROOT_PASSWORD}'; "
				f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{MARIADB_ROOT_PASSWORD}'; "
				"GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;",
			],
			check=True,
		)
	service = Service("mariadb", proc.pid, port)
	_save(work, service)
	return service


def _postgres_bin(program: str) -> str:
	"""A program of Debian's newest installed PostgreSQL (its server binaries are not on PATH)."""
	found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=_major_version)
	if not found:
		raise RuntimeError(f"{program} not found: run devruntime/setup.sh (installs Debian's postgresql)")
	return found[-1]


def _major_version(path: str) -> int:
	return int(Path(path).parts[4]) if Path(path).parts[4].isdigit() else 0


def _postgres_user() -> dict:
	"""Popen's arguments that run a PostgreSQL program as a non-root user when this process is root."""
	if os.geteuid() != 0:
		return {}
	return {"user": POSTGRES_OS_USER, "group": pwd.getpwnam(POSTGRES_OS_USER).pw_gid, "extra_groups": []}


def _own_for_postgres(path: Path) -> None:
	if os.geteuid() == 0:
		account = pwd.getpwnam(POSTGRES_OS_USER)
		os.chown(path, account.pw_uid, account.pw_gid)


def _reachable_by_others(folder: Path) -> bool:
	"""Whether an account other than ours may pass through every folder down to `folder`."""
	return all(os.stat(part).st_mode & stat.S_IXOTH for part in (folder, *folder.parents))


def postgres_folder(work: Path) -> Path:
	"""The cluster's folder: `postgres` in the runtime's folder, which the server's own account must
	reach. In a checkout under a private folder (`mktemp -d`, /root) it cannot: the cluster then lives
	in /var/tmp, in a folder named after the runtime's, and `postgres` in the runtime's folder links
	to it."""
	folder = work / "postgres"
	if os.geteuid() != 0 or _reachable_by_others(work.resolve()):
		return folder
	digest = hashlib.sha1(str(work.resolve()).encode()).hexdigest()[:12]
	outside = Path("/var/tmp") / f"vperf-devruntime-postgres-{digest}"
	outside.mkdir(mode=0o700, exist_ok=True)
	if not folder.is_symlink():
		if folder.exists():
			shutil.rmtree(folder)
		folder.symlink_to(outside)
	return outside


def ensure_postgres(work: Path) -> Service:
	current = _load(work, "postgres")
	if current and current.alive():
		return current
	work.mkdir(parents=True, exist_ok=True)
	data = postgres_folder(work)
	datadir = data / "data"
	data.mkdir(parents=True, exist_ok=True)
	_own_for_postgres(data)
	if not (datadir / "PG_VERSION").exists():
		_initdb(data, datadir)
	port = free_port()
	with open(data / "postgres.log", "ab") as log:
		proc = _start_postgres(datadir, data, port, log)
	_wait_for_port(port, proc, "postgres")
	service = Service("postgres", proc.pid, port)
	_save(work, service)
	return service


def _start_postgres(datadir: Path, data: Path, port: int, log) -> subprocess.Popen:
	return subprocess.Popen(
		[
			_postgres_bin("postgres"),
			"-D",
			str(datadir),
			"-p",
			str(port),
			"-c",
			f"listen_addresses={LOOPBACK}",
			# its socket stays in its own folder, away from a system cluster's /var/run/postgresql
			"-c",
			f"unix_socket_directories={data}",
			# the statement statistics an operator's postgresql.conf turns on for the database health
			# snapshot; `track=all` also counts the statements run inside functions
			"-c",
			"shared_preload_libraries=pg_stat_statements",
			"-c",
			"pg_stat_statements.track=all",
			"-c",
			"pg_stat_statements.max=20000",
			# throwaway data: no fsync per commit, as MariaDB's innodb_flush_log_at_trx_commit=2
			"-c",
			"synchronous_commit=off",
			"-c",
			"shared_buffers=256MB",
			"-c",
			"max_connections=200",
			"-c",
			"logging_collector=off",
		],
		stdout=subprocess.DEVNULL,
		stderr=log,
		start_new_session=True,
		**_postgres_user(),
	)


def _initdb(data: Path, datadir: Path) -> None:
	"""A new cluster: superuser `postgres` with a password, password logins over TCP only."""
	password_file = data / "superuser-password"
	password_file.write_text(POSTGRES_PASSWORD + "\n")
	_own_for_postgres(password_file)
	try:
		subprocess.run(
			[
				_postgres_bin("initdb"),
				"-D",
				str(datadir),
				"-U",
				POSTGRES_SUPERUSER,
				f"--pwfile={password_file}",
				"--auth-local=peer",
				"--auth-host=scram-sha-256",
				"--encoding=UTF8",
				"--locale=C.UTF-8",
			],
			check=True,
			stdout=subprocess.DEVNULL,
			**_postgres_user(),
		)
	finally:
		password_file.unlink(missing_ok=True)


def stop(work: Path, name: str) -> Service | None:
	"""Stop one server this layer started; returns what it was (so it can be started again)."""
	service = _load(work, name)
	if service and service.alive():
		os.kill(service.pid, _STOP_SIGNAL.get(name, signal.SIGTERM))
		for _ in range(100):
			try:
				os.kill(service.pid, 0)
			except OSError:
				break
			time.sleep(0.1)
	_state_file(work, name).unlink(missing_ok=True)
	return service


def stop_all(work: Path) -> list[str]:
	"""Stop every server this layer started (by the pid it recorded)."""
	stopped = []
	for name in ("redis", "mariadb", "postgres"):
		service = stop(work, name)
		if service:
			stopped.append(f"{name} (pid {service.pid})")
	return stopped
