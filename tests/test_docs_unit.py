"""The manual against the code: the README stays a front door, the generated reference pages
(docs/configuration.md, docs/api.md) are what `bench vperf docs` writes now, every whitelisted method
is documented, and every relative link of README.md and docs/*.md reaches an existing file and, with
an anchor, an existing heading (GitHub's slugs). No site needed."""

import re
import shutil
from pathlib import Path

import pytest

from verenigingen_perf import reference

ROOT = reference.REPOSITORY
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
REGENERATE = "regenerate with `devruntime/run vperf docs` (on a bench: `bench vperf docs`)"
# CI runs the test command the README starts with
README_START = "# verenigingen_perf\n\n```bash\ndevruntime/run main\ndevruntime/run test\n```\n"

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
	"""GitHub's anchor of a heading: its text without link targets and markup, lower case, punctuation
	other than '-' and '_' removed, each space a '-'."""
	text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
	return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
	"""Every heading's anchor, repeated headings numbered as GitHub numbers them (-1, -2, ...)."""
	seen: dict[str, int] = {}
	found = set()
	for line in _FENCE.sub("", text).splitlines():
		match = re.match(r"^#{1,6} +(.*?)#*\s*$", line)
		if not match:
			continue
		base = slug(match.group(1))
		count = seen.get(base, 0)
		seen[base] = count + 1
		found.add(base if count == 0 else f"{base}-{count}")
	return found


def relative_links(text: str) -> list[str]:
	"""The targets of the text's links that stay in the repository (no scheme, not in code)."""
	prose = _INLINE_CODE.sub("", _FENCE.sub("", text))
	return [t for t in _LINK.findall(prose) if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


def broken_links(page: Path) -> list[str]:
	broken = []
	for target in relative_links(page.read_text()):
		path_part, _hash, anchor = target.partition("#")
		path = (page.parent / path_part).resolve() if path_part else page
		if not path.exists():
			broken.append(f"{target}: no file {path}")
		elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
			broken.append(f"{target}: no heading #{anchor} in {path.name}")
	return broken


def test_the_readme_is_a_front_door():
	text = README.read_text()
	assert text.startswith(README_START)
	assert len(text.splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_its_heading(page):
	assert broken_links(page) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
	(tmp_path / "other.md").write_text(
		"# Other page\n\n## When `capture_cost` is high\n\n## Same\n\n## Same\n"
	)
	page = tmp_path / "page.md"
	page.write_text(
		"[ok](other.md) [ok](other.md#when-capture_cost-is-high) [ok](other.md#same-1) [ok](#here)\n"
		"[web](https://example.invalid/x) `[in code](nowhere.md)`\n\n## Here\n\n"
		"```text\n[in a fence](nowhere.md)\n```\n"
		"[gone](missing.md) [no heading](other.md#nothing) [split\nover lines](other.md#same-2)\n"
	)
	assert [b.split(":")[0] for b in broken_links(page)] == [
		"missing.md",
		"other.md#nothing",
		"other.md#same-2",
	]


@pytest.mark.parametrize(
	("heading", "anchor"),
	[
		("Database health (MariaDB, PostgreSQL and SQLite)", "database-health-mariadb-postgresql-and-sqlite"),
		(
			"Regression guards for any Frappe app (`verenigingen_perf.testing`)",
			"regression-guards-for-any-frappe-app-verenigingen_perftesting",
		),
		("Meta-monitoring: the monitor's own signals", "meta-monitoring-the-monitors-own-signals"),
		("Speed against 4e90f6e", "speed-against-4e90f6e"),
	],
)
def test_slugs_are_githubs(heading, anchor):
	assert slug(heading) == anchor


def test_the_generated_pages_are_current():
	assert reference.stale() == [], REGENERATE


def test_a_stale_page_is_found_and_rewritten(tmp_path):
	(tmp_path / "docs").mkdir()
	for page in reference.PAGES:
		shutil.copy(ROOT / page, tmp_path / page)
	page = tmp_path / "docs" / "configuration.md"
	page.write_text(
		page.read_text().replace("| `sampling_rate` | 0.1 / 0.5 / 1 |", "| `sampling_rate` | 0.2 |")
	)
	assert reference.stale(tmp_path) == ["docs/configuration.md"]
	assert reference.write(tmp_path) == ["docs/configuration.md"]
	assert reference.stale(tmp_path) == []
	assert page.read_text() == (ROOT / "docs" / "configuration.md").read_text()


def test_a_page_without_its_markers_is_refused():
	with pytest.raises(ValueError):
		reference.render("# A page\n\nnothing generated here\n", "generated\n")


def test_every_whitelisted_method_of_the_app_is_in_the_api_reference():
	api = (ROOT / "docs" / "api.md").read_text()
	whitelisted = re.compile(r"^@frappe\.whitelist\b[^\n]*\n(?:@[^\n]*\n)*(?:async )?def (\w+)\(", re.M)
	missing = []
	found = 0
	for path in sorted(reference.PACKAGE.rglob("*.py")):
		module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
		for name in whitelisted.findall(path.read_text()):
			found += 1
			if f"`{module}.{name}(" not in api:
				missing.append(f"{module}.{name}")
	assert found == len(reference.whitelisted_methods()) > 30
	assert missing == [], REGENERATE


def test_every_method_names_who_may_call_it():
	assert [m["path"] for m in reference.whitelisted_methods() if not m["roles"]] == []


def test_every_setting_has_its_row_in_the_configuration_reference():
	from verenigingen_perf.utils.performance import config

	text = (ROOT / "docs" / "configuration.md").read_text()
	for key in config.SETTINGS:
		assert f"\n| `{key}` | " in text, key


def test_the_bench_command_checks_and_writes(tmp_path, monkeypatch):
	from click.testing import CliRunner

	from verenigingen_perf.commands import vperf

	assert CliRunner().invoke(vperf, ["docs", "--check"]).exit_code == 0
	(tmp_path / "docs").mkdir()
	for page in reference.PAGES:
		(tmp_path / page).write_text(f"# {page}\n\n{reference.BEGIN}\n{reference.END}\n")
	monkeypatch.setattr(reference, "REPOSITORY", tmp_path)
	result = CliRunner().invoke(vperf, ["docs", "--check"])
	assert result.exit_code == 1
	assert "docs/api.md: out of date" in result.output
	assert CliRunner().invoke(vperf, ["docs"]).exit_code == 0
	assert reference.stale(tmp_path) == []
