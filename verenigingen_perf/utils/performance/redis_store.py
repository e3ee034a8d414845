"""Plain Redis access on Frappe's cache connection, with site-scoped keys."""

from __future__ import annotations

import frappe
import redis


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


def _key(name: str) -> str:
	return frappe.cache.make_key(f"verenigingen_perf:{name}")


def key(name: str) -> str:
	"""A key of this app on the current site (Frappe's `make_key`: the site's database name first)."""
	return frappe.cache.make_key(f"verenigingen_perf:{name}")
