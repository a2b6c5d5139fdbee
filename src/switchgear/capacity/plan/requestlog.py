"""A profile from the request log: what one deployment served, grouped by how many requests it
held while each ran (closed-loop levels observed in production instead of benched).

For every request the number of requests in the deployment is averaged over its own lifetime
(from the step function of arrivals and completions: its integral, read at the request's start
and end); rounded, that is the concurrency of the level the request joins. In a closed-loop
level at n that average is exactly n. A level needs ``min_requests`` answered requests. Cache
hits and coalesced followers never reached the deployment and are left out; 4xx answers are the
client's and left out; 5xx and 429 count as errors of their level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from switchgear.capacity.plan.profile import CLOSED_LOOP, ClientCheck, Level, Profile, ProfileError
from switchgear.store import StoreUnavailable, missing_sqlite_file, read_store
from switchgear.store.base import RecordStore, redact_url
from switchgear.store.migrations import placeholders

MIN_REQUESTS = 20
#: Production traffic has no bench client that could have limited it.
NO_CLIENT = ClientCheck(saturated=False)
TOO_MANY = 429

#: (received_at, first_token_at, done_at, status, prompt_tokens, completion_tokens, stream)
LogRow = tuple[float, float | None, float, int, int, int, bool]


@dataclass(frozen=True)
class LogQuery:
    """Which requests to read: received in [since, until), of one model and/or deployment."""

    since: float
    until: float
    model: str | None = None
    deployment: str | None = None


async def read_log(store: RecordStore, query: LogQuery) -> list[LogRow]:
    """The finished requests ``query`` selects that reached a deployment."""
    conditions = ["received_at >= {}", "received_at < {}"]
    params: list[object] = [query.since, query.until]
    for column, value in (("model", query.model), ("deployment", query.deployment)):
        if value is not None:
            conditions.append(f"{column} = {{}}")
            params.append(value)
    marks = placeholders(store.dialect, len(params)).split(", ")
    where = " AND ".join(condition.format(mark) for condition, mark in zip(conditions, marks, strict=True))
    rows = await store.rows(
        "SELECT received_at, first_token_at, done_at, status, prompt_tokens, completion_tokens, "
        f"stream FROM request_log WHERE {where} AND done_at IS NOT NULL "
        "AND (cache_status IS NULL OR cache_status NOT IN ('hit', 'coalesced')) "
        "ORDER BY received_at", params, report=True)
    return [(float(r[0]), None if r[1] is None else float(r[1]), float(r[2]), int(r[3]), int(r[4]),
             int(r[5]), bool(r[6])) for r in rows]


def sojourn_concurrency(received: np.ndarray, done: np.ndarray) -> np.ndarray:
    """Per request, the mean number of requests in the system over its own lifetime."""
    times = np.concatenate((received, done))
    order = np.argsort(times, kind="stable")
    steps = np.concatenate((np.ones(len(received)), -np.ones(len(done))))[order]
    times = times[order]
    held = np.cumsum(steps)  # requests in the system just after each event
    area = np.concatenate(([0.0], np.cumsum(held[:-1] * np.diff(times))))
    spans = done - received
    inside = (np.interp(done, times, area) - np.interp(received, times, area))
    at_start = held[np.searchsorted(times, received, side="right") - 1]
    return np.where(spans > 0, inside / np.where(spans > 0, spans, 1.0), at_start)


def profile_from_log(rows: Sequence[LogRow], latency: str = "e2e",
                     min_requests: int = MIN_REQUESTS) -> Profile:
    """Closed-loop levels from ``rows``, one per concurrency with ``min_requests`` answers."""
    counted = [row for row in rows if not 400 <= row[3] < 500 or row[3] == TOO_MANY]
    if not counted:
        raise ProfileError("the request log holds no finished requests in that window")
    received = np.array([row[0] for row in counted])
    done = np.array([row[2] for row in counted])
    levels_of = np.maximum(1, np.rint(sojourn_concurrency(received, done))).astype(int)
    groups: dict[int, list[LogRow]] = {}
    for row, n in zip(counted, levels_of.tolist(), strict=True):
        groups.setdefault(n, []).append(row)
    levels = []
    for n, members in sorted(groups.items()):
        answered = [row for row in members if row[3] < 400]
        samples = [_latency(row, latency) for row in answered]
        latencies = tuple(x for x in samples if x is not None)
        if len(latencies) < min_requests:
            continue
        levels.append(Level(CLOSED_LOOP, n, None, n / float(np.mean(latencies)), len(members),
                            len(answered), latencies, tuple(row[4] for row in answered),
                            tuple(row[5] for row in answered), client=NO_CLIENT))
    if not levels:
        raise ProfileError(f"no concurrency in the request log has {min_requests} answered requests: "
                           "widen --since or bench the deployment instead")
    streamed = sum(row[6] for row in counted) * 2 >= len(counted)
    return Profile(tuple(levels), latency, streamed, {}, None)


def _latency(row: LogRow, latency: str) -> float | None:
    received, first_token, done = row[0], row[1], row[2]
    if latency == "ttft":
        return None if first_token is None else first_token - received
    return done - received


def load_log_profile(store_url: str, query: LogQuery, latency: str = "e2e") -> Profile:
    """The profile of the request log in the store at ``store_url`` (runs its own event loop)."""
    if (missing := missing_sqlite_file(store_url)) is not None:
        raise ProfileError(f"no record store at {missing}")
    try:
        rows = read_store(store_url, lambda store: read_log(store, query))
    except StoreUnavailable as error:
        raise ProfileError(f"cannot read the store {redact_url(store_url)}: {error}") from None
    return profile_from_log(rows, latency)
