"""The docs name every flag, space-file key, parameter and Parquet column, and their links lead somewhere.

What is checked comes from the code (the argparse parser, the space dataclasses, ``PARAMS``, the Arrow
schemas), so a new flag, key or column fails here until its line is written in ``docs/``. No Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import unicodedata
from pathlib import Path

import pytest

from tune_tl.cli import _parser
from tune_tl.config import PARAMS, BackboneSpec, BudgetSpec, DataSpec, SearchSpec
from tune_tl.store import schema

try:
    from tune_tl.config import SelectionSpec
except ImportError:  # not re-exported (yet): where it lives today
    from tune_tl.config.space import SelectionSpec

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: The space file's sections: top-level key -> the dataclass whose fields are its keys.
SECTIONS = {"data": DataSpec, "backbone": BackboneSpec, "budget": BudgetSpec, "backbone_selection": SelectionSpec}
SNIPPET = re.compile(r'^--8<--\s+"([^"]+)"\s*$')
FENCE = re.compile(r"^\s*(```|~~~)")


def _read(path: Path) -> str:
    """A page's text with its snippet includes (``--8<-- "file"``, relative to the repository root) expanded."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = SNIPPET.match(line)
        lines.append(_read(ROOT / match.group(1)) if match else line)
    return "\n".join(lines)


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code:
            out.append(line)
    return out


def _sections(text: str, level: int = 2) -> dict[str, str]:
    """Heading text -> the text under it, down to the next heading of the same or a higher level."""
    marks = "#" * level + " "
    out, title, body = {}, None, []
    for line in _prose(text):
        if re.match(rf"^#{{1,{level}}} ", line):
            if title is not None:
                out[title] = "\n".join(body)
            title, body = (line[len(marks):].strip() if line.startswith(marks) else None), []
        else:
            body.append(line)
    if title is not None:
        out[title] = "\n".join(body)
    return out


def _first_cells(text: str) -> list[set[str]]:
    """The backticked names in the first cell of each table row (a cell may name several)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            first = line.split("|")[1]
            rows.append(set(re.findall(r"`([^`]+)`", first)))
    return rows


def _names_in_tables(text: str) -> set[str]:
    return set().union(*_first_cells(text)) if text else set()


# --- the command line ------------------------------------------------------------------------------

def _commands() -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert actions, "tune-tl has no subcommands?"
    return dict(actions[0].choices)


def _arguments(command: argparse.ArgumentParser) -> list[str]:
    """Each flag by its longest spelling; each positional by its metavar (or dest), upper case."""
    names = []
    for action in command._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            names.append(max(action.option_strings, key=len))
        else:
            names.append((action.metavar or action.dest).upper())
    return names


def _cli_sections() -> dict[str, str]:
    """``docs/cli.md``'s sections by command: ``## `tune-tl search` `` -> its text."""
    out = {}
    for title, body in _sections(_read(DOCS / "cli.md")).items():
        match = re.fullmatch(r"`tune-tl ([a-z-]+)`", title)
        if match:
            out[match.group(1)] = body
    return out


def test_every_command_has_its_section_in_the_cli_page_and_no_section_names_a_missing_command():
    assert set(_cli_sections()) == set(_commands())


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_flag_of_a_command_is_in_its_section_of_the_cli_page(name):
    body = _cli_sections().get(name, "")
    missing = [arg for arg in _arguments(_commands()[name]) if not re.search(rf"`{re.escape(arg)}(\.\.\.)?[` =\[]", body)]
    assert not missing, f"docs/cli.md, section `tune-tl {name}`: document {missing}"


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_flag_the_cli_page_lists_exists(name):
    real = {a for a in _arguments(_commands()[name]) if a.startswith("--")}
    listed = {re.match(r"--[a-z-]+", n).group() for n in _names_in_tables(_cli_sections().get(name, "")) if n.startswith("--")}
    assert listed <= real, f"docs/cli.md, section `tune-tl {name}`: no such flag {sorted(listed - real)}"


def test_the_readme_names_every_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name for name in _commands() if f"`tune-tl {name}" not in readme]
    assert not missing, f"README.md: add a line for {missing}"


def test_the_readme_shows_the_test_command_that_ci_runs():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    pytest_lines = [line for line in ci if "-m pytest" in line and not line.startswith("#")]
    assert pytest_lines, ".ci/run runs no pytest command"
    assert pytest_lines[-1] in (ROOT / "README.md").read_text(encoding="utf-8")


# --- space files -------------------------------------------------------------------------------------

