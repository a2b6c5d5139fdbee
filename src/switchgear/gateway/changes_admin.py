"""GET /admin/changes: the applied config versions of a period beside the movement of p95
latency, error rate and cost per request around each (governance/impact.py)."""

from __future__ import annotations

from switchgear.errors import InvalidRequest
from switchgear.gateway.admin import READERS, AdminAPI, _period, _query
from switchgear.gateway.http import Receive, Scope, Send, send_json
from switchgear.governance.impact import DEFAULT_WINDOW, PERCENTILE, applied_changes
from switchgear.percentiles import METHOD

#: The longest side asked for, in seconds (a week).
MAX_WINDOW = 7 * 86400.0


class ChangesAdmin:
    """The /admin/changes endpoint."""

    def __init__(self, admin: AdminAPI) -> None:
        self.admin = admin

    async def changes(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/changes[?since&until&window_s=1800&tenant=T]: each version applied in
        the period (default: the last 24 hours), with the requests of ``window_s`` before and
        after it (operators and viewers: their tenant's requests)."""
        key = await self.admin.caller(scope, READERS)
        query = _query(scope)
        tenant = self.admin.tenant_scope(key, query.get("tenant"))
        period = _period(query)
        try:
            window = float(query.get("window_s", DEFAULT_WINDOW))
        except ValueError:
            window = -1.0
        if not 0 < window <= MAX_WINDOW:
            raise InvalidRequest(f"window_s must be seconds, more than 0 and at most "
                                 f"{MAX_WINDOW:g}", param="window_s")
        state = self.admin.state
        changes = await applied_changes(state.versions, state.store, period.start, period.end,
                                        window, tenant)
        await send_json(send, 200, {
            "object": "list", "since": period.start, "until": period.end, "window_s": window,
            "tenant": tenant, "latency": f"{METHOD} p{PERCENTILE} of end-to-end seconds of "
            "successful requests", "errors": "status 400 or more",
            "data": [change.report() for change in changes]}, request_id)
