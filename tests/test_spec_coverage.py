"""docs/spec-coverage.md maps every normative statement of the two specifications to what checks it: the tests it
names exist, the conformance cases it names are in the suite (the table of bundle-format.md §17, itself kept equal
to the generated suite), and no statement is left without one."""

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
CASE = re.compile(r"`([a-z0-9*]+(?:-[a-z0-9*]+)+)`")  # hyphenated names: conformance cases (a * stands for any)


def rows() -> list[tuple[str, str, str]]:
    lines = (ROOT / "docs" / "spec-coverage.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("| ") and not line.startswith(("| doc", "|---"))]
    return [tuple(cell.strip() for cell in line.strip("|").split(" | ", 2)) for line in table]


def suite_cases() -> set[str]:
    spec = (ROOT / "docs" / "bundle-format.md").read_text()
    return set(re.findall(r"^\|[^|]*\|[^|]*\| `([^`]+)` \|", spec, re.M))


def test_every_statement_names_a_test_or_a_conformance_case():
    table = rows()
    assert len(table) > 250
    bare = [statement for _, statement, checked in table if not TEST.search(checked) and not CASE.search(checked)]
    assert bare == []


def test_every_named_test_exists():
    missing = []
    for _, _, checked in rows():
        for path, name in TEST.findall(checked):
            source = ROOT / path
            if not source.is_file() or f"def {name}(" not in source.read_text():
                missing.append(f"{path}::{name}")
    assert missing == []


def test_every_named_case_is_in_the_suite():
    cases = suite_cases()
    assert len(cases) > 90
    unknown = [name for _, _, checked in rows() for name in CASE.findall(checked) if not fnmatch.filter(cases, name)]
    assert unknown == []