def _spaces() -> str:
    return _read(DOCS / "spaces.md")


def test_every_top_level_key_of_a_space_file_is_documented():
    fields = {f.name for f in dataclasses.fields(SearchSpec)}
    keys = {"seed", "params", *SECTIONS}
    assert keys <= fields, f"SearchSpec lost {sorted(keys - fields)}: update SECTIONS in this test"
    missing = [key for key in sorted(keys) if f"`{key}`" not in _spaces()]
    assert not missing, f"docs/spaces.md: document the top-level key(s) {missing}"


def test_every_key_of_every_space_section_is_documented():
    documented = _names_in_tables(_spaces())
    keys = [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    missing = [key for key in keys if key not in documented]
    assert not missing, f"docs/spaces.md: add a table row for {missing}"


def test_every_parameter_has_a_row_in_the_space_page_and_every_row_is_a_parameter():
    sections = _sections(_spaces())
    rows = _names_in_tables(sections.get("Parameters", "") + "\n" + sections.get("Recipe parameters", ""))
    params = set(PARAMS) - {"backbone"}  # set through backbone.name, never under params
    assert not params - rows, f"docs/spaces.md: add a row for {sorted(params - rows)}"
    assert not rows - params, f"docs/spaces.md: no such parameter {sorted(rows - params)}"


# --- Parquet columns ---------------------------------------------------------------------------------

def _results_section(title: str) -> set[str]:
    return _names_in_tables(_sections(_read(DOCS / "results.md")).get(title, ""))


@pytest.mark.parametrize("title, table", [("`epochs`", "EPOCH_SCHEMA"), ("`recheck`", "RECHECK_SCHEMA")])
def test_every_column_of_a_table_is_documented_and_every_documented_column_exists(title, table):
    columns = set(getattr(schema, table).names)
    documented = _results_section(title)
    assert not columns - documented, f"docs/results.md, {title}: document {sorted(columns - documented)}"
    assert not documented - columns, f"docs/results.md, {title}: no such column {sorted(documented - columns)}"


def test_every_trials_column_is_documented_there_or_is_a_parameter_of_the_space_page():
    columns = set(schema.TRIAL_SCHEMA.names)
    documented = _results_section("`trials`")
    params = _names_in_tables(_spaces())
    missing = sorted(c for c in columns if c not in documented and not (c in PARAMS and c in params))
    assert not missing, f"docs/results.md, `trials`: document {missing}"
    assert not documented - columns, f"docs/results.md, `trials`: no such column {sorted(documented - columns)}"


# --- links -------------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[(?:[^\]`]|`[^`]*`)*\]\(([^)\s]+)\)")
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "BENCHMARKS.md", *sorted(DOCS.glob("*.md"))]


def _heading_text(line: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip())
    return text.replace("`", "").replace("*", "")


def _slugs(path: Path) -> set[str]:
    """Each heading's anchor as MkDocs (Python-Markdown's toc) and as GitHub make it."""
    slugs = set()
    for line in _prose(_read(path)):
        if re.match(r"^#{1,6} ", line):
            text = _heading_text(line)
            ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
            slugs.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", ascii_text).strip().lower()))
            slugs.add(re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-"))
    return slugs


def _links(path: Path) -> list[str]:
    text = "\n".join(re.sub(r"`[^`]*`", "``", line) if "](" not in line else line for line in _prose(_read(path)))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in _links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _slugs(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_link_check_sees_links_and_headings():
    """Guards the check itself: a page with links must yield them, and headings must yield anchors."""
    assert "docs/cli.md" in _links(ROOT / "README.md")
    assert "tune-tl-search" in _slugs(DOCS / "cli.md")
    assert "storage-classes-kuberay" in _slugs(DOCS / "cluster-configs.md")  # through the snippet include


def _unnamed_modules(layout: str) -> list[str]:
    """The package's modules whose file name is not written in backticks in ``layout`` (``__init__.py`` aside)."""
    modules = sorted(p for p in (ROOT / "tune_tl").rglob("*.py") if p.name != "__init__.py")
    return [str(p.relative_to(ROOT)) for p in modules if not re.search(rf"`(?:[\w/]*/)?{re.escape(p.name)}`", layout)]


def test_contributing_names_every_module_of_the_package():
    layout = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert not _unnamed_modules(layout), f"CONTRIBUTING.md's package layout lacks {_unnamed_modules(layout)}: add a line each"
    assert "tune_tl/search/probes.py" in _unnamed_modules(layout.replace("`probes.py`", "probes"))  # the check sees a gap
