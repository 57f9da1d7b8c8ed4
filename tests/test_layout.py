"""The house's contract: each package imports only the packages below it, and no module grows past 300 lines.

Layers, lowest first: data (where the datasets are) -> cli (flags, result files) -> engine ->
router -> env -> agents -> serving; distill (draft training), train_router and the benchmarks sit on
top. A lower package importing a higher one
(even inside a function) fails here, so the README's layout table stays true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MAY_IMPORT: dict[str, set[str]] = {
    "data": set(),
    "cli": {"data"},
    "engine": {"data", "cli"},
    "router": {"data", "cli", "engine"},
    "distill": {"data", "cli", "engine"},
    "env": {"data", "cli", "engine", "router"},
    "agents": {"data", "cli", "engine", "router", "env"},
    "serving": {"data", "cli", "engine", "router", "env"},
    "train_router": {"data", "cli", "engine", "router", "env", "agents"},
    # the reliability bench serves tiny random models (tests/tiny_models.py)
    "bench": {"data", "cli", "engine", "router", "env", "agents", "serving", "tests"},
}
MAX_MODULE_LINES = 300


def _modules(package: str) -> list[Path]:
    single = REPO / f"{package}.py"
    return [single] if single.exists() else sorted((REPO / package).rglob("*.py"))


def _project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names)
    return found & (set(MAY_IMPORT) | {"tests"})


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_packages_import_only_downward(package: str) -> None:
    uphill = {
        f"{path.relative_to(REPO)} imports {imported}"
        for path in _modules(package)
        for imported in _project_imports(path) - MAY_IMPORT[package] - {package}
    }
    assert not uphill, f"{package} may import only {sorted(MAY_IMPORT[package])}: " + "; ".join(sorted(uphill))


def test_every_package_is_in_the_contract() -> None:
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").exists() and p.name != "tests"}
    assert packages <= set(MAY_IMPORT), f"packages missing from the layout contract: {sorted(packages - set(MAY_IMPORT))}"


def test_no_module_exceeds_300_lines() -> None:
    long = [
        f"{path.relative_to(REPO)}: {n} lines"
        for package in MAY_IMPORT
        for path in _modules(package)
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, "split these modules: " + "; ".join(long)
