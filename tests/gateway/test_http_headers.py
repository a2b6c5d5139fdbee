"""Request headers as the gateway reads them: the first of a repeated name wins (a second
Authorization cannot override the first), names are matched in lower case as servers give
them, and a missing one is None."""

from __future__ import annotations

from switchgear.gateway.http import bearer_token, header


def test_the_first_of_a_repeated_header_wins() -> None:
    scope = {"headers": [(b"authorization", b"Bearer first"), (b"x-a", b"1"),
                         (b"authorization", b"Bearer second")]}
    assert bearer_token(scope) == "first"
    assert header(scope, b"x-a") == b"1" and header(scope, b"x-missing") is None
