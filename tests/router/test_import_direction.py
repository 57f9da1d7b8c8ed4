"""Imports run one way: engine <- router <- env / agents <- serving <- bench (cli below them all)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "engine", "router", "env", "agents", "serving", "bench", "distill", "train_router")
# what each package may import of the project (itself aside)
ALLOWED = {
    "cli": set(),
    "engine": {"cli"},
    "router": {"engine", "cli"},
    "env": {"router", "engine", "cli"},
    "agents": {"env", "router", "engine", "cli"},
    "serving": {"agents", "env", "router", "engine", "cli"},
}


def project_imports(file: Path) -> set[str]:
    """The project packages a module imports, anywhere in it (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        found |= {name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = {f"{file.relative_to(REPO)} imports {sorted(bad)}"
             for file in sorted((REPO / package).rglob("*.py"))
             if (bad := project_imports(file) - ALLOWED[package] - {package})}
    assert not wrong, "\n".join(sorted(wrong))
