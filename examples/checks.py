"""A team's own guard check, as `guards: [{check: custom, path: "checks:shouting"}]` loads it
(this folder on PYTHONPATH): any callable ``(text, role, exchange) -> Finding | None``."""

from __future__ import annotations

from switchgear.exchange import Exchange
from switchgear.guards.checks import Finding


def shouting(text: str, role: str, exchange: Exchange) -> Finding | None:
    """Objects to an answer written mostly in capitals (a stand-in for a real classifier)."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 20 and sum(c.isupper() for c in letters) > 0.8 * len(letters):
        return Finding("mostly capitals")
    return None
