"""The /admin/config endpoints: versions, diffs and change requests (governance/changes.py).

Readers and approvers may look; admins and operators propose, apply and roll back; admins and
approvers review; the roles of ``governance.break_glass_roles`` (admins by default) break
glass. The caller is who did it, as the audit trail names it (``actor_of``: the key id,
``bootstrap``, or ``anonymous`` when the gateway runs without keys, so that nobody can approve a
change there: the two-person rule needs people with keys). Every action is audited.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from switchgear.admission.keys import ApiKey, Role
from switchgear.errors import InvalidRequest, NotFound, PermissionDenied
from switchgear.gateway.admin import ADMIN_BODY_LIMIT, OPERATORS, READERS, AdminAPI, _query
from switchgear.gateway.http import Receive, Scope, Send, read_json, send_json, whole_number
from switchgear.governance.audit import actor_of
from switchgear.governance.changes import ConfigChanges, unified_diff
from switchgear.governance.versions import ChangeRequest

REVIEWERS = frozenset({Role.ADMIN, Role.APPROVER})
#: Who may read config versions and change requests: readers, and approvers (what they review).
CONFIG_READERS = READERS | {Role.APPROVER}
#: The largest version number asked for (a store's integers hold 63 bits).
MAX_VERSION = 2**62
#: The largest proposal body (a whole config).
PROPOSAL_BODY_LIMIT = max(ADMIN_BODY_LIMIT, 1024 * 1024)


#: The password in any ``scheme://user:password@`` URL of a config's YAML.
URL_PASSWORD = re.compile(r"([A-Za-z][\w+.-]*://[^\s:/?#@]*):[^\s/?#@]*@")


def redacted(text: str) -> str:
    """``text`` with the password of every URL in it as ``***`` (the store keeps the real one)."""
    return URL_PASSWORD.sub(r"\1:***@", text)


def _public(data: dict[str, Any]) -> dict[str, Any]:
    """A version's or change's JSON with URL passwords blotted out of its YAML and diff."""
    return {name: redacted(value) if name in ("config", "diff") and isinstance(value, str)
            else value for name, value in data.items()}


class Auditor(Protocol):
    """Where config actions go in the audit trail (``AdminAPI.audit``: who: ``key``; from where:
    ``scope``; what: ``action`` on ``target``)."""

    async def __call__(self, scope: Scope, key: ApiKey | None, action: str,
                       target: str | None = None,
                       details: Mapping[str, Any] | None = None) -> None: ...


class ConfigAdmin:
    """The /admin/config/* endpoints."""

    def __init__(self, admin: AdminAPI, changes: ConfigChanges, audit: Auditor) -> None:
        self.admin = admin
        self.changes = changes
        #: Called after each config action: config.propose, config.approve, config.reject,
        #: config.apply and config.break_glass (the audit trail logs that one loudly).
        self.audit = audit

    async def _applied(self, scope: Scope, key: ApiKey | None,
                       change: ChangeRequest) -> None:
        """Audit an apply: config.break_glass when it skipped approval."""
        await self.audit(scope, key, "config.break_glass" if change.break_glass
                         else "config.apply", change.change_id,
                         {"version": change.applied_version,
                          "sections": change.sections.split(",")})

    async def _proposed(self, scope: Scope, key: ApiKey | None,
                        change: ChangeRequest) -> None:
        await self.audit(scope, key, "config.propose", change.change_id,
                         {"sections": change.sections.split(","), "message": change.message,
                          "rollback_of": change.rollback_of})

    def _glass(self, key: ApiKey | None, requested: bool) -> bool:
        """``requested`` (break-glass), after checking that ``key``'s role may break glass
        (governance.break_glass_roles; PermissionDenied, 403, when it may not)."""
        allowed = self.admin.state.config.governance.break_glass_roles
        if requested and key is not None and key.role not in allowed:
            raise PermissionDenied(f"The {key.role} role may not break glass "
                                   f"(governance.break_glass_roles: {', '.join(allowed)}); "
                                   "ask for approval instead.")
        return requested

    async def show(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/config[?version=N]: a version's YAML (the newest by default) and which
        version this replica serves."""
        await self.admin.caller(scope, CONFIG_READERS)
        number = _int(_query(scope), "version")
        version = await self.changes.versions.get(number)
        if version is None:
            raise NotFound(f"No config version {number}.")
        await send_json(send, 200, {**_public(version.public()),
                                    "serving": self.admin.state.serving.version}, request_id)

    async def diff(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/config/diff?from=A&to=B: a unified diff of two versions' YAML (default:
        the newest against the one before)."""
        await self.admin.caller(scope, CONFIG_READERS)
        query = _query(scope)
        to = _int(query, "to") or (await self.changes.current()).version
        start = _int(query, "from") or max(1, to - 1)
        versions = self.changes.versions
        old, new = await versions.get(start), await versions.get(to)
        if old is None or new is None:
            raise NotFound(f"No config version {start if old is None else to}.")
        diff = unified_diff(old.config, new.config, f"version {start}", f"version {to}")
        await send_json(send, 200, {"from": start, "to": to, "diff": redacted(diff)}, request_id)

    async def history(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/config/history: the versions and the change requests, newest first."""
        await self.admin.caller(scope, CONFIG_READERS)
        versions = await self.changes.versions.history()
        changes = await self.changes.versions.changes()
        await send_json(send, 200, {
            "serving": self.admin.state.serving.version,
            "versions": [v.public(with_config=False) for v in versions],
            "changes": [{k: v for k, v in _public(c.public()).items() if k != "config"}
                        for c in changes]}, request_id)

    async def propose(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """POST /admin/config/changes {config | sections, message, break_glass}: propose a
        change (its diff in the answer); with break_glass, apply it at once."""
        key = await self.admin.caller(scope, OPERATORS)
        body = await _body(scope, receive, PROPOSAL_BODY_LIMIT)
        config, sections = body.get("config"), body.get("sections")
        for name, value in (("config", config), ("sections", sections)):
            if value is not None and not isinstance(value, dict):
                raise InvalidRequest(f"{name} must be a mapping", param=name)
        glass = self._glass(key, _flag(body, "break_glass"))
        change = await self.changes.propose(actor_of(key), _message(body), self.admin.state.local,
                                            config=config, sections=sections)
        await self._proposed(scope, key, change)
        if glass:
            change = await self.changes.apply(change.change_id, actor_of(key), break_glass=True,
                                              admin=_is_admin(key))
            await self._applied(scope, key, change)
        await send_json(send, 201, _public(change.public()), request_id)

    async def rollback(self, scope: Scope, receive: Receive, send: Send,
                       request_id: str) -> None:
        """POST /admin/config/rollback {version, message, break_glass}: propose going back to
        an earlier version (a change like any other); with break_glass, apply it at once."""
        key = await self.admin.caller(scope, OPERATORS)
        body = await _body(scope, receive, ADMIN_BODY_LIMIT)
        version = body.get("version")
        if (not isinstance(version, int) or isinstance(version, bool)
                or not 1 <= version <= MAX_VERSION):
            raise InvalidRequest("version must be a version number", param="version")
        glass = self._glass(key, _flag(body, "break_glass"))
        change = await self.changes.rollback(actor_of(key), _message(body),
                                             self.admin.state.local, version)
        await self._proposed(scope, key, change)
        if glass:
            change = await self.changes.apply(change.change_id, actor_of(key), break_glass=True,
                                              admin=_is_admin(key))
            await self._applied(scope, key, change)
        await send_json(send, 201, _public(change.public()), request_id)

    async def list_changes(self, scope: Scope, receive: Receive, send: Send,
                           request_id: str) -> None:
        """GET /admin/config/changes: the change requests, newest first."""
        await self.admin.caller(scope, CONFIG_READERS)
        changes = await self.changes.versions.changes()
        await send_json(send, 200, {"object": "list",
                                    "data": [_public(c.public()) for c in changes]}, request_id)

    async def get_change(self, scope: Scope, receive: Receive, send: Send,
                         request_id: str) -> None:
        """GET /admin/config/changes/{id}: one change request with its diff."""
        await self.admin.caller(scope, CONFIG_READERS)
        change = await self.changes.change(_path_id(scope))
        await send_json(send, 200, _public(change.public()), request_id)

    async def act(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """POST /admin/config/changes/{id}/review {approve, comment} (admins and approvers) or
        POST /admin/config/changes/{id}/apply {break_glass} (admins and operators)."""
        path = scope["path"].rstrip("/")
        change_id, action = _path_id(scope, path.rsplit("/", 1)[0]), path.rsplit("/", 1)[-1]
        if action == "review":
            key = await self.admin.caller(scope, REVIEWERS)
            body = await _body(scope, receive, ADMIN_BODY_LIMIT)
            approve = body.get("approve")
            if not isinstance(approve, bool):
                raise InvalidRequest("approve must be true or false", param="approve")
            comment = body.get("comment", "")
            if not isinstance(comment, str) or len(comment) > 4096:
                raise InvalidRequest("comment must be a string of at most 4096 characters",
                                     param="comment")
            change = await self.changes.review(change_id, actor_of(key), approve, comment)
            await self.audit(scope, key, f"config.{'approve' if approve else 'reject'}",
                             change_id, {"comment": comment,
                                         "after_break_glass": change.break_glass})
        elif action == "apply":
            key = await self.admin.caller(scope, OPERATORS)
            body = await _body(scope, receive, ADMIN_BODY_LIMIT)
            change = await self.changes.apply(
                change_id, actor_of(key), break_glass=self._glass(key, _flag(body, "break_glass")),
                admin=_is_admin(key))
            await self._applied(scope, key, change)
        else:
            raise NotFound(f"Unknown path: {scope['path']}")
        await send_json(send, 200, _public(change.public()), request_id)


async def _body(scope: Scope, receive: Receive, limit: int) -> dict[str, Any]:
    body = await read_json(scope, receive, limit)
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def _is_admin(key: ApiKey | None) -> bool:
    """Whether ``key`` is an admin's (or there are no keys: an open gateway on loopback)."""
    return key is None or key.role == Role.ADMIN


def _message(body: dict[str, Any]) -> str:
    message = body.get("message", "")
    if not isinstance(message, str) or len(message) > 4096:
        raise InvalidRequest("message must be a string of at most 4096 characters",
                             param="message")
    return message


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false", param=name)
    return value


def _int(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not whole_number(value) or not 1 <= int(value) <= MAX_VERSION:
        raise InvalidRequest(f"{name} must be a version number", param=name)
    return int(value)


def _path_id(scope: Scope, path: str | None = None) -> str:
    return (path or scope["path"].rstrip("/")).rsplit("/", 1)[-1]
