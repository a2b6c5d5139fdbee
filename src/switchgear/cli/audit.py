"""`switchgear audit`: check the trail straight from the store, and lay out a listing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from switchgear.config import Config, ConfigError
from switchgear.governance.audit import chain
from switchgear.governance.secret import AuditKey, key_id
from switchgear.governance.verify import Verdict, verify
from switchgear.store import missing_sqlite_file, read_store

#: `audit verify`'s exit codes: intact, tampered, not checkable (config, key or store), and
#: checked with a key that is not the trail's.
INTACT, TAMPERED, UNCHECKED, WRONG_KEY = 0, 1, 2, 3

COLUMNS = ("seq", "time (UTC)", "actor", "role", "tenant", "source", "action", "target",
           "details")


@dataclass(frozen=True, slots=True)
class TrailCheck:
    """A check of the trail: the verdict, the key it used (and where from), and, when that key
    was wrong, whether the key file the variable overrode is the trail's key."""

    verdict: Verdict
    key: AuditKey
    used: bytes
    overridden_fits: bool

    @property
    def exit_code(self) -> int:
        """INTACT, TAMPERED or WRONG_KEY."""
        if self.verdict.wrong_key is not None:
            return WRONG_KEY
        return INTACT if self.verdict.intact else TAMPERED


def check_trail(config: Config, anchor: tuple[int, str] | None) -> TrailCheck:
    """Read the whole trail from the store ``config`` names and check it with the audit key
    (ConfigError when the key or a SQLite file is missing; StoreUnavailable when the store
    cannot be read)."""
    key = AuditKey.of(config, serving=False)
    secret = key.load(create=False)
    url = config.store.url
    if (missing := missing_sqlite_file(url)) is not None:
        raise ConfigError(f"store.url: no SQLite file at {missing}")
    entries = read_store(url, chain)
    verdict = verify(entries, secret, anchor)
    other = key.overridden() if verdict.wrong_key is not None else None
    fits = other is not None and verify(entries, other).wrong_key is None
    return TrailCheck(verdict, key, secret, fits)


def describe(check: TrailCheck) -> str:
    """The key used, then one line: intact (with the anchor to keep for later checks), the
    first tampering, or that the key is not the trail's and which one to use."""
    used = f"audit key from {check.key.source} (key id {key_id(check.used)})"
    return f"{used}\n{_verdict_line(check)}"


def _verdict_line(check: TrailCheck) -> str:
    verdict, key = check.verdict, check.key
    if (wrong := verdict.wrong_key) is not None:
        if check.overridden_fits:
            fix = (f"the key file {key.path} holds that key: unset {key.env} to use it (the "
                   "variable wins over the file, for the gateway too)")
        else:
            fix = f"use the key the gateway used: set {key.env} to it"
        return (f"audit trail NOT CHECKED, wrong key: {wrong.describe(f'from {key.source}')}; "
                f"{fix}. "
                f"(None of its {verdict.length} entries is sealed with the key given: if that "
                "is the right key, every entry was rewritten.)")
    if verdict.tampering is not None:
        return f"audit trail TAMPERED: {verdict.tampering}"
    if verdict.head is None:
        return "audit trail intact: no entries yet"
    return (f"audit trail intact: {verdict.length} entries; anchor "
            f"{verdict.head.seq}:{verdict.head.hash} (keep it; --anchor catches deleted newest "
            "entries)")


def render_audit(report: dict[str, Any]) -> str:
    """A plain-text table of GET /admin/audit's entries, newest first."""
    rows = [COLUMNS]
    for entry in report["data"]:
        when = datetime.fromtimestamp(entry["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        rows.append((str(entry["seq"]), when, entry["actor"], entry["role"] or "-",
                     entry["tenant"] or "-", entry["source"] or "-", entry["action"],
                     entry["target"] or "-",
                     json.dumps(entry["details"], separators=(",", ":"), sort_keys=True)))
    if len(rows) == 1:
        return "no audit entries"
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in
                                  zip(row[:-1], widths, strict=True)), row[-1]])
                     for row in rows)
