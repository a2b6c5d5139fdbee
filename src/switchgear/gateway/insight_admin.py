"""Admin endpoints the operator console reads beside the rest of the admin API: who a key is
(``/admin/whoami``), traffic and latency over time (``/admin/overview``) and the scorecard
(``/admin/scorecard``). Roles, tenant scoping and the audit of each access are AdminAPI's."""

from __future__ import annotations

from typing import Any

from switchgear.admission.keys import Role
from switchgear.gateway.admin import AdminAPI
from switchgear.gateway.http import Receive, Scope, Send, send_json

#: Every role: any valid key may ask who it is.
ANY_ROLE = frozenset(Role)


class InsightAdmin:
    """The console's read endpoints over the admin API's state and checks."""

    def __init__(self, admin: AdminAPI) -> None:
        self.admin = admin

    async def whoami(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/whoami: the caller's key as the admin API shows keys (never its secret),
        or ``open: true`` when the gateway runs without keys (everything is open then)."""
        key = await self.admin.caller(scope, ANY_ROLE)
        identity: dict[str, Any] = ({"open": True, "role": Role.ADMIN.value, "tenant": None}
                                    if key is None else {"open": False, **key.public()})
        await send_json(send, 200, {"object": "identity", **identity}, request_id)
