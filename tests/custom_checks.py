"""A team's own guard check, loaded by import path in the tests' configs."""

from __future__ import annotations

from switchgear.exchange import Exchange
from switchgear.guards.checks import Finding


def no_pirates(text: str, role: str, exchange: Exchange) -> Finding | None:
    """Objects to talk like a pirate."""
    return Finding("arr, a pirate") if "arr" in text.lower().split() else None


class Unready:
    """A check whose set-up fails (as one that loads a model file might)."""

    def __init__(self) -> None:
        raise RuntimeError("no model file at /models/classifier.bin")

    def __call__(self, text: str, role: str, exchange: Exchange) -> Finding | None:
        return None
