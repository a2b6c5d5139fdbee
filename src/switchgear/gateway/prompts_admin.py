"""GET /admin/prompts and /admin/prompts/{name}: the managed prompt templates the serving
config holds, with their versions and the config versions that made them."""

from __future__ import annotations

from typing import Any

from switchgear.errors import PromptNotFound
from switchgear.gateway.admin import READERS, AdminAPI
from switchgear.gateway.http import Receive, Scope, Send, send_json
from switchgear.sections.prompts import PromptTemplate


def _summary(name: str, template: PromptTemplate, version: int) -> dict[str, Any]:
    return {"name": name, "version": version, "description": template.description,
            "variables": list(template.variables), "messages": len(template.messages)}


class PromptsAdmin:
    """The /admin/prompts endpoints."""

    def __init__(self, admin: AdminAPI) -> None:
        self.admin = admin

    async def list_prompts(self, scope: Scope, receive: Receive, send: Send,
                           request_id: str) -> None:
        """GET /admin/prompts: every template this replica serves, by name."""
        await self.admin.caller(scope, READERS)
        serving = self.admin.state.serving
        data = [_summary(name, template, serving.prompt_versions.get(name, 1))
                for name, template in sorted(serving.config.prompts.items())]
        await send_json(send, 200, {"object": "list", "config_version": serving.version,
                                    "data": data}, request_id)

    async def show(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/prompts/{name}: one template's messages, and when each of its versions
        was applied (among the newest 100 config versions)."""
        await self.admin.caller(scope, READERS)
        name = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        serving = self.admin.state.serving
        template = serving.config.prompts.get(name)
        if template is None:
            raise PromptNotFound(f"Prompt with id '{name}' not found.", param="name")
        history, last = [], None
        for version in reversed(await self.admin.state.versions.history()):
            number = version.prompt_versions.get(name)
            if number is not None and number != last:
                history.append({"version": number, "config_version": version.version,
                                "applied_at": version.applied_at,
                                "applied_by": version.applied_by})
            last = number
        await send_json(send, 200, {
            **_summary(name, template, serving.prompt_versions.get(name, 1)),
            "config_version": serving.version,
            "messages": [message.model_dump() for message in template.messages],
            "history": history[::-1]}, request_id)
