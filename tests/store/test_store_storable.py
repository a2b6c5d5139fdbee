"""storable's fast test: a record whose one-line strings are printable is stored as it is."""

from __future__ import annotations

import sys
from dataclasses import replace

from switchgear.store.records import RequestRecord, storable
from switchgear.store.text import UNSAFE_IN_LINE


def test_every_character_unsafe_in_a_line_is_unprintable() -> None:
    unsafe = [chr(code) for code in range(sys.maxunicode + 1)
              if UNSAFE_IN_LINE.fullmatch(chr(code))]
    assert unsafe and not any(character.isprintable() for character in unsafe)


def record(**values: object) -> RequestRecord:
    base = RequestRecord(request_id="r", tenant="t", model="m", deployment="d",
                         operation="chat", stream=False, received_at=1.0, first_token_at=None,
                         done_at=2.0, prompt_tokens=1, completion_tokens=1, status=200,
                         error_type=None, truncated=False, attempts=1, cost=0.0)
    return replace(base, **values)  # type: ignore[arg-type]


def test_safe_but_unprintable_strings_are_kept_as_they_are() -> None:
    kept = record(user_id="no-break\u00a0space", feature="zero\u200bwidth")
    assert storable(kept) is kept


def test_unsafe_strings_are_still_replaced() -> None:
    made = storable(record(user_id="nul\x00", feature="lone\ud800", prompt="tab\tok\x01"))
    assert (made.user_id, made.feature, made.prompt) == ("nul\ufffd", "lone\ufffd",
                                                         "tab\tok\ufffd")
