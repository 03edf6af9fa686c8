"""YAML data files with line numbers: errors in ``personas/`` and ``voices/`` name file, key, line.

Files are parsed with the safe loader only. Alongside the data we keep, for every key path,
the line it starts on, so a validation error deep in a file points at the line to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from scripts_engine.errors import CatalogError

KeyPath = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines)


def load_yaml(path: Path) -> tuple[Any, dict[KeyPath, int]]:
    """Parse a YAML file safely; return its data and the line of every key path.

    Raises:
        CatalogError: the file is missing, unreadable or not valid YAML (with its line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError("file not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read the file: {exc}", path=str(path)) from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> tuple[Any, dict[KeyPath, int]]:
    """Like :func:`load_yaml`, for text that is not (or not yet) a file; ``path`` names it.

    Raises:
        CatalogError: not valid YAML (with its line).
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise CatalogError(
            f"not valid YAML: {exc.problem or exc}", path=str(path), line=line
        ) from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"not valid YAML: {exc}", path=str(path)) from None
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


def line_of(lines: Mapping[KeyPath, int], path: KeyPath) -> int | None:
    """The line of the longest prefix of ``path`` that exists in the file."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def dotted(path: KeyPath) -> str:
    """``("tags", "silver", "rules", 0)`` -> ``tags.silver.rules[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate(model: type[M], data: Any, *, path: Path, lines: Mapping[KeyPath, int]) -> M:
    """Validate parsed YAML into a pydantic model, turning the first error into a CatalogError.

    All errors are listed in the message; the file position is the first error's.
    """
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        loc = tuple(p for p in first["loc"] if isinstance(p, str | int))
        # pydantic puts the union/validator name into loc for some errors; keep real keys only
        messages = []
        for err in errors:
            eloc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            messages.append(f"{dotted(eloc) or '(top level)'}: {err['msg']}")
        raise CatalogError(
            "; ".join(messages), path=str(path), key=dotted(loc) or None, line=line_of(lines, loc)
        ) from None
