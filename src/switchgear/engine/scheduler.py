"""The scheduler decides, each step, which sequences advance and by how many tokens; it never
runs anything itself (the runner does).

Continuous batching as in vLLM's v1 engine: every step, waiting sequences join while there is a
free slot and room in the KV cache, sequences that finished leave, and each running sequence feeds
its pending tokens, one for those decoding, a chunk of the prompt for those still reading it
(chunked prefill, decoders first, so a long prompt does not stall the streams already decoding).

Priority: interactive before standard before batch. A higher-tier sequence that finds no slot or
no KV room preempts the youngest batch-tier sequence (its KV is dropped and it waits again, to
recompute its tokens when it resumes, as vLLM does), and while a higher-tier sequence reads its
prompt, batch-tier sequences pause so the step is all its own. When the KV cache runs out the
youngest sequence of the lowest tier is preempted.

Slots: a new sequence takes the lowest free slot, so that running sequences sit on consecutive
slots (with a KV stream per slot llama.cpp computes a batch in one pass only over consecutive
slots, and reads all the weights again for each further run).

Prefix reuse (with ``keep_prefixes``, when each slot has KV cells of its own): a slot keeps the
KV of its last sequence when it is freed, finished or preempted, and a new sequence starts from
the longest prefix of its prompt that any free slot keeps: its own slot's, or another's copied
into it (``Plan.copies``); that prefix is not read again (a shared system prompt is processed
once, and interactive work that preempts a batch sequence reads only what its prompt does not
share with that sequence's).

A scheduler is a plain data structure: the engine serialises every call to it under its own lock.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from switchgear.engine.job import Job
from switchgear.sections.tiers import TIERS

BATCH_RANK = TIERS.index("batch")


@dataclass(eq=False)
class Sequence:
    """One generation as the scheduler sees it: its tokens so far and how many are in the KV cache.

    ``tokens`` is the prompt followed by what was generated; ``computed`` of them are in the KV
    cache (at positions ``0..computed-1`` of sequence ``slot``). ``limit`` is the most tokens it
    may generate.
    """

    job: Job
    tokens: list[int]
    limit: int
    prompt_length: int = 0
    computed: int = 0
    reused: int = 0
    slot: int | None = None
    arrival: int = 0
    rank: int = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_length = self.prompt_length or len(self.tokens)
        self.rank = TIERS.index(self.job.tier)

    @property
    def generated(self) -> int:
        """Tokens generated so far."""
        return len(self.tokens) - self.prompt_length

    @property
    def pending(self) -> int:
        """Tokens not yet in the KV cache (1 while decoding; more while reading the prompt)."""
        return len(self.tokens) - self.computed

    @property
    def order(self) -> tuple[int, int]:
        """Scheduling order: tier first, then arrival."""
        return self.rank, self.arrival


@dataclass(frozen=True, slots=True)
class Feed:
    """``count`` pending tokens of ``sequence`` go into this step's batch; ``samples`` when they
    reach its last token, so that a new token is sampled after them."""

    sequence: Sequence
    count: int
    samples: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """One step: what to feed, the slots of sequences preempted since the last step (their KV must
    be dropped before feeding, unless the scheduler keeps prefixes: then it is kept like a
    finished sequence's), how many batch-tier sequences sit this step out, and the KV copies
    (source slot, target slot) to make, in order, before anything else: a kept prefix moved to
    the slot that reuses it."""

    feeds: list[Feed]
    preempted: list[int]
    paused: int = 0
    copies: list[tuple[int, int]] = field(default_factory=list)


class BatchScheduler:
    """Continuous batching over ``max_sequences`` slots sharing a KV cache of ``kv_tokens``,
    feeding at most ``step_tokens`` tokens a step."""

    def __init__(self, max_sequences: int = 8, kv_tokens: int = 4096,
                 step_tokens: int = 256, keep_prefixes: bool = False) -> None:
        if step_tokens < max_sequences:
            raise ValueError("step_tokens must be at least max_sequences")
        self.max_sequences = max_sequences
        self.kv_tokens = kv_tokens
        self.step_tokens = step_tokens
        self.keep_prefixes = keep_prefixes
        self._kept: dict[int, list[int]] = {}  # free slot -> the tokens its KV still holds
        self._waiting: list[Sequence] = []
        self._running: list[Sequence] = []
        self._free_slots = list(range(max_sequences - 1, -1, -1))
        self._arrivals = itertools.count()

    @property
    def waiting(self) -> int:
        """Sequences waiting for a slot (new or preempted)."""
        return len(self._waiting)

    @property
    def running(self) -> list[Sequence]:
        """Sequences holding a slot, in scheduling order."""
        return list(self._running)

    @property
    def kv_used(self) -> int:
        """KV-cache cells holding tokens now."""
        return sum(sequence.computed for sequence in self._running)

    def add(self, sequence: Sequence) -> None:
        """Let ``sequence`` wait for a slot, behind those of its tier that came before it."""
        sequence.arrival = next(self._arrivals)
        bisect.insort(self._waiting, sequence, key=lambda waiting: waiting.order)

    def cancel(self, sequence: Sequence) -> bool:
        """Take ``sequence`` out if it waits; True when it did (a running one leaves by
        ``finish``)."""
        if sequence in self._waiting:
            self._waiting.remove(sequence)
            return True
        return False

    def finish(self, sequence: Sequence) -> None:
        """``sequence`` has ended (or was cancelled): free its slot."""
        if sequence in self._running:
            self._running.remove(sequence)
            self._release(sequence)

    def drain(self) -> list[Sequence]:
        """Take every waiting sequence out, in the order they would have run."""
        drained, self._waiting = self._waiting, []
        return drained

    def schedule(self) -> Plan:
        """Decide this step: admit, preempt, then feed (decoders first, then prompt chunks)."""
        preempted: list[int] = []
        copies: list[tuple[int, int]] = []
        self._admit(preempted, copies)
        self._make_kv_room(preempted)
        return self._plan(preempted, copies)

    def _admit(self, preempted: list[int], copies: list[tuple[int, int]]) -> None:
        while self._waiting:
            candidate = self._waiting[0]
            if self._free_slots and self._kv_after_step() + len(candidate.tokens) <= self.kv_tokens:
                self._waiting.pop(0)
                self._take_slot(candidate, copies)
                bisect.insort(self._running, candidate, key=lambda running: running.order)
                continue
            victim = self._running[-1] if self._running else None
            if victim is None or victim.rank != BATCH_RANK or candidate.rank >= BATCH_RANK:
                return
            self._preempt(victim, preempted)

    def _make_kv_room(self, preempted: list[int]) -> None:
        while len(self._running) > 1 and self._kv_after_step() > self.kv_tokens:
            self._preempt(self._running[-1], preempted)

    def _plan(self, preempted: list[int], copies: list[tuple[int, int]]) -> Plan:
        urgent_prefill = any(s.rank < BATCH_RANK and s.pending > 1 for s in self._running)
        active = [s for s in self._running if not (urgent_prefill and s.rank == BATCH_RANK)]
        budget = self.step_tokens
        feeds = []
        for sequence in [s for s in active if s.pending == 1]:
            feeds.append(Feed(sequence, 1, samples=True))
            budget -= 1
        for sequence in [s for s in active if s.pending > 1]:
            if budget <= 0:
                break
            count = min(sequence.pending, budget)
            feeds.append(Feed(sequence, count, samples=count == sequence.pending))
            budget -= count
        return Plan(feeds, preempted, paused=len(self._running) - len(active), copies=copies)

    def _kv_after_step(self) -> int:
        """KV cells in use once every running sequence has fed its pending tokens."""
        return sum(len(sequence.tokens) for sequence in self._running)

    def _take_slot(self, sequence: Sequence, copies: list[tuple[int, int]]) -> None:
        """The lowest free slot, holding the longest prefix of ``sequence`` that a free slot
        keeps (copied from another slot when that one keeps more); the prefix counts as computed
        (but for the last token, which must be fed again for its logits)."""
        def shared(slot: int) -> int:
            return _common_prefix(self._kept.get(slot, ()), sequence.tokens)

        slot = min(self._free_slots)
        source = max([slot, *self._free_slots], key=shared)  # the slot itself on a tie
        if source != slot:
            copies.append((source, slot))
        self._free_slots.remove(slot)
        sequence.slot = slot
        sequence.computed = min(shared(source), len(sequence.tokens) - 1)
        sequence.reused = max(sequence.reused, sequence.computed)
        self._kept.pop(slot, None)

    def _preempt(self, sequence: Sequence, preempted: list[int]) -> None:
        assert sequence.slot is not None
        preempted.append(sequence.slot)
        self._running.remove(sequence)
        self._release(sequence)  # with keep_prefixes its KV stays, as a finished one's
        sequence.computed = 0
        bisect.insort(self._waiting, sequence, key=lambda waiting: waiting.order)

    def _release(self, sequence: Sequence) -> None:
        if sequence.slot is not None:
            self._free_slots.append(sequence.slot)
            if self.keep_prefixes:
                self._kept[sequence.slot] = sequence.tokens[: sequence.computed]
            sequence.slot = None


def _common_prefix(first: Iterable[int], second: Iterable[int]) -> int:
    """How many tokens ``first`` and ``second`` share from the start."""
    count = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        count += 1
    return count
