"""`switchgear audit`: check the trail straight from the store, and lay out a listing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from switchgear.config import Config, ConfigError
from switchgear.governance.audit import chain
from switchgear.governance.secret import AuditKey
from switchgear.governance.verify import Verdict, verify
from switchgear.store import missing_sqlite_file, read_store

COLUMNS = ("seq", "time (UTC)", "actor", "role", "tenant", "source", "action", "target",
           "details")


def check_trail(config: Config, anchor: tuple[int, str] | None) -> Verdict:
    """Read the whole trail from the store ``config`` names and check it with the audit key
    (ConfigError when the key or a SQLite file is missing; StoreUnavailable when the store
    cannot be read)."""
    secret = AuditKey.of(config, serving=False).load(create=False)
    url = config.store.url
    if (missing := missing_sqlite_file(url)) is not None:
        raise ConfigError(f"store.url: no SQLite file at {missing}")
    return verify(read_store(url, chain), secret, anchor)


def describe(verdict: Verdict) -> str:
    """One line: intact (with the anchor to keep for later checks), or the first tampering."""
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
