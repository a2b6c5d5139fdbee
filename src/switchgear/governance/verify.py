"""Check an audit trail: name the first entry that was altered, removed or reordered.

The true order is rebuilt from the links alone: entry 1 is the one whose previous hash is the
genesis value and whose hash the key confirms at sequence number 1; entry n+1 the one that names
entry n's hash and is confirmed at n+1. Where the stored order first departs from it, entry n is:

- reordered when it still exists, intact, under another sequence number;
- removed when no row holds sequence number n, or the row there is an intact entry of another
  number (the rows after a deletion were renumbered);
- altered when the row at n is confirmed by the key at no sequence number.

Deleting the newest entries leaves a valid, shorter chain; an ``anchor`` (a sequence number and
hash printed by an earlier check, kept elsewhere) catches that.

A key is wrong, not the trail tampered, when the key confirms nothing in it: the first entry does
not hold the key's fingerprint and no entry is sealed with it (even renumbered). Then the verdict
says so and names both key ids; it checks nothing more. (Someone who rewrote every entry and
the first one's fingerprint, without the key, looks the same: the check cannot tell, and says so.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from switchgear.governance.audit import GENESIS, AuditEntry, genesis
from switchgear.governance.secret import KEY_ID_LENGTH, key_id

Kind = Literal["altered", "removed", "reordered"]

#: How many numbers above its place an entry's own number is looked for, when the rows after a
#: deletion were renumbered (one HMAC each).
RENUMBERED_SEARCH = 10_000


@dataclass(frozen=True, slots=True)
class Tampering:
    """The first entry found tampered with, how, and what the trail shows there."""

    seq: int
    kind: Kind
    detail: str

    def __str__(self) -> str:
        return f"entry {self.seq} was {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class WrongKey:
    """The key given confirms nothing in the trail: its id, and the id the trail's first entry
    names (None when that entry names none: a trail begun before keys were named)."""

    given: str
    trail: str | None

    def describe(self, source: str = "given") -> str:
        """The mismatch in words, the key named by ``source`` (e.g. "from VAR")."""
        sealed = f"key id {self.trail}" if self.trail else "a key it does not name"
        return (f"the key {source} (key id {self.given}) is not the key this trail was sealed "
                f"with ({sealed})")

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of a check: the entries read, the last one, the first tampering, or that
    the key was not the trail's (then nothing else was checked)."""

    length: int
    head: AuditEntry | None
    tampering: Tampering | None
    wrong_key: WrongKey | None = None

    @property
    def intact(self) -> bool:
        """Checked with the trail's key, and no tampering found."""
        return self.tampering is None and self.wrong_key is None


def parse_anchor(text: str) -> tuple[int, str]:
    """An anchor as an intact check prints it, ``SEQ:HASH``; ValueError for anything else."""
    seq, _, hashed = text.partition(":")
    if not (seq.isascii() and seq.isdigit()) or int(seq) < 1 or len(hashed) != 64:
        raise ValueError("an anchor is SEQ:HASH as an intact check printed it")
    return int(seq), hashed


def verify(entries: Sequence[AuditEntry], secret: bytes,
           anchor: tuple[int, str] | None = None) -> Verdict:
    """Check ``entries`` (in stored sequence order) against ``secret`` and, if given, an
    ``anchor`` (seq, hash) that an earlier intact check printed."""
    head = entries[-1] if entries else None
    if entries and not _confirms(entries, secret):
        return Verdict(len(entries), head, None, WrongKey(key_id(secret), _named_key(entries)))
    genuine = _genuine_chain(entries, secret)
    for position, entry in enumerate(entries):
        if position < len(genuine) and genuine[position] is entry and entry.seq == position + 1:
            continue
        return Verdict(len(entries), head, _classify(position, entries, genuine, secret))
    return Verdict(len(entries), head, _against(anchor, entries))


def _confirms(entries: Sequence[AuditEntry], secret: bytes) -> bool:
    """Whether ``secret`` is the trail's key: the first entry holds its fingerprint, or it
    seals an entry at its place, or the first stored one under a later number (renumbered)."""
    start = genesis(secret)
    first = entries[0]
    return (any(entry.prev_hash == start or entry.sealed_by(secret) for entry in entries)
            or any(first.sealed_by(secret, n)
                   for n in range(first.seq + 1, first.seq + 1 + RENUMBERED_SEARCH)))


def _named_key(entries: Sequence[AuditEntry]) -> str | None:
    """The key id the first entry names, if it names one."""
    first = next((entry for entry in entries if entry.seq == 1), None)
    if first is None or first.prev_hash == GENESIS:
        return None
    return first.prev_hash[:KEY_ID_LENGTH]


def _genuine_chain(entries: Sequence[AuditEntry], secret: bytes) -> list[AuditEntry]:
    """The longest chain from the genesis that the key confirms, following the links."""
    following: dict[str, list[AuditEntry]] = {}
    for entry in entries:
        following.setdefault(entry.prev_hash, []).append(entry)
    chain: list[AuditEntry] = []
    starts = (genesis(secret), GENESIS)
    previous = starts[0]
    while len(chain) < len(entries):
        seq = len(chain) + 1
        candidates = ([e for start in starts for e in following.get(start, ())] if seq == 1
                      else following.get(previous, ()))
        link = next((e for e in candidates if e.sealed_by(secret, seq)), None)
        if link is None:
            break
        chain.append(link)
        previous = link.hash
    return chain


def _classify(position: int, entries: Sequence[AuditEntry], genuine: list[AuditEntry],
              secret: bytes) -> Tampering:
    seq, found = position + 1, entries[position]
    if position < len(genuine):
        moved = genuine[position]
        return Tampering(seq, "reordered", f"it ({moved.action}) is stored at seq {moved.seq}; "
                         f"seq {found.seq} holds {found.action}")
    if found.seq != seq:
        return Tampering(seq, "removed", f"no entry {seq}; the next stored is {found.seq}")
    original = next((n for n in range(seq + 1, seq + 1 + RENUMBERED_SEARCH)
                     if found.sealed_by(secret, n)), None)
    if original is not None:
        return Tampering(seq, "removed", f"entry {original} ({found.action}) was renumbered "
                         f"into its place")
    return Tampering(seq, "altered", f"its fields ({found.action} by {found.actor}) no longer "
                     "match its hash")


def _against(anchor: tuple[int, str] | None, entries: Sequence[AuditEntry]) -> Tampering | None:
    if anchor is None:
        return None
    seq, hashed = anchor
    if seq > len(entries):
        return Tampering(len(entries) + 1, "removed", f"the trail ends at entry {len(entries)} "
                         f"but the anchor names entry {seq}")
    if seq >= 1 and entries[seq - 1].hash != hashed:
        return Tampering(seq, "altered", "its hash differs from the anchor's: the trail up to it "
                         "was rewritten")
    return None
