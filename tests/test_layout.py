"""Imports run one way: compara (the commands, the comparison) → the stages (ingest, rag,
finetune) → core. Checked on the source, so an import inside a function counts too; only
type hints under ``if TYPE_CHECKING:`` may name a module above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "rag", "finetune")
# What each layer must not import.
FORBIDDEN = {"core": ("compara", *STAGES), **{stage: ("compara",) for stage in STAGES}}


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, allow_type_checking: bool) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``path``; with
    ``allow_type_checking``, those under ``if TYPE_CHECKING:`` are left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped: set[int] = set()
    if allow_type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _type_checking(node.test):
                for child in node.body:
                    skipped.update(id(n) for n in ast.walk(child))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, top in imports(path, allow_type_checking=package != "core"):
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    assert (ROOT / package / "__init__.py").is_file()
    assert violations(package) == []


def test_type_checking_imports_are_the_only_exception(tmp_path):
    hinted = tmp_path / "hinted.py"
    hinted.write_text("from typing import TYPE_CHECKING\n"
                      "if TYPE_CHECKING:\n    from compara.config import ExperimentConfig\n"
                      "def f():\n    from compara.plan import plan\n")
    assert imports(hinted, allow_type_checking=True) == [(1, "typing"), (5, "compara")]
    assert len(imports(hinted, allow_type_checking=False)) == 3
