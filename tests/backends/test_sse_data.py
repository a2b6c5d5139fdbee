"""Reading server-sent events' ``data:`` payloads from raw chunks cut anywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator

from switchgear.backends.openai_http import SSEData, sse_data

RAW = [b'data: {"a"', b": 1}\r\n\r\n: a comment\nevent: x\ndata:", b" 2\n\ndata: [DO", b"NE]"]


async def pieces() -> AsyncIterator[bytes]:
    for chunk in RAW:
        yield chunk


async def test_payloads_come_whole_wherever_the_chunks_are_cut() -> None:
    assert [data async for data in sse_data(pieces())] == [b'{"a": 1}', b"2", b"[DONE]"]


def test_a_line_is_read_once_it_is_complete() -> None:
    reader = SSEData()
    assert [reader.feed(chunk) for chunk in RAW] == [[], [b'{"a": 1}'], [b"2"], []]
    assert reader.feed(b"\n") == [b"[DONE]"]
