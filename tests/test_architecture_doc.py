"""docs/architecture.md shows the pipeline as the one list the code builds, and stays so."""

from __future__ import annotations

import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def declared_pipeline() -> str:
    """The ``pipeline = chain(...)`` statement of gateway/state.py, dedented."""
    source = (ROOT / "src/switchgear/gateway/state.py").read_text()
    start = source.index("        pipeline = chain(\n")
    end = source.index("\n        )\n", start) + len("\n        )\n")
    return textwrap.dedent(source[start:end])


def test_the_architecture_page_shows_the_pipeline_the_code_builds() -> None:
    page = (ROOT / "docs/architecture.md").read_text()
    shown = textwrap.indent(declared_pipeline(), "    ")
    assert shown in page, f"docs/architecture.md should show, indented:\n{shown}"
