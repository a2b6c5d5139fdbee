"""Three `switchgear serve` replicas behind nginx, sharing PostgreSQL and Redis (issue 25): a
concurrency limit held fleet-wide holds at the model server under five times the load; a
SIGKILLed replica's places come back once its leases expire; a SIGTERMed replica drains without
failing a request or losing a record."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest
from fleet_harness import CLIENTS, LEASE_S, LIMIT, Fleet, client_load, polled, record_counts

from servers import fetch_records

pytestmark = pytest.mark.postgres

#: Successful requests each load runs to, at the least: enough for every client to queue.
ANSWERS = 3 * CLIENTS
#: Long enough for any wait of these tests on a busy machine (a bound, not a measure).
WAIT_S = 60


async def test_a_fleet_wide_limit_holds_at_the_model_server_and_a_per_replica_one_does_not(
        fleet: Fleet) -> None:
    for model in ("fleet", "replica"):
        async with client_load(fleet, model) as tally, asyncio.timeout(WAIT_S):
            await tally.wait_for_answers(ANSWERS)
        assert tally.failures == []
        assert len({answered.replica for answered in tally.answered}) == 3  # all took part
    # The same load wants more than LIMIT at once: held to it fleet-wide, LIMIT per replica not.
    assert fleet.fleet_model.load().peak == LIMIT
    assert fleet.replica_model.load().peak > LIMIT


async def test_a_killed_replicas_places_come_back_when_its_leases_expire(fleet: Fleet) -> None:
    async with client_load(fleet, "fleet") as tally:
        async with asyncio.timeout(WAIT_S):
            await polled(fleet.fleet_model.load, lambda load: load.in_flight == LIMIT)
        held = {replica: replica.places_held() for replica in fleet.replicas}
        victim = max(fleet.replicas, key=held.__getitem__)
        survivors = [replica for replica in fleet.replicas if replica is not victim]
        victim.signal(signal.SIGKILL)
        victim.wait()
        assert held[victim] > 0  # it died holding places
        # Its places stay taken until their leases expire (the margin is less than the default
        # lease's 10 s: a lease that ignored fleet_lease_s would fail this); then the others
        # hold them all, and the model server runs LIMIT requests again.
        async with asyncio.timeout(LEASE_S + 5):
            await polled(lambda: sum(replica.places_held() for replica in survivors),
                         lambda held: held == LIMIT)
            await polled(fleet.fleet_model.load, lambda load: load.in_flight == LIMIT)
        async with asyncio.timeout(WAIT_S):
            await tally.wait_for_answers(len(tally.answered) + CLIENTS)
    assert fleet.fleet_model.load().peak == LIMIT
    # Only the requests the victim had in hand failed: nginx's 502, or a stream cut short.
    assert [failure for failure in tally.failures
            if not failure.endswith(("Error code: 502", "Connection error."))] == []


async def test_a_sigtermed_replica_fails_no_request_and_loses_no_record(fleet: Fleet) -> None:
    victim = fleet.replicas[1]
    async with client_load(fleet, "fleet") as tally, asyncio.timeout(WAIT_S):
        await tally.wait_for_answers(CLIENTS)
        victim.signal(signal.SIGTERM)
        await polled(victim.readiness, lambda status: status == 503)
        draining = time.monotonic()
        exit_code = await asyncio.to_thread(victim.wait)
        # Load goes on after it has left: nginx must send nothing more its way.
        await tally.wait_for_answers(len(tally.answered) + CLIENTS)
    assert tally.failures == []
    assert exit_code == 0, victim.log()
    # Not ready, it went on serving what nginx still sent it, for the grace period.
    assert any(answered.replica == victim.address and answered.sent > draining
               for answered in tally.answered)
    # It left no record unwritten: it can write none now.
    drained = [answered.request_id for answered in tally.answered
               if answered.replica == victim.address]
    assert drained
    recorded = Counter(record.request_id
                       for record in await asyncio.to_thread(fetch_records, fleet.store_url))
    assert [request_id for request_id in drained if not recorded[request_id]] == []
    # One record of every request, no more, once the running replicas have written theirs.
    request_ids = [answered.request_id for answered in tally.answered]
    assert len(set(request_ids)) == len(request_ids)
    async with asyncio.timeout(WAIT_S):
        recorded = await record_counts(fleet.store_url, request_ids)
    assert {recorded[request_id] for request_id in request_ids} == {1}
    assert fleet.fleet_model.load().peak == LIMIT
