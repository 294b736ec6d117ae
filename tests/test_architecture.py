"""The architecture's rules, checked on the source (docs/architecture.md): what may import what, where task names may
be tested, and how long a function may grow."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("sdk", "deploy", "backends", "firmware_sim")
FAMILIES = ("demod", "link", "power", "prediction", "sinusoid")


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (relative imports do not occur here)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def is_benchmark(path: Path) -> bool:
    """Benchmarks and what runs them (the command line, the demos, the report): the code allowed to import benchmarks."""
    rel = relative(path)
    return rel.startswith(("sdk/bench/", "sdk/cli/")) or path.name in ("bench.py", "demo.py") or rel == "sdk/report.py"


def test_the_library_never_imports_the_command_line():
    offenders = [
        relative(p) for p in sources(*LIBRARY) if not relative(p).startswith("sdk/cli/") and any(m.startswith("metaedge.sdk.cli") for m in imports(p))
    ]
    assert offenders == []


def test_product_code_never_imports_benchmark_code():
    def benchmark_module(name: str) -> bool:
        return name.startswith("metaedge.sdk.bench") or name.endswith(".bench") or ".bench." in name

    offenders = [relative(p) for p in sources(*LIBRARY) if not is_benchmark(p) and any(benchmark_module(m) for m in imports(p))]
    assert offenders == []


def test_only_sdk_imports_torch():
    offenders = [relative(p) for p in sources("deploy", "backends", "firmware_sim") if any(m.split(".")[0] == "torch" for m in imports(p))]
    assert offenders == []


def test_task_names_are_tested_only_inside_the_families():
    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](%s)["']""" % "|".join(FAMILIES))
    offenders = [
        f"{relative(p)}:{i}"
        for p in sources(*LIBRARY)
        if not relative(p).startswith("sdk/families/")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_no_function_outside_the_tests_is_longer_than_60_lines():
    long = [
        f"{relative(p)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for p in sources(*LIBRARY)
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60
    ]
    assert long == []
