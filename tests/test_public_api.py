"""The package's public API: what `swinv2_hf` exports exists, and the examples, the benchmarks' shared scripts and the
model-card generator use nothing else (a name they need is made public rather than reached for in a submodule)."""

from __future__ import annotations

import ast
from pathlib import Path

import swinv2_hf

ROOT = Path(__file__).resolve().parents[1]
USERS = sorted([*(ROOT / "examples").rglob("*.py"), ROOT / "model_cards" / "generate.py"])


def imports_from_package(path: Path) -> list[str]:
    """`module:name` for every name `path` imports from swinv2_hf or one of its submodules."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "swinv2_hf":
            found += [f"{node.module}:{alias.name}" for alias in node.names]
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("swinv2_hf.")]
    return found


def test_every_exported_name_exists() -> None:
    missing = [name for name in swinv2_hf.__all__ if not hasattr(swinv2_hf, name)]
    assert not missing
    assert len(set(swinv2_hf.__all__)) == len(swinv2_hf.__all__)


def test_examples_use_only_the_public_api() -> None:
    assert len(USERS) > 10  # the scan found the examples
    reaching_in = {
        str(path.relative_to(ROOT)): [name for name in imports_from_package(path) if not name.startswith("swinv2_hf:")]
        for path in USERS
    }
    assert {path: names for path, names in reaching_in.items() if names} == {}
    imported = {name.split(":")[1] for path in USERS for name in imports_from_package(path)}
    assert imported - set(swinv2_hf.__all__) == set()
