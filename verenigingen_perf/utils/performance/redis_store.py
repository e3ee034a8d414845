"""Plain Redis access on Frappe's cache connection, with site-scoped keys."""

from __future__ import annotations

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
