"""Baselines of the regression guards: a JSON file kept in the app's repository.

	{"queries": {name: statements}, "memory_mb": {name: MB}, "timings_ms": {name: [samples]}}

A guard that names a baseline compares with it; a baseline that is missing is a failure that says
how to record it (never a silent pass). In update mode (`pytest --vperf-update-baselines`, or
`bench --site S vperf update-baselines`) guards record what they measure instead of comparing, and
the file is rewritten (sorted, so its diff in review shows what changed).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

ENVIRONMENT_VARIABLE = "VPERF_BASELINES"
UPDATE_VARIABLE = "VPERF_UPDATE_BASELINES"
_KINDS = ("queries", "memory_mb", "timings_ms")


class MissingBaseline(AssertionError):
	"""A guard named a baseline the file does not have."""


class Baselines:
	def __init__(self, path: str | os.PathLike, update: bool = False):
		self.path = Path(path)
		self.update = update
		self._data: dict[str, dict[str, Any]] | None = None
		self._lock = threading.Lock()

	def _load(self) -> dict[str, dict[str, Any]]:
		if self._data is None:
			raw = json.loads(self.path.read_text()) if self.path.exists() else {}
			self._data = {kind: dict(raw.get(kind) or {}) for kind in _KINDS}
		return self._data

	def get(self, kind: str, name: str) -> Any:
		value = self._load()[kind].get(name)
		if value is None:
			raise MissingBaseline(
				f"no {kind} baseline named {name!r} in {self.path}: record it with "
				"`pytest --vperf-update-baselines` (or `bench --site S vperf update-baselines`)"
			)
		return value

	def record(self, kind: str, name: str, value: Any) -> None:
		with self._lock:
			self._load()[kind][name] = value
			self.path.parent.mkdir(parents=True, exist_ok=True)
			text = json.dumps(self._load(), indent=1, sort_keys=True) + "\n"
			temporary = self.path.with_suffix(".tmp")
			temporary.write_text(text)
			temporary.replace(self.path)


_default: Baselines | None = None


def default_baselines() -> Baselines | None:
	"""The baselines set by the pytest plugin, or named by VPERF_BASELINES (None: none configured)."""
	if _default is not None:
		return _default
	path = os.environ.get(ENVIRONMENT_VARIABLE)
	return Baselines(path, update=bool(os.environ.get(UPDATE_VARIABLE))) if path else None


def set_default_baselines(baselines: Baselines | None) -> None:
	global _default
	_default = baselines
