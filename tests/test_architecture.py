"""docs/ARCHITECTURE.md's module table is the map of the package: every module in it, nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_module_table_matches_the_tree():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    table = text[text.index("## Modules") :]
    table = table[: table.index("\n\n", table.index("| module |"))]
    named = []
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        named += re.findall(r"`([\w/]+\.py)`", first_cell)
    tree = sorted(str(p.relative_to(ROOT / "adavit_deploy")) for p in (ROOT / "adavit_deploy").rglob("*.py"))
    assert len(named) == len(set(named)), "a module is listed twice"
    assert sorted(named) == tree


def test_the_package_raises_only_its_own_errors_for_bad_input():
    """No bare ValueError / RuntimeError / KeyError escapes the library: the CLI prints its own errors
    (``AdaViTDeployError``) as one line, a builtin one as a traceback."""
    import ast

    bare = []
    for path in sorted((ROOT / "adavit_deploy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(call, ast.Name) and call.id in ("ValueError", "RuntimeError", "KeyError"):
                    bare.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert bare == []


def _imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports at import time (module level; lazy imports inside
    functions are how optional extras load and are left out)."""
    import ast

    pkg = ROOT / "adavit_deploy"
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                base = here
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
                for alias in node.names:
                    for cand in (f"{target}.{alias.name}", target):
                        if cand in names and cand != name:
                            deps.add(cand)
                            break
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in names and a.name != name}
        graph[name] = deps
    return graph


def test_the_import_graph_has_no_circle():
    """Data flows one way: no module imports (at import time) one that imports it back, directly or not."""
    graph = _imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError(" -> ".join([*path[path.index(dep):], dep]) if dep in path else f"{node} -> {dep}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert len(graph) > 40 and graph["adavit_deploy.export"] >= {"adavit_deploy.calibrate"}
