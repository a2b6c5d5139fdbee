"""What the fleet-wide limits' tests share."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis


async def taken(client: Redis, key: str, until: int) -> int:
    """The places taken at ``key``, once they number ``until`` (or after 10 s: give-backs and
    other replicas' requests arrive in the background)."""
    for _ in range(1000):
        count = int(await client.zcard(key))
        if count == until:
            break
        await asyncio.sleep(0.01)
    return count
