"""The app's modules import each other one way: a walk of every import (at the top of a module or
inside a function, which only hides a cycle) finds no cycle. No site needed."""

import ast
from pathlib import Path

import verenigingen_perf

PACKAGE = Path(verenigingen_perf.__file__).parent
NAME = PACKAGE.name


def module_name(path: Path) -> str:
	parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
	return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(module: str, path: Path, node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
	"""The app's modules one import statement names (a `from package import module` names the module)."""
	if isinstance(node, ast.Import):
		return {alias.name for alias in node.names if alias.name in modules}
	base = node.module or ""
	if node.level:
		package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
		package = package[: len(package) - node.level + 1]
		base = ".".join([*package, base] if base else package)
	found = set()
	for alias in node.names:
		child = f"{base}.{alias.name}"
		found.add(child if child in modules else base)
	return found & modules


def import_graph() -> dict[str, set[str]]:
	paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
	modules = set(paths)
	graph = {}
	for module, path in paths.items():
		edges = set()
		for node in ast.walk(ast.parse(path.read_text())):
			if isinstance(node, ast.Import | ast.ImportFrom):
				edges |= imported(module, path, node, modules)
		graph[module] = edges - {module}
	return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
	"""The strongly connected groups of more than one module (Tarjan, iteratively)."""
	index: dict[str, int] = {}
	low: dict[str, int] = {}
	stack: list[str] = []
	on_stack: set[str] = set()
	found = []
	counter = 0
	for root in sorted(graph):
		if root in index:
			continue
		work = [(root, iter(sorted(graph[root])))]
		index[root] = low[root] = counter
		counter += 1
		stack.append(root)
		on_stack.add(root)
		while work:
			node, edges = work[-1]
			for child in edges:
				if child not in index:
					index[child] = low[child] = counter
					counter += 1
					stack.append(child)
					on_stack.add(child)
					work.append((child, iter(sorted(graph[child]))))
					break
				if child in on_stack:
					low[node] = min(low[node], index[child])
			else:
				work.pop()
				if work:
					low[work[-1][0]] = min(low[work[-1][0]], low[node])
				if low[node] == index[node]:
					group = []
					while True:
						member = stack.pop()
						on_stack.discard(member)
						group.append(member)
						if member == node:
							break
					if len(group) > 1:
						found.append(sorted(group))
	return found


def test_the_walk_sees_the_imports():
	graph = import_graph()
	assert f"{NAME}.utils.performance.config" in graph[f"{NAME}.utils.performance.health"]
	# a function-level import counts as much as a top-level one
	assert f"{NAME}.utils.performance.alerts.store" in graph[f"{NAME}.install"]


def test_no_import_cycle():
	assert cycles(import_graph()) == []


def test_a_planted_cycle_is_found():
	assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
