"""The app's layers import only what docs/architecture.md says they may: every import of every module
(the walk of test_imports_unit) is checked against the table below. No site needed.

A new module is placed by its folder (api/, alerts/, detection/, database/, ...); a new module directly
in utils/performance/ must be named here, and in docs/architecture.md, before this test passes.
"""

import pytest

from tests.test_imports_unit import NAME, import_graph

UP = f"{NAME}.utils.performance"

# layer -> the modules directly in utils/performance/ that belong to it
MODULES = {
	"foundation": {
		"schema",
		"config",
		"timeutil",
		"sketch",
		"statements",
		"bulk",
		"redis_store",
		"records",
		"schedule",
		"internal_errors",
		"job_reports",
		"levels",
		"operations",
		"storage",
		"messages",
	},
	"capture": {"capture"},
	"buffer": {"buffer"},
	"aggregates": {"rollup", "retention", "page_totals"},
	"judgements": {"health", "monitoring", "dashboard", "member_analysis", "operation_view", "trace_view"},
}
# layer -> the packages whose every module belongs to it
PACKAGES = {
	"foundation": (f"{UP}.config",),
	"sinks": (f"{UP}.export.otlp", f"{UP}.export.counters", f"{UP}.export.counter_store"),
	"database": (f"{UP}.database",),
	"judgements": (f"{UP}.detection", f"{UP}.alerts", f"{UP}.export"),
}
# what each layer may import (itself included)
MAY_IMPORT = {
	"foundation": {"foundation"},
	"capture": {"capture", "foundation", "buffer"},
	"buffer": {"buffer", "foundation"},
	"sinks": {"sinks", "foundation"},
	"database": {"database", "foundation"},
	"aggregates": {"aggregates", "foundation", "buffer", "database"},
	"judgements": {"judgements", "foundation", "capture", "buffer", "sinks", "database", "aggregates"},
	"entry": {"entry", "foundation", "capture", "buffer", "sinks", "database", "aggregates", "judgements"},
}


def layer(module: str) -> str | None:
	"""The layer of one of the app's modules; None for a module directly in utils/performance/ that
	is not placed yet."""
	if module.startswith(f"{UP}."):
		for name, packages in PACKAGES.items():
			if any(module == p or module.startswith(f"{p}.") for p in packages):
				return name
		rest = module[len(UP) + 1 :]
		return next((name for name, modules in MODULES.items() if rest in modules), None)
	if module in (NAME, f"{NAME}.utils", UP):
		return "foundation"
	# api/, commands, hooks, install, boot, patches/, testing/, reference, the doctypes' controllers
	return "entry"


def test_every_module_has_a_layer():
	unplaced = sorted(m for m in import_graph() if layer(m) is None)
	assert unplaced == [], f"place these in tests/test_layers_unit.py and docs/architecture.md: {unplaced}"


def test_every_import_is_one_its_layer_may_make():
	graph = import_graph()
	broken = [
		f"{module} ({layer(module)}) imports {target} ({layer(target)})"
		for module, targets in sorted(graph.items())
		for target in sorted(targets)
		if layer(module) and layer(target) and layer(target) not in MAY_IMPORT[layer(module)]
	]
	assert broken == []


@pytest.mark.parametrize(
	("module", "expected"),
	[
		(f"{UP}.capture", "capture"),
		(f"{UP}.export.otlp", "sinks"),
		(f"{UP}.export.prometheus", "judgements"),
		(f"{UP}.alerts.rules", "judgements"),
		(f"{UP}.database.snapshot", "database"),
		(f"{NAME}.api.performance", "entry"),
		(f"{UP}.not_placed_yet", None),
	],
)
def test_modules_are_placed_by_folder_or_name(module, expected):
	assert layer(module) == expected


def test_an_import_against_the_flow_is_refused():
	# the buffer handing its rows to the span export by import (instead of the drain sinks hook)
	assert "sinks" not in MAY_IMPORT["buffer"]
	assert "judgements" not in MAY_IMPORT["aggregates"]
