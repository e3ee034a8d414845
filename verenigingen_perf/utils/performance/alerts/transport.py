"""Posting a webhook: to an address that was checked, within one wall-clock deadline. Plain Python.

A per-read timeout (what `requests` and `urllib3` offer) is no bound on an attempt: a receiver that
sends a byte every few seconds holds the worker for as long as it drips. Here the whole attempt (name
resolution, connect, TLS handshake, sending the body, reading the answer) ends by `timeout_s`: every
socket operation gets the time that is left, and a watchdog shuts the socket down at the deadline,
which ends a read that is still waiting.

The host's addresses are resolved once; with `refuse_private` every one must be a public address
(not loopback, link-local, private, shared, multicast or reserved: a webhook must not become a way to
reach the server's own network), and the connection goes to a checked address, never to a second
resolution that could answer differently. Proxies from the environment are not used.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

# the receiver's answer is read up to this much (only its status code is used)
MAX_ANSWER_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}


class DeliveryError(Exception):
	"""An attempt that could not be made or did not finish; the message says which and why."""


class AddressRefused(DeliveryError):
	pass


class DeadlineExceeded(DeliveryError):
	pass


def address_kind(address: str) -> str | None:
	"""Why an address is not a public one ("loopback", "private", ...), or None when it is."""
	ip = ipaddress.ip_address(address.split("%", 1)[0])
	if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
		ip = ip.ipv4_mapped
	for kind, flag in (
		("unspecified", ip.is_unspecified),
		("loopback", ip.is_loopback),
		("link-local", ip.is_link_local),
		("multicast", ip.is_multicast),
		("private", ip.is_private),
		("reserved", ip.is_reserved),
	):
		if flag:
			return kind
	return None if ip.is_global else "non-public"


@dataclass(frozen=True)
class Target:
	scheme: str
	host: str
	port: int
	path: str
	addresses: tuple[str, ...]


def _remaining(deadline: float, what: str, timeout_s: float) -> float:
	left = deadline - time.monotonic()
	if left <= 0:
		raise DeadlineExceeded(f"no answer within {timeout_s:g} s ({what})")
	return left


def _split(url: str) -> tuple[str, str, int, str]:
	parts = urlsplit(url)
	if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
		raise DeliveryError(f"{url[:200]!r} is not an http:// or https:// address")
	try:
		port = parts.port or DEFAULT_PORTS[parts.scheme]
	except ValueError as error:
		raise DeliveryError(f"{url[:200]!r}: {error}") from None
	path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
	return parts.scheme, parts.hostname, port, path


def resolve(url: str, refuse_private: bool, timeout_s: float) -> Target:
	"""The URL's host resolved (within `timeout_s`), each address checked when `refuse_private`."""
	scheme, host, port, path = _split(url)
	found: list[tuple[str, ...]] = []
	failure: list[BaseException] = []

	def lookup() -> None:
		try:
			infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
			found.append(tuple(dict.fromkeys(info[4][0] for info in infos)))
		except OSError as error:
			failure.append(error)

	# the system resolver has no deadline of its own: it runs aside, and the attempt does not wait
	# past its own
	resolver = threading.Thread(target=lookup, daemon=True, name="vperf-webhook-resolve")
	resolver.start()
	resolver.join(timeout_s)
	if failure:
		raise DeliveryError(f"cannot resolve {host!r}: {failure[0]}")
	if not found:
		raise DeadlineExceeded(f"no answer within {timeout_s:g} s (resolving {host!r})")
	addresses = found[0]
	if refuse_private:
		for address in addresses:
			if kind := address_kind(address):
				raise AddressRefused(
					f"{host!r} resolves to {address}, a {kind} address: webhooks go to public addresses "
					"only (alert_webhook_refuse_private_addresses)"
				)
	return Target(scheme, host, port, path, addresses)


def post(
	url: str,
	body: bytes,
	headers: dict[str, str],
	timeout_s: float,
	refuse_private: bool,
	deadline: float | None = None,
) -> int:
	"""POST `body`; the answer's status code. All of it ends `timeout_s` from now, or at `deadline`
	(`time.monotonic()`; an attempt that posts several bodies shares one). Raises DeliveryError
	(AddressRefused, DeadlineExceeded); redirects are not followed (a 3xx is the answer)."""
	deadline = time.monotonic() + timeout_s if deadline is None else deadline
	target = resolve(url, refuse_private, _remaining(deadline, "resolving", timeout_s))
	sock = _connect(target, deadline, timeout_s)
	expired = threading.Event()

	def stop() -> None:
		expired.set()
		try:
			# the plain socket's shutdown (also under TLS): it wakes a read that is still waiting
			socket.socket.shutdown(sock, socket.SHUT_RDWR)
		except OSError:
			pass

	watchdog = threading.Timer(_remaining(deadline, "connecting", timeout_s), stop)
	watchdog.daemon = True
	watchdog.start()
	connection = http.client.HTTPConnection(target.host, target.port)
	try:
		if target.scheme == "https":
			sock = ssl.create_default_context().wrap_socket(sock, server_hostname=target.host)
		connection.sock = sock
		sock.settimeout(_remaining(deadline, "TLS handshake", timeout_s))
		connection.request("POST", target.path, body=body, headers=headers)
		sock.settimeout(_remaining(deadline, "sending", timeout_s))
		answer = connection.getresponse()
		answer.read(MAX_ANSWER_BYTES)
		if expired.is_set():
			raise DeadlineExceeded(f"no answer within {timeout_s:g} s (connect, send and read)")
		return answer.status
	except (OSError, http.client.HTTPException) as error:
		# every socket timeout is set to the time left: one that fires is the deadline, even when it
		# beats the watchdog to it (a loaded machine runs the watchdog's thread late)
		if expired.is_set() or isinstance(error, TimeoutError):
			raise DeadlineExceeded(f"no answer within {timeout_s:g} s (connect, send and read)") from None
		raise DeliveryError(f"{type(error).__name__}: {error}") from error
	finally:
		watchdog.cancel()
		connection.close()
		sock.close()


def _connect(target: Target, deadline: float, timeout_s: float) -> socket.socket:
	"""A connection to the first address of the target that takes one, within the deadline."""
	last_error: OSError | None = None
	for address in target.addresses:
		try:
			return socket.create_connection(
				(address, target.port), timeout=_remaining(deadline, "connecting", timeout_s)
			)
		except OSError as error:
			last_error = error
	raise DeliveryError(f"cannot connect to {target.host!r}: {last_error}")
