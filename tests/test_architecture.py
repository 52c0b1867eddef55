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
