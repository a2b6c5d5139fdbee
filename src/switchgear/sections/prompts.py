"""Prompt templates: the config's ``prompts:`` section, and rendering one with a request's
variables (the ``Prompt`` stage renders; ``prompts/versions.py`` numbers them).

A template is a list of chat messages whose text may hold ``{{name}}`` placeholders. Rendering
replaces each placeholder with the value of its variable in one pass over the template's own
text: a value is inserted as it is, never read for placeholders itself, and never passed to
``str.format`` (a value holding ``{{other}}`` or ``{0.__class__}`` stays that text). Every
placeholder needs a value and every value a placeholder; otherwise the request is refused with
the variable's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from switchgear.errors import InvalidRequest

#: A placeholder: ``{{name}}``, spaces allowed inside the braces.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
#: What a template name looks like (it travels in requests and records).
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class TemplateMessage(BaseModel):
    """One message of a template: its role and its text, with ``{{name}}`` placeholders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(min_length=1)

    @field_validator("content")
    @classmethod
    def _placeholders_well_formed(cls, content: str) -> str:
        stray = PLACEHOLDER.sub("", content).find("{{")
        if stray >= 0:
            raise ValueError("'{{' must open a placeholder like {{name}} (a letter or _, then "
                             "letters, digits or _, then '}}')")
        return content


class PromptTemplate(BaseModel):
    """A named prompt template: the messages a request naming it gets before its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[TemplateMessage] = Field(min_length=1)
    description: str = ""

    @cached_property
    def variables(self) -> tuple[str, ...]:
        """The names of its placeholders, in order of first appearance."""
        names = (m.group(1) for message in self.messages
                 for m in PLACEHOLDER.finditer(message.content))
        return tuple(dict.fromkeys(names))

    @cached_property
    def _pieces(self) -> tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]:
        """Per message: its role, the text before the first placeholder, then each
        placeholder's name with the text that follows it."""
        pieces = []
        for message in self.messages:
            split = PLACEHOLDER.split(message.content)  # text, name, text, name, ..., text
            pieces.append((message.role, split[0],
                           tuple(zip(split[1::2], split[2::2], strict=True))))
        return tuple(pieces)

    def render(self, variables: Mapping[str, str]) -> list[dict[str, Any]]:
        """The template's messages with ``variables`` filled in (InvalidRequest naming a
        missing or unknown variable)."""
        wanted = self.variables
        missing = [name for name in wanted if name not in variables]
        if missing:
            raise InvalidRequest(f"Missing prompt variable '{missing[0]}': the template needs "
                                 f"{', '.join(wanted)}.", param=f"prompt.variables.{missing[0]}")
        unknown = [name for name in variables if name not in wanted]
        if unknown:
            raise InvalidRequest(
                f"Unknown prompt variable '{unknown[0]}': the template has "
                f"{', '.join(wanted) if wanted else 'no variables'}.",
                param=f"prompt.variables.{unknown[0]}")
        return [{"role": role,
                 "content": head + "".join(variables[name] + text for name, text in rest)}
                for role, head, rest in self._pieces]


def check_names(prompts: Mapping[str, PromptTemplate]) -> None:
    """Raise ValueError when a template name is not a short identifier."""
    for name in prompts:
        if not TEMPLATE_NAME.fullmatch(name):
            raise ValueError(f"prompt name {name!r}: letters, digits, '_', '.' or '-', at most "
                             "64, starting with a letter or digit")
