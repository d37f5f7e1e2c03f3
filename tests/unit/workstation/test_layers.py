"""Inside workstation: qt → render → model (ARCHITECTURE.md). import-linter's contract in
pyproject covers "never server"; this checks the inner layers by reading the imports."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3] / "workstation"
FORBIDDEN = {
    "model": ("PySide6", "vtk", "workstation.qt", "workstation.render", "server"),
    "render": ("PySide6", "workstation.qt", "server"),
    "qt": ("server",),
}


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_layers() -> None:
    bad = []
    for layer, forbidden in FORBIDDEN.items():
        for path in (ROOT / layer).rglob("*.py"):
            for name in _imports(path):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, bad
