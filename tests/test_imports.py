"""Package boundaries and import order: every module imports alone, the boundaries hold, no cycles.

Importing each module "alone" costs one fresh interpreter per package, not per module: the
interpreter imports the package's modules one at a time, removing every project module from
``sys.modules`` before each (third-party modules stay loaded, so this is fast). A module that only
imports because another project module happened to be imported first, in either order, fails here.
After each import the project packages it loaded are recorded, which is what the boundary tests
check. The cycle test reads every import statement with ``ast``, without importing anything:
those in functions count too (moving an import into a function hides a cycle, it does not remove
it), those under ``if TYPE_CHECKING:`` do not.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "losses", "datasets", "hydra_plugins")
SCRIPTS = "scripts"

# Run in a fresh interpreter: argv[1] is a JSON list of [module name, file]; prints, per module,
# the error of importing it alone or the project packages loaded after importing it.
_IMPORT_EACH_ALONE = """
import importlib, importlib.util, json, sys, traceback
PROJECT = {packages!r}
def project(name):
    return name.split(".")[0] in PROJECT or name.startswith("{scripts}.")
out = {{}}
for name, path in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if project(m)]:
        del sys.modules[loaded]
    try:
        if name.startswith("{scripts}."):  # scripts/ is a folder of programs, not a package
            spec = importlib.util.spec_from_file_location(name, path)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        else:
            importlib.import_module(name)
    except BaseException:
        out[name] = {{"error": traceback.format_exc()}}
        continue
    out[name] = {{"loaded": sorted({{m.split(".")[0] for m in sys.modules if project(m)}})}}
print(json.dumps(out))
"""


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(top: str) -> dict[str, Path]:
    """The modules of a top-level package (or of ``scripts/``), by dotted name."""
    return {module_name(p): p for p in sorted((ROOT / top).rglob("*.py"))}


def import_each_alone(files: dict[str, Path]) -> dict[str, dict]:
    script = _IMPORT_EACH_ALONE.format(packages=PACKAGES, scripts=SCRIPTS)
    todo = json.dumps([[name, str(path)] for name, path in files.items()])
    proc = subprocess.run(
        [sys.executable, "-c", script, todo], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def imported() -> dict[str, dict[str, dict]]:
    """``{package: {module: {"loaded": [...]} or {"error": traceback}}}``, from one interpreter."""
    results = import_each_alone(
        {name: path for top in (*PACKAGES, SCRIPTS) for name, path in modules(top).items()}
    )
    return {top: {name: results[name] for name in modules(top)} for top in (*PACKAGES, SCRIPTS)}


@pytest.mark.parametrize("top", [*PACKAGES, SCRIPTS])
def test_every_module_imports_alone(imported, top):
    results = imported[top]
    assert results
    failed = {name: r["error"] for name, r in results.items() if "error" in r}
    assert not failed, "\n".join(f"importing {name} alone fails:\n{tb}" for name, tb in failed.items())


@pytest.mark.parametrize("top", ["losses", "datasets"])
def test_losses_and_datasets_never_import_bench(imported, top):
    offenders = [name for name, r in imported[top].items() if "bench" in r.get("loaded", ())]
    assert not offenders, f"{offenders} import bench; {top}/ must stand alone (see DESIGN.md)"


def test_results_package_never_imports_datasets(imported):
    """The tables read records (and W&B) only; what they need, the evaluator writes into the record.
    So neither the results package nor what it imports (protocols, metrics, the W&B logger's keys)
    pulls in a dataset module."""
    results = {
        name: r
        for name, r in imported["bench"].items()
        if name.split(".")[:2] == ["bench", "results"]
        or name in ("bench.protocols", "bench.metrics", "bench.logger")
    }
    assert len(results) > 4
    offenders = [name for name, r in results.items() if "datasets" in r.get("loaded", ())]
    assert not offenders, f"{offenders} import datasets; what a table needs belongs in the record"


def _imports(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, in functions too (a function-local import that closes a
    cycle only hides it), except in ``if TYPE_CHECKING:`` blocks (never run)."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [node]
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        return [i for child in node.orelse for i in _imports(child)]
    return [i for child in ast.iter_child_nodes(node) for i in _imports(child)]


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the project modules it imports (``from pkg import mod`` → ``pkg.mod``)."""
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                source = ".".join([*base, *([node.module] if node.module else [])])
                targets = [
                    f"{source}.{a.name}" if f"{source}.{a.name}" in files else source for a in node.names
                ]
            for target in targets:  # the most specific project module named
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def cyclic_components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = {stack.pop()}
            while v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the first module of ``component`` back to it (breadth-first)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {component}")


def test_cyclic_components_and_a_cycle_through_each():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d", "b"}, "d": set(), "e": {"d"}, "f": {"g"}, "g": {"f"}}
    found = sorted(cyclic_components(graph), key=min)
    assert found == [{"a", "b", "c"}, {"f", "g"}]
    assert [cycle_through(graph, c) for c in found] == [["a", "b", "c", "a"], ["f", "g", "f"]]
    assert cyclic_components({"a": {"b"}, "b": set()}) == []


def test_import_graph_reads_relative_and_package_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from . import a\nfrom .b import X\n")
    (tmp_path / "pkg" / "a.py").write_text(
        "import os\nclass K:\n    from pkg import b\n"
        "def f():  # hides the cycle a -> c -> a\n    from . import c\n"
    )
    (tmp_path / "pkg" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    (tmp_path / "pkg" / "c.py").write_text("try:\n    import pkg.a as a\nexcept ImportError:\n    pass\n")
    files = {"pkg": tmp_path / "pkg/__init__.py", **{f"pkg.{m}": tmp_path / f"pkg/{m}.py" for m in "abc"}}
    graph = import_graph(files)
    assert graph == {
        "pkg": {"pkg.a", "pkg.b"},
        "pkg.a": {"pkg.b", "pkg.c"},
        "pkg.b": set(),
        "pkg.c": {"pkg.a"},
    }
    assert cyclic_components(graph) == [{"pkg.a", "pkg.c"}]
    (tmp_path / "pkg" / "c.py").write_text("import sys\n")
    assert cyclic_components(import_graph(files)) == []


def test_no_import_cycle_among_project_modules():
    files = {name: path for top in (*PACKAGES, SCRIPTS) for name, path in modules(top).items()}
    graph = import_graph(files)
    found = cyclic_components(graph)
    assert not found, "import cycle(s): " + "; ".join(" -> ".join(cycle_through(graph, c)) for c in found)
