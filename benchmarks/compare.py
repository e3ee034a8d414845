"""Speed against a base commit, on this machine (the idea of `asv continuous`).

	devruntime/run bench compare --base 4e90f6e capture rollup api [--repeat 3] [--db sqlite]
	        [--args rollup="--rows 200000"] [--head-args api="--flood 0"]

Builds REF in a scratch worktree (`.devruntime/compare/<commit>`) with a runtime of its own (its own
virtualenv, services and sites, made by that commit's own `devruntime/setup.sh`), then runs each named
benchmark for the base and for the working tree in turns, `--repeat` times, alternating which goes
first (a machine that slows down during the run slows both alike). A benchmark's figures are the JSON
object of its last line.

For every figure both sides printed, it prints the base's and the working tree's median, their ratio
and each side's spread ((max - min) / median over the runs). The ratio is oriented so that above 1 is
better: base / head for a time, a size or an error, head / base for a throughput. A figure is marked
`worse` when its ratio is below 1 by more than the two spreads together, `better` when above 1 by as
much; the rest are within the noise. Figures that describe the run rather than the code (counts, the
machine's own request path) are listed as context, not judged. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / ".devruntime" / "compare"
# figures that describe the run or the machine, not the code under test
CONTEXT = {
	"plain_us_p50",
	"redis_push_us_p50",
	"direct_insert_us_p50",
	"settle_s",
	"batch10_process_rss_mb",
	"flood_requests_per_s",
}
HIGHER_IS_BETTER_SUFFIXES = ("_per_s",)
HIGHER_IS_BETTER = {"storage_ratio", "regression_recall_20pct", "regression_recall_50pct"}
LOWER_IS_BETTER_PARTS = ("_ms", "_us", "_mb", "_kb", "_bytes", "_err", "queries", "statements", "_ratio")
LOWER_IS_BETTER = {"retention_max_batch_s", "flood_operations", "eval_s_per_hour"}


def direction(figure: str) -> str | None:
	"""'higher' or 'lower' (which is better), or None for a figure that is context."""
	if figure in CONTEXT:
		return None
	if figure in HIGHER_IS_BETTER or figure.endswith(HIGHER_IS_BETTER_SUFFIXES):
		return "higher"
	if figure in LOWER_IS_BETTER or any(part in figure for part in LOWER_IS_BETTER_PARTS):
		return "lower"
	return None


def spread(values: list[float]) -> float:
	"""(max - min) / median: how much one side's runs disagree."""
	middle = statistics.median(values)
	return (max(values) - min(values)) / abs(middle) if middle else 0.0


@dataclass
class Comparison:
	benchmark: str
	figure: str
	base: float
	head: float
	ratio: float | None
	base_spread: float
	head_spread: float
	verdict: str


def compare(benchmark: str, figure: str, base_runs: list[float], head_runs: list[float]) -> Comparison:
	base, head = statistics.median(base_runs), statistics.median(head_runs)
	noise = spread(base_runs) + spread(head_runs)
	better = direction(figure)
	ratio = None
	if better == "higher" and base:
		ratio = head / base
	elif better == "lower" and head:
		ratio = base / head
	elif better == "lower" and not head:
		ratio = 1.0 if not base else float("inf")
	if ratio is None:
		verdict = "context" if better is None else "n/a"
	elif ratio < 1 - noise:
		verdict = "worse"
	elif ratio > 1 + noise:
		verdict = "better"
	else:
		verdict = "same"
	return Comparison(benchmark, figure, base, head, ratio, spread(base_runs), spread(head_runs), verdict)


def compare_runs(benchmark: str, base_runs: list[dict], head_runs: list[dict]) -> list[Comparison]:
	"""Every numeric figure both sides printed in every run."""
	figures = [
		key
		for key, value in head_runs[0].items()
		if isinstance(value, int | float)
		and not isinstance(value, bool)
		and all(isinstance(run.get(key), int | float) for run in base_runs + head_runs)
	]
	return [
		compare(benchmark, key, [run[key] for run in base_runs], [run[key] for run in head_runs])
		for key in figures
	]


def table(comparisons: list[Comparison]) -> str:
	lines = [
		"| benchmark | figure | base | head | ratio (>1 better) | spread base / head | verdict |",
		"|---|---|---|---|---|---|---|",
	]
	for c in comparisons:
		ratio = "" if c.ratio is None else f"{c.ratio:.2f}"
		lines.append(
			f"| {c.benchmark} | {c.figure} | {c.base:.4g} | {c.head:.4g} | {ratio} | "
			f"{c.base_spread:.0%} / {c.head_spread:.0%} | {c.verdict} |"
		)
	return "\n".join(lines)


