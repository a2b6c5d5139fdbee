"""Request ids: ``req_`` and 32 hex digits, unique, and in the order they were issued (the
request log's primary key then grows at its end)."""

from __future__ import annotations

import re
import time

from switchgear.gateway.requests import RequestIds


def test_ids_are_unique_well_formed_and_sort_by_time() -> None:
    ids = RequestIds()
    issued = []
    for _ in range(5):
        issued += [ids.new() for _ in range(2_000)]
        time.sleep(0.002)
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", one) for one in issued)
    assert len(set(issued)) == len(issued)
    stamps = [int(one[4:17], 16) for one in issued]
    assert stamps == sorted(stamps)  # within one microsecond the random part decides
    assert abs(stamps[-1] / 1e6 - time.time()) < 5
    assert max(issued[:2_000]) < min(issued[-2_000:])


def test_two_issuers_do_not_collide() -> None:
    first, second = RequestIds(), RequestIds()
    assert not {first.new() for _ in range(5_000)} & {second.new() for _ in range(5_000)}
