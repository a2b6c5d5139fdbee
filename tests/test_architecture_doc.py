"""docs/architecture.md shows the pipeline as the one list the code builds, and stays so."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def declared(opening: str, closing: str) -> str:
    """The statement of gateway/state.py from the line ``opening`` to the line ``closing``
    (both indented as in ``_assemble``), dedented."""
    source = (ROOT / "src/switchgear/gateway/state.py").read_text()
    start = source.index(f"        {opening}\n")
    end = source.index(f"\n        {closing}\n", start) + len(closing) + 10
    return textwrap.dedent(source[start:end])


@pytest.mark.parametrize(("opening", "closing"), [("pipeline = chain(", ")"),
                                                  ("recorder = Recorder([", "])")])
def test_the_architecture_page_shows_the_lists_the_code_builds(opening: str,
                                                               closing: str) -> None:
    page = (ROOT / "docs/architecture.md").read_text()
    shown = textwrap.indent(declared(opening, closing), "    ")
    assert shown in page, f"docs/architecture.md should show, indented:\n{shown}"
