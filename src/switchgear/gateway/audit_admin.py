"""GET /admin/audit/verify: check the audit trail's hash chain as ``switchgear audit verify``
does (governance/verify.py), with the gateway's own audit key, and say what was found.

The whole trail is read and its HMACs computed in a worker thread, so the event loop (and the
requests it serves) never waits on the check.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from switchgear.config import ConfigError
from switchgear.errors import InvalidRequest
from switchgear.gateway.admin import ADMINS, AdminAPI, _query
from switchgear.gateway.http import Receive, Scope, Send, send_json
from switchgear.governance.audit import chain
from switchgear.governance.secret import key_id
from switchgear.governance.verify import Verdict, parse_anchor, verify


class AuditAdmin:
    """The /admin/audit/verify endpoint."""

    def __init__(self, admin: AdminAPI) -> None:
        self.admin = admin

    async def verify(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/audit/verify[?anchor=SEQ:HASH] (admins): ``intact`` (checked with the
        trail's key, nothing tampered), the entries read, the head to keep as a later check's
        anchor, the first tampering or the wrong key, and a one-line ``verdict``."""
        await self.admin.caller(scope, ADMINS)
        text = _query(scope).get("anchor")
        try:
            anchor = None if not text else parse_anchor(text)
        except ValueError as error:
            raise InvalidRequest(str(error), param="anchor") from None
        trail = self.admin.state.audit
        checked_at = time.time()
        try:
            secret = trail.key.load(create=False)
        except ConfigError as error:
            await send_json(send, 200, {"checked": False, "intact": False, "checked_at":
                                        checked_at, "verdict": f"NOT CHECKED: {error}"},
                            request_id)
            return
        entries = await chain(trail.store)
        verdict = await asyncio.to_thread(verify, entries, secret, anchor)
        await send_json(send, 200, {"checked": verdict.wrong_key is None,
                                    "checked_at": checked_at, "key_id": key_id(secret),
                                    **report(verdict)}, request_id)


def report(verdict: Verdict) -> dict[str, Any]:
    """A verdict as JSON, with its one line in words."""
    head, tampering, wrong = verdict.head, verdict.tampering, verdict.wrong_key
    if wrong is not None:
        line = f"NOT CHECKED, wrong key: {wrong.describe('the gateway holds')}"
    elif tampering is not None:
        line = f"TAMPERED: {tampering}"
    elif head is None:
        line = "intact: no entries yet"
    else:
        line = f"intact: {verdict.length} entries"
    return {
        "intact": verdict.intact, "entries": verdict.length, "verdict": line,
        "head": None if head is None else {"seq": head.seq, "hash": head.hash, "at": head.at},
        "anchor": None if head is None or not verdict.intact else f"{head.seq}:{head.hash}",
        "tampering": None if tampering is None else {
            "seq": tampering.seq, "kind": tampering.kind, "detail": tampering.detail},
        "wrong_key": None if wrong is None else {"given": wrong.given, "trail": wrong.trail},
    }
