"""The engine never imports the web layer (DESIGN.md: api/ imports scripts_engine, never back)."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).parents[1] / "scripts_engine"


def test_engine_does_not_import_http() -> None:
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in {"fastapi", "starlette", "api"}:
                    offenders.append(f"{path.name}: {name}")
    assert not offenders
