"""Loopback-only Redis and MariaDB servers for the throwaway dev/CI site, started and stopped here.

State (ports, pids) lives in the runtime's work folder; every call is idempotent: a live server is
reused, a dead one is started again on a free port.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
MARIADB_ROOT_PASSWORD = "devruntime-root"


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


def stop(work: Path, name: str) -> Service | None:
	"""Stop one server this layer started; returns what it was (so it can be started again)."""
	service = _load(work, name)
	if service and service.alive():
		os.kill(service.pid, signal.SIGTERM)
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
	for name in ("redis", "mariadb"):
		service = stop(work, name)
		if service:
			stopped.append(f"{name} (pid {service.pid})")
	return stopped
