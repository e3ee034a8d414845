"""Loaded at interpreter start by the dev venv's .pth file.

Makes `import frappe` (and every `frappe.*` submodule) resolve to the very same module objects
as `monoframe`, and applies the runtime fixes (see fixes.py) right after `monoframe` has loaded.
Nothing here imports monoframe eagerly: pip and other tools in the venv stay unaffected.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

ALIAS = "frappe"
TARGET = "monoframe"


class _AliasLoader(importlib.abc.Loader):
	def __init__(self, target_name: str):
		self.target_name = target_name
		self.target_spec = None

	def create_module(self, spec):
		module = importlib.import_module(self.target_name)
		self.target_spec = module.__spec__
		return module

	def exec_module(self, module):
		# the target module is already executed; the alias only shares it. The import system has
		# just set the shared module's __spec__ to the alias's: give it back its own (tools that
		# locate a package by its spec, such as Jinja's PackageLoader, read it)
		module.__spec__ = self.target_spec


class _FixingLoader(importlib.abc.Loader):
	"""Wraps monoframe's own loader so the fixes run once the top-level package has executed."""

	def __init__(self, wrapped):
		self.wrapped = wrapped

	def create_module(self, spec):
		return self.wrapped.create_module(spec)

	def exec_module(self, module):
		self.wrapped.exec_module(module)
		from vperf_devruntime import fixes

		fixes.apply()


class _Finder(importlib.abc.MetaPathFinder):
	def find_spec(self, fullname, path=None, target=None):
		if fullname == ALIAS or fullname.startswith(ALIAS + "."):
			target_name = TARGET + fullname[len(ALIAS) :]
			is_package = importlib.util.find_spec(target_name) is not None and hasattr(
				importlib.import_module(target_name), "__path__"
			)
			return importlib.machinery.ModuleSpec(fullname, _AliasLoader(target_name), is_package=is_package)
		if fullname == TARGET:
			for finder in sys.meta_path:
				if finder is self:
					continue
				spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
				if spec is not None:
					spec.loader = _FixingLoader(spec.loader)
					return spec
		return None


def install() -> None:
	if not any(isinstance(f, _Finder) for f in sys.meta_path):
		sys.meta_path.insert(0, _Finder())


install()