# --- running ------------------------------------------------------------------------------------------


def git(*args: str, cwd: Path = REPO) -> str:
	return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def base_worktree(ref: str) -> Path:
	"""A worktree of `ref` under .devruntime/compare (made once, reused while the commit is the same)."""
	commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
	path = SCRATCH / commit[:12]
	if not (path / ".git").exists():
		SCRATCH.mkdir(parents=True, exist_ok=True)
		git("worktree", "add", "--detach", str(path), commit)
	return path


def run_benchmark(checkout: Path, name: str, db: str, extra: list[str], log: Path) -> dict:
	"""One run of a benchmark in a checkout's own runtime; its last JSON line."""
	command = [str(checkout / "devruntime" / "run"), "bench", name, "--db", db, *extra]
	env = {k: v for k, v in os.environ.items() if k not in ("DEVRUNTIME_WORK", "DEVRUNTIME_DB")}
	with open(log, "a") as out:
		out.write(f"$ {shlex.join(command)}\n")
		out.flush()
		result = subprocess.run(command, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=out, text=True)
		out.write(result.stdout)
	if result.returncode != 0:
		raise SystemExit(f"{name} failed in {checkout} (exit {result.returncode}); see {log}")
	for line in reversed(result.stdout.splitlines()):
		if line.startswith("{"):
			return json.loads(line)
	raise SystemExit(f"{name} printed no JSON line in {checkout}; see {log}")


def per_benchmark(items: list[str]) -> dict[str, list[str]]:
	"""`NAME="ARGS"` items as each benchmark's argument list."""
	parsed: dict[str, list[str]] = {}
	for item in items:
		name, _, rest = item.partition("=")
		parsed[name] = parsed.get(name, []) + shlex.split(rest)
	return parsed


def main() -> None:
	parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
	parser.add_argument("names", nargs="+", help="benchmarks (benchmarks/<name>.py)")
	parser.add_argument("--base", required=True, help="the commit to compare against")
	parser.add_argument("--repeat", type=int, default=3)
	parser.add_argument("--db", default="sqlite", choices=("sqlite", "mariadb", "postgres"))
	parser.add_argument(
		"--args",
		action="append",
		default=[],
		metavar='NAME="ARGS"',
		help="extra arguments of one benchmark, given to both sides (repeatable)",
	)
	parser.add_argument(
		"--head-args",
		action="append",
		default=[],
		metavar='NAME="ARGS"',
		help="extra arguments only the working tree's benchmark takes (an option the base lacks)",
	)
	args = parser.parse_args()
	extra = {"base": per_benchmark(args.args), "head": per_benchmark(args.args)}
	for name, more in per_benchmark(args.head_args).items():
		extra["head"][name] = extra["head"].get(name, []) + more
	base = base_worktree(args.base)
	log = SCRATCH / "compare.log"
	sides = {"base": base, "head": REPO}
	runs: dict[tuple[str, str], list[dict]] = {}
	for round_number in range(args.repeat):
		for name in args.names:
			order = ("base", "head") if round_number % 2 == 0 else ("head", "base")
			for side in order:
				figures = run_benchmark(sides[side], name, args.db, extra[side].get(name, []), log)
				runs.setdefault((name, side), []).append(figures)
				print(f"round {round_number + 1}, {name}, {side}: done", file=sys.stderr, flush=True)
	comparisons = [
		c for name in args.names for c in compare_runs(name, runs[(name, "base")], runs[(name, "head")])
	]
	print(
		f"base {git('rev-parse', '--short', args.base)}, head {git('rev-parse', '--short', 'HEAD')}"
		f"{' + working tree' if git('status', '--porcelain') else ''}, {args.db}, {args.repeat} runs each"
	)
	print(table(comparisons))
	worse = [f"{c.benchmark}.{c.figure}" for c in comparisons if c.verdict == "worse"]
	print(
		json.dumps(
			{
				"base": args.base,
				"db": args.db,
				"repeat": args.repeat,
				"worse": worse,
				"figures": [asdict(c) for c in comparisons],
			}
		)
	)


if __name__ == "__main__":
	main()
