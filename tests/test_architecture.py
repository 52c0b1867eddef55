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
