"""Webhook transport: one wall-clock deadline per attempt, checked addresses. Real sockets on
loopback; no site needed."""

import socket
import threading
import time

import pytest

from verenigingen_perf.utils.performance.alerts import transport


def read_request(connection: socket.socket) -> bytes:
	"""The whole request: its head, then as many bytes as its Content-Length says."""
	data = b""
	while b"\r\n\r\n" not in data:
		data += connection.recv(4096)
	head, _, body = data.partition(b"\r\n\r\n")
	length = next(
		(
			int(line.split(b":")[1])
			for line in head.split(b"\r\n")
			if line.lower().startswith(b"content-length")
		),
		0,
	)
	while len(body) < length:
		body += connection.recv(4096)
	return head + body


class Dripper:
	"""A receiver on loopback that reads the request, then sends its answer a byte at a time, one
	every `interval_s`: long after any per-read timeout, never within one deadline. Records whether
	the client hung up before the whole answer was sent."""

	def __init__(self, answer: bytes, interval_s: float = 0.2) -> None:
		self.answer, self.interval_s = answer, interval_s
		self.client_hung_up = threading.Event()
		self.finished = threading.Event()
		self.connections = 0
		self.server = socket.create_server(("127.0.0.1", 0))
		self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
		threading.Thread(target=self.serve, daemon=True).start()

	def serve(self) -> None:
		connection, _address = self.server.accept()
		self.connections += 1
		with connection:
			read_request(connection)
			try:
				for byte in self.answer:
					connection.sendall(bytes([byte]))
					time.sleep(self.interval_s)
			except OSError:
				self.client_hung_up.set()
				return
			self.finished.set()
			# until the client closes (closing first, with its data unread, would reset it)
			while connection.recv(4096):
				pass

	def close(self) -> None:
		self.server.close()


@pytest.mark.parametrize(
	"answer",
	[
		# the status line and headers drip
		b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" + b" " * 200,
		# the headers come at once, the body drips
		b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + b"x" * 200,
	],
)
def test_a_dripping_receiver_is_cut_off_at_the_deadline(answer):
	dripper = Dripper(answer)
	try:
		with pytest.raises(transport.DeadlineExceeded, match="within 1 s"):
			transport.post(dripper.url, b"{}", {"Content-Type": "application/json"}, 1, refuse_private=False)
		# the receiver, still dripping (its answer takes 40 s), finds the connection closed
		assert dripper.client_hung_up.wait(10) and not dripper.finished.is_set()
	finally:
		dripper.close()


class NeverFires:
	"""A watchdog timer that never fires: the one a loaded machine runs too late."""

	def __init__(self, *_args, **_kwargs) -> None:
		self.daemon = True

	def start(self) -> None:
		pass

	def cancel(self) -> None:
		pass


def test_a_silent_receiver_is_the_deadline_even_when_the_socket_times_out_before_the_watchdog(monkeypatch):
	monkeypatch.setattr(transport.threading, "Timer", NeverFires)
	dripper = Dripper(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", interval_s=5)
	try:
		with pytest.raises(transport.DeadlineExceeded, match="within 1 s"):
			transport.post(dripper.url, b"{}", {"Content-Type": "application/json"}, 1, refuse_private=False)
	finally:
		dripper.close()


def test_an_answer_within_the_deadline_is_read():
	dripper = Dripper(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", interval_s=0)
	try:
		assert transport.post(dripper.url, b"{}", {}, 5, refuse_private=False) == 204
		assert dripper.finished.wait(5)
	finally:
		dripper.close()


def test_private_addresses_are_refused_before_connecting():
	dripper = Dripper(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", interval_s=0)
	try:
		with pytest.raises(transport.AddressRefused, match=r"127\.0\.0\.1, a loopback address"):
			transport.post(dripper.url, b"{}", {}, 5, refuse_private=True)
		with pytest.raises(transport.AddressRefused, match="loopback"):
			transport.post("http://localhost:9/hook", b"{}", {}, 5, refuse_private=True)
		assert dripper.connections == 0
	finally:
		dripper.close()


@pytest.mark.parametrize(
	("address", "kind"),
	[
		("127.0.0.1", "loopback"),
		("::1", "loopback"),
		("::ffff:127.0.0.1", "loopback"),
		("10.1.2.3", "private"),
		("172.16.0.1", "private"),
		("192.168.1.1", "private"),
		("fd00::1", "private"),
		("169.254.169.254", "link-local"),
		("fe80::1%eth0", "link-local"),
		("100.64.0.1", "non-public"),
		("0.0.0.0", "unspecified"),
		("224.0.0.1", "multicast"),
		("93.184.216.34", None),
		("2606:2800:220:1:248:1893:25c8:1946", None),
	],
)
def test_address_kinds(address, kind):
	assert transport.address_kind(address) == kind


@pytest.mark.parametrize(
	"url", ["ftp://example.com/x", "http:///nohost", "http://example.com:99999/x", "javascript:alert(1)"]
)
def test_urls_that_are_no_http_address_are_refused(url):
	with pytest.raises(transport.DeliveryError):
		transport.post(url, b"{}", {}, 1, refuse_private=False)
