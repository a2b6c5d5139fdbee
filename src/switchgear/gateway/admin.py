"""The admin API: keys, records, costs, routing state, SLOs and quality signals, each endpoint
checking the caller's role.

A tenant's operator or viewer sees only that tenant; an admin sees every tenant. In open mode
(loopback only, no keys) every endpoint is open, as the start-up log says.

Audited (governance/audit.py): key creation and revocation, each key's access (its first call,
then at most one entry per ``governance.audit_access_interval_s`` per key and client address,
counting the calls in between), refusals by role and failed authentication (at most one entry per
interval per address). An action, or an access, that cannot be recorded is refused with a 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from switchgear.admission.keys import ApiKey, KeyLimits, Role
from switchgear.admission.tiers import GateSnapshot
from switchgear.capacity.sizing import PlannerSizer
from switchgear.config import Config, ConfigError
from switchgear.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    Overloaded,
    PermissionDenied,
)
from switchgear.gateway.http import (
    Receive,
    Scope,
    Send,
    bearer_token,
    read_json,
    send_body,
    send_json,
    whole_number,
)
from switchgear.gateway.state import AppState
from switchgear.governance.audit import ANONYMOUS
from switchgear.governance.throttle import Throttle
from switchgear.governance.versions import serving_config
from switchgear.ledger.cost import PriceBook
from switchgear.ledger.focus import focus_export
from switchgear.ledger.report import cost_report, period_of
from switchgear.ledger.rollup import DIMENSIONS, PEAK_GRAIN_S, Dimension, peak_grain
from switchgear.store.base import StoreUnavailable
from switchgear.store.queries import Period
from switchgear.telemetry.latency import GROUPS, latency_report

log = logging.getLogger("switchgear.audit")

READERS = frozenset({Role.ADMIN, Role.OPERATOR, Role.VIEWER})
ADMINS = frozenset({Role.ADMIN})
OPERATORS = frozenset({Role.ADMIN, Role.OPERATOR})
#: Largest admin request body.
ADMIN_BODY_LIMIT = 64 * 1024
#: Longest a key may live, in seconds (ten years).
MAX_KEY_LIFETIME = 10 * 365 * 86400
#: The fields POST /admin/keys takes; any other is refused with a 400.
KEY_FIELDS = ("tenant", "name", "role", "scopes", "feature", "tier", "expires_in_s", "limits",
              "budget")
#: A key's own ``limits`` (requests and tokens per minute) and ``budget`` (currency per UTC day
#: and month), and the largest value each may take.
KEY_RATES, KEY_BUDGETS = ("rpm", "tpm"), ("daily", "monthly")
MAX_KEY_LIMIT = 10**12
#: The latency report's window when none is asked for, in seconds (a day).
DEFAULT_LATENCY_WINDOW = 86400.0


def _query(scope: Scope) -> dict[str, str]:
    return {name: values[-1] for name, values in
            parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}


class AdminAPI:
    """The /admin/* endpoints over the app state."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.throttle = Throttle(state.config.governance.audit_access_interval_s)

    async def caller(self, scope: Scope, roles: frozenset[Role]) -> ApiKey | None:
        """The verified key of the caller if its role is one of ``roles`` (None in open mode);
        the access, a refusal or a failed authentication goes to the audit trail."""
        token = bearer_token(scope)
        try:
            key = await self.state.authenticator.verify(token)
        except AuthenticationFailed:
            await self._note(scope, None, "admin.auth_failed", {"presented": _hint(token)})
            raise
        if key is None:
            return None
        if key.role not in roles:
            await self._note(scope, key, "admin.denied")
            raise PermissionDenied(f"A {key.role.value} key cannot do this.")
        await self._note(scope, key, "admin.access")
        return key

    async def audit(self, scope: Scope, key: ApiKey | None, action: str,
                    target: str | None = None, details: Mapping[str, Any] | None = None) -> None:
        """Record an admin action by ``key``; if the trail cannot be written, a 503."""
        try:
            await self.state.audit.record_by(key, action, source=_source(scope), target=target,
                                             details=details)
        except StoreUnavailable as error:
            log.error("NOT AUDITED (the trail cannot be written: %s): %s by %s on %s %s", error,
                      action, key.key_id if key else ANONYMOUS, target, details)
            raise Overloaded("The audit trail cannot be written right now; try again shortly.",
                             retry_after=1) from None

    async def _note(self, scope: Scope, key: ApiKey | None, action: str,
                    details: Mapping[str, Any] | None = None) -> None:
        """Record an access, refusal or failed authentication, throttled per key and address:
        ``repeats`` counts the ones since the last entry. A failure to record an access is a
        503 (nothing unaudited passes); one of a refusal only a log line (the refusal stands)."""
        subject = (action, key.key_id if key else None, _source(scope))
        repeats = self.throttle.due(subject, time.monotonic())
        if repeats is None:
            return
        request = {"method": scope["method"], "path": scope["path"], "repeats": repeats}
        try:
            await self.audit(scope, key, action, scope["path"], {**request, **(details or {})})
        except Overloaded:
            self.throttle.forget(subject)
            if action == "admin.access":
                raise

    @staticmethod
    def tenant_scope(key: ApiKey | None, requested: str | None) -> str | None:
        """The tenant a read is limited to: any (None) for admins and open mode, else the
        caller's own; asking for another tenant's data is refused."""
        if key is None or key.role is Role.ADMIN:
            return requested
        if requested is not None and requested != key.tenant:
            raise PermissionDenied("You may only see your own tenant's data.", param="tenant")
        return key.tenant

    async def list_keys(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/keys[?tenant=T]: the keys (never their secrets)."""
        key = await self.caller(scope, READERS)
        tenant = self.tenant_scope(key, _query(scope).get("tenant"))
        keys = [k.public() for k in self.state.keys.all() if tenant is None or k.tenant == tenant]
        await send_json(send, 200, {"object": "list", "data": keys}, request_id)

    async def create_key(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """POST /admin/keys: make a key; its secret is in this answer and nowhere else (if the
        creation cannot be audited, the answer is a 503 and the secret is never shown)."""
        caller = await self.caller(scope, ADMINS)
        body = await read_json(scope, receive, ADMIN_BODY_LIMIT)
        if not isinstance(body, dict):
            raise InvalidRequest("The body must be a JSON object.")
        unknown = sorted(set(body) - set(KEY_FIELDS))
        if unknown:  # refused, never ignored: a key without a limit its creator asked for
            raise InvalidRequest(f"unknown fields {unknown}; a key takes "
                                 f"{', '.join(KEY_FIELDS)}", param=unknown[0])
        tenant, name = _text(body, "tenant"), _text(body, "name")
        try:
            role = Role(body.get("role", "client"))
        except ValueError:
            raise InvalidRequest(f"role must be one of {[r.value for r in Role]}",
                                 param="role") from None
        scopes = body.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise InvalidRequest("scopes must be a list of model aliases", param="scopes")
        unknown = [s for s in scopes if s not in self.state.router.aliases]
        if unknown:
            raise InvalidRequest(f"unknown models in scopes: {unknown}", param="scopes")
        tier = body.get("tier", "standard")
        if tier not in ("interactive", "standard", "batch"):
            raise InvalidRequest("tier must be interactive, standard or batch", param="tier")
        expires_in = body.get("expires_in_s")
        if expires_in is not None and (not isinstance(expires_in, int | float)
                                       or isinstance(expires_in, bool)
                                       or not 0 < expires_in <= MAX_KEY_LIFETIME):
            raise InvalidRequest("expires_in_s must be a positive number of seconds",
                                 param="expires_in_s")
        feature = body.get("feature")
        if feature is not None and not isinstance(feature, str):
            raise InvalidRequest("feature must be a string", param="feature")
        key, token = await self.state.keys.create(tenant, role, name, scopes, feature, tier,
                                                  expires_in, _key_limits(body))
        await self.audit(scope, caller, "key.create", key.key_id, _described(key))
        await send_json(send, 201, {"key": key.public(), "secret": token}, request_id)

    async def revoke_key(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """DELETE /admin/keys/{id}: revoke a key at once."""
        caller = await self.caller(scope, ADMINS)
        key_id = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        revoked = await self.state.keys.revoke(key_id)
        if revoked is None:
            raise NotFound(f"No active key {key_id}.")
        await self.audit(scope, caller, "key.revoke", key_id, _described(revoked))
        await send_json(send, 200, {"key": revoked.public()}, request_id)

    async def audit_log(self, scope: Scope, receive: Receive, send: Send,
                        request_id: str) -> None:
        """GET /admin/audit[?limit=N&before=SEQ&action=A]: the newest audit entries, newest
        first (admins only)."""
        await self.caller(scope, ADMINS)
        query = _query(scope)
        limit, before = query.get("limit", "100"), query.get("before")
        if not whole_number(limit):
            raise InvalidRequest("limit must be a positive integer", param="limit")
        if before is not None and not whole_number(before):
            raise InvalidRequest("before must be a sequence number", param="before")
        entries = await self.state.audit.entries(int(limit), None if before is None
                                                 else int(before), query.get("action"))
        await send_json(send, 200, {"object": "list", "data": [e.public() for e in entries]},
                        request_id)

    async def latency(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/latency[?group_by=model,deployment&window_s=86400&tenant=T]: exact
        nearest-rank p50/p95/p99 of e2e, TTFT and TPOT of every successful request in the
        window, with how many it counted."""
        key = await self.caller(scope, READERS)
        query = _query(scope)
        tenant = self.tenant_scope(key, query.get("tenant"))
        group_by = [name for name in query.get("group_by", "model,deployment").split(",") if name]
        unknown = [name for name in group_by if name not in GROUPS]
        if unknown or not group_by or len(set(group_by)) != len(group_by):
            raise InvalidRequest(f"group_by must be distinct names from {list(GROUPS)}",
                                 param="group_by")
        try:
            window = float(query.get("window_s", DEFAULT_LATENCY_WINDOW))
        except ValueError:
            window = -1.0
        if not 0 < window < float("inf"):
            raise InvalidRequest("window_s must be a positive number of seconds",
                                 param="window_s")
        until = time.time()
        if not until - window < until:
            raise InvalidRequest("window_s is too short to hold a request", param="window_s")
        report = await latency_report(self.state.store, Period(until - window, until), tenant,
                                      group_by)
        await send_json(send, 200, report, request_id)

    async def cache(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/cache: entries, evictions and requests by outcome."""
        await self.caller(scope, READERS)
        await send_json(send, 200, await self.state.cache.stats(), request_id)

    async def purge_cache(self, scope: Scope, receive: Receive, send: Send,
                          request_id: str) -> None:
        """DELETE /admin/cache[?model=M&tenant=T]: drop entries (operators: own tenant only)."""
        key = await self.caller(scope, OPERATORS)
        query = _query(scope)
        tenant = self.tenant_scope(key, query.get("tenant"))
        dropped = await self.state.cache.store.purge(query.get("model"), tenant)
        await send_json(send, 200, {"purged": dropped}, request_id)

    async def slo(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/slo[?tenant=T]: each SLO's error budget left, burn rates and alerts
        (operators and viewers: the SLOs scoped to their tenant)."""
        key = await self.caller(scope, READERS)
        tenant = self.tenant_scope(key, _query(scope).get("tenant"))
        await send_json(send, 200, self.state.slo.report(tenant), request_id)

    async def cost(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/cost[?since&until&by&chart&tenant&grain]: the cost report
        (ledger/report.py); peaks over the busiest ``grain`` seconds (default 60), instance
        time by the config versions in force."""
        key = await self.caller(scope, READERS)
        query = _query(scope)
        tenant = self.tenant_scope(key, query.get("tenant"))
        by, chart = _dimension(query, "by", "tenant"), _dimension(query, "chart", "tenant")
        try:
            grain = peak_grain(query.get("grain", PEAK_GRAIN_S))
        except ValueError as error:
            raise InvalidRequest(str(error), param="grain") from None
        period = _period(query)
        report = await cost_report(self.state.store, self.state.config, period, by, chart,
                                   tenant, grain, await _versions_in_force(self.state, period),
                                   PlannerSizer())
        await send_json(send, 200, report, request_id)

    async def cost_focus(self, scope: Scope, receive: Receive, send: Send,
                         request_id: str) -> None:
        """GET /admin/cost/focus[?since&until&tenant]: the ledger as a FOCUS CSV."""
        key = await self.caller(scope, READERS)
        query = _query(scope)
        tenant = self.tenant_scope(key, query.get("tenant"))
        config, period = self.state.config, _period(query)
        text = await focus_export(self.state.store, config.ledger, PriceBook.of(config).prices,
                                  period, tenant, await _versions_in_force(self.state, period))
        await send_body(send, 200, text.encode(), request_id, content_type=b"text/csv")

    async def routing(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/routing: each deployment's state, load, latency, errors and traffic share."""
        await self.caller(scope, READERS)
        budget = self.state.budget
        gate = self.state.gate
        await send_json(send, 200, {
            "models": self.state.router.snapshot(),
            "priority": None if gate is None else _gate_report(gate.snapshot()),
            "retry_budget": {"requests": budget.requests, "retries": budget.retries,
                             "refused": budget.refused, "tokens": round(budget.tokens, 2),
                             "capacity": budget.capacity},
        }, request_id)

    async def quality(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """GET /admin/quality: quality signals per route, deployment and served alias in the
        recent and the baseline window, their shifts and the alerts in force."""
        await self.caller(scope, READERS)
        detector = self.state.serving.quality
        if detector is None:
            raise NotFound("Quality signals are off (quality.enabled is false).")
        await send_json(send, 200, detector.report(time.time()), request_id)


def _source(scope: Scope) -> str | None:
    """The client's address (the peer of the connection)."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _hint(token: str | None) -> str | None:
    """What a refused token may be recorded as: the start of a Switchgear key, never more."""
    if not token:
        return None
    return token[:7] + "****" if token.startswith("sg-") and len(token) > 11 else "****"


def _described(key: ApiKey) -> dict[str, Any]:
    """What the audit trail keeps of a key (never its secret or digest), with its own limits
    where it has any."""
    shown = key.public()
    own = ("limits", "budget") if key.limits.custom else ()
    return {name: shown[name] for name in ("prefix", "tenant", "role", "name", "scopes",
                                           "feature", "tier", "expires_at", *own)}


def _key_limits(body: dict[str, Any]) -> KeyLimits:
    """A new key's own limits from its body: ``limits`` {rpm, tpm} (whole numbers) and
    ``budget`` {daily, monthly} (amounts); absent or null: the config's per-key value."""
    rates = _limit_fields(body, "limits", KEY_RATES, integer=True)
    money = _limit_fields(body, "budget", KEY_BUDGETS, integer=False)
    return KeyLimits(rates.get("rpm"), rates.get("tpm"), money.get("daily"), money.get("monthly"))


def _limit_fields(body: dict[str, Any], section: str, names: tuple[str, ...],
                  integer: bool) -> dict[str, Any]:
    """The values set in ``body[section]``, each checked; anything it cannot take is a 400."""
    given = body.get(section)
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise InvalidRequest(f"{section} must be an object with {' and/or '.join(names)}",
                             param=section)
    unknown = sorted(set(given) - set(names))
    if unknown:
        why = (" (soft is the same for every key: limits.budgets.per_key.soft in the config)"
               if "soft" in unknown else "")
        raise InvalidRequest(f"{section} takes only {' and '.join(names)}, not {unknown}{why}",
                             param=f"{section}.{unknown[0]}")
    values = {name: value for name, value in given.items() if value is not None}
    for name, value in values.items():
        number = (isinstance(value, int) if integer else isinstance(value, int | float))
        low = 1 if integer else 0
        if not number or isinstance(value, bool) or not low <= value <= MAX_KEY_LIMIT:
            kind = "a whole number" if integer else "an amount"
            raise InvalidRequest(f"{section}.{name} must be {kind} from {low} to "
                                 f"{MAX_KEY_LIMIT:,}", param=f"{section}.{name}")
    return values


def _gate_report(snapshot: GateSnapshot) -> dict[str, Any]:
    """The priority gate's snapshot as JSON, each tier with its total shed count."""
    report = asdict(snapshot)
    for name, tier in snapshot.tiers.items():
        report["tiers"][name]["shed"] = tier.shed
    return report


def _period(query: dict[str, str]) -> Period:
    try:
        return period_of(query.get("since"), query.get("until"))
    except (ValueError, OverflowError, OSError):
        raise InvalidRequest("since and until must be seconds since the epoch or ISO 8601 "
                             "times, since before until", param="since") from None


async def _versions_in_force(state: AppState, period: Period) -> list[tuple[float, Config]]:
    """(applied at, config) of the config version in force when ``period`` starts and of each
    one applied in it, as this replica reads them (one it cannot read is left out: its
    predecessor is taken to run on)."""
    versions = state.versions
    later = await versions.applied_since(period.start)
    before = await versions.get(later[0].version - 1 if later else None)
    in_force = [v for v in later if v.applied_at < period.end]
    if before is not None:
        in_force.insert(0, before)
    elif not in_force:  # the history begins after the period: its first version is the guess
        in_force = later[:1]
    readable = []
    for version in in_force:
        try:
            config = serving_config(version.config, state.local,
                                    f"config version {version.version}")
        except ConfigError:
            continue
        readable.append((version.applied_at, config))
    return readable


def _dimension(query: dict[str, str], name: str, default: Dimension) -> Dimension:
    value = query.get(name, default)
    for dimension in DIMENSIONS:
        if value == dimension:
            return dimension
    raise InvalidRequest(f"{name} must be one of {', '.join(DIMENSIONS)}", param=name)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise InvalidRequest(f"{name} must be a non-empty string of at most 128 characters",
                             param=name)
    return value.strip()
