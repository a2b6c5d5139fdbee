"""README.md's fenced blocks, for the tests that load its examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(*languages: str) -> list[tuple[int, str]]:
    """(line number, text) of every fenced block in README.md in one of ``languages``."""
    found, lines = [], README.read_text().splitlines()
    opening = None
    for number, line in enumerate(lines, 1):
        if opening is None and line.startswith("```") and line[3:].strip() in languages:
            opening = number
        elif opening is not None and line.startswith("```"):
            found.append((opening, "\n".join(lines[opening:number - 1])))
            opening = None
    return found


def yaml_section(name: str) -> Any:
    """The ``name`` section of the README's YAML block that consists of that section alone."""
    for _, text in blocks("yaml"):
        data = yaml.safe_load(text)
        if isinstance(data, dict) and list(data) == [name]:
            return data[name]
    raise LookupError(f"README.md has no YAML block of the {name} section alone")
