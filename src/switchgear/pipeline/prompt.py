"""The Prompt stage: a chat request that names a managed template gets the template's messages,
rendered with its variables, before its own.

The reference follows OpenAI's Responses API ``prompt`` object (the openai client sends it in
``extra_body``): ``{"id": NAME, "version": N (optional), "variables": {NAME: text}}``; a
variable's value is a string or an ``input_text`` part. An unknown template is a 404 (as OpenAI
answers an unknown prompt id), bad variables a 400 naming the variable. Only the newest version
of a template serves: a request pinning another one is refused (400, ``prompt.version``) rather
than silently served something else. The rendered body no longer holds ``prompt``, so guards,
the cache key and the upstream see exactly the messages sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from switchgear.errors import InvalidRequest, PromptNotFound
from switchgear.exchange import Exchange, Operation
from switchgear.pipeline import Reply, Stage
from switchgear.sections.prompts import PromptTemplate

#: The fields of a prompt reference.
REFERENCE_FIELDS = frozenset({"id", "version", "variables"})


class Prompt(Stage):
    """Renders the template a chat request names, at the version this config serves."""

    def __init__(self, templates: Mapping[str, PromptTemplate],
                 versions: Mapping[str, int]) -> None:
        self.templates = templates
        #: Each template's version number in this config version (1 when none was counted).
        self.versions = versions

    async def __call__(self, exchange: Exchange) -> Reply:
        reference = exchange.body.get("prompt")
        if reference is not None and exchange.operation is Operation.CHAT:
            self.render(exchange, reference)
        return await self.next_stage(exchange)

    def render(self, exchange: Exchange, reference: Any) -> None:
        """Put the named template's messages before the request's own; note name and version."""
        if not isinstance(reference, dict) or not REFERENCE_FIELDS.issuperset(reference):
            raise InvalidRequest("prompt must be an object with id, and optionally version "
                                 "and variables.", param="prompt")
        name = reference.get("id")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("prompt.id must be a template name.", param="prompt.id")
        exchange.prompt_name = name[:64]
        template = self.templates.get(name)
        if template is None:
            raise PromptNotFound(f"Prompt with id '{name}' not found.", param="prompt.id")
        version = exchange.prompt_version = self.versions.get(name, 1)
        pinned = _version(reference.get("version"))
        if pinned is not None and pinned != version:
            raise InvalidRequest(f"Prompt '{name}' version {pinned} is not served: version "
                                 f"{version} is (only a template's newest version serves).",
                                 param="prompt.version")
        messages = template.render(_variables(reference.get("variables")))
        body = {key: value for key, value in exchange.body.items() if key != "prompt"}
        body["messages"] = [*messages, *(exchange.body.get("messages") or ())]
        exchange.body = body


def _version(value: Any) -> int | None:
    """A pinned version: an integer, or its digits as a string (as OpenAI's SDK sends it)."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidRequest("prompt.version must be a version number.", param="prompt.version")


def _variables(value: Any) -> dict[str, str]:
    """The variables as text: strings, or ``{"type": "input_text", "text": ...}`` parts."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest("prompt.variables must be an object of names and texts.",
                             param="prompt.variables")
    texts = {}
    for name, given in value.items():
        if isinstance(given, dict) and given.get("type") == "input_text":
            given = given.get("text")
        if not isinstance(given, str):
            raise InvalidRequest(f"prompt variable '{name}' must be a string or an input_text "
                                 "part.", param=f"prompt.variables.{name}")
        texts[name] = given
    return texts
