"""Simulate one instance as a load-dependent processor-sharing queue with a FIFO waiting line."""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Simulated:
    """Per arrival: its time in the instance, and how many requests it found there."""

    sojourn: Array
    found: npt.NDArray[np.int64]


def simulate(arrivals: Sequence[float], work: Sequence[float], speeds: Sequence[float],
             slots: int) -> Simulated:
    """Serve requests arriving at ``arrivals`` (seconds, ascending), each needing ``work`` seconds
    of service when alone. With k requests in service (at most ``slots``), each advances at
    ``speeds[k]`` seconds of work per second; the rest wait in arrival order for a slot.

    Every request in service advances at the same speed, so one running total of the service
    each has received since the start (``attained``) orders their departures in a heap.
    """
    count = len(arrivals)
    sojourn = np.empty(count)
    found = np.empty(count, dtype=np.int64)
    running: list[tuple[float, int]] = []  # (attained service at which it leaves, index)
    waiting: deque[int] = deque()
    attained = now = 0.0
    index = 0
    while index < count or running:
        in_service = len(running)
        speed = speeds[in_service]
        departure = now + (running[0][0] - attained) / speed if running else math.inf
        if index < count and arrivals[index] <= departure:
            arrival = arrivals[index]
            attained += (arrival - now) * speed
            now = arrival
            found[index] = in_service + len(waiting)
            if in_service < slots:
                heapq.heappush(running, (attained + work[index], index))
            else:
                waiting.append(index)
            index += 1
            continue
        attained, leaving = heapq.heappop(running)
        now = departure
        sojourn[leaving] = now - arrivals[leaving]
        if waiting:
            starting = waiting.popleft()
            heapq.heappush(running, (attained + work[starting], starting))
    return Simulated(sojourn, found)
