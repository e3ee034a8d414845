"""Plain Redis access on Frappe's cache connection, with site-scoped keys."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import frappe
import redis

# every key of the app starts with this (after the site's own prefix); `hooks.py` keeps them through
# `bench clear-cache`, and uninstalling deletes them
PREFIX = "verenigingen_perf:"


def redis_client() -> redis.Redis:
	"""A plain client on Frappe's cache connection pool.

	Frappe's RedisWrapper re-prefixes keys in its list and hash helpers; the buffer builds its keys
	once (site-scoped, with `make_key`) and passes them to Lua scripts, so it talks plain Redis.
	"""
	pool = frappe.cache.connection_pool
	client = _clients.get(id(pool))
	if client is None:
		client = _clients[id(pool)] = redis.Redis(connection_pool=pool)
	return client


_clients: dict[int, redis.Redis] = {}


def key(name: str) -> str:
	"""A key of this app on the current site (Frappe's `make_key`: the site's database name first)."""
	return frappe.cache.make_key(f"{PREFIX}{name}")


def delete_app_keys() -> int:
	"""Delete every key of this app on the current site; returns how many went."""
	client = redis_client()
	keys = list(client.scan_iter(match=key("*"), count=1000))
	for start in range(0, len(keys), 1000):
		client.delete(*keys[start : start + 1000])
	return len(keys)


@contextlib.contextmanager
def exclusive(name: str, timeout_s: int) -> Iterator[bool | None]:
	"""A non-blocking Redis lock for one of the app's jobs: yields True when held, False when another
	run holds it, None when Redis cannot be reached (the caller then relies on its own checks).

	A run that dies keeps it until `timeout_s`; one that outlives it relies on its own
	compare-and-set checks, so releasing an expired lock is not an error."""
	lock = redis_client().lock(lock_key(name), timeout=timeout_s, blocking=False)
	try:
		acquired = lock.acquire()
	except redis.exceptions.RedisError:
		yield None
		return
	try:
		yield acquired
	finally:
		if acquired:
			with contextlib.suppress(redis.exceptions.RedisError):
				lock.release()


def lock_key(name: str) -> str:
	return key(f"{name}_lock")
