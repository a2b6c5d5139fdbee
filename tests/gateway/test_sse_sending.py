"""send_events: events that are ready together leave in one write, the first as soon as the
next has to be waited for; a client that leaves stops the stream; a cancelled sender cancels
what it was waiting on; the events are closed in every case."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from switchgear.gateway.http import Departure, Message, send_events


class Client:
    """The ASGI side: what was sent (the body of each write), and a disconnect on demand."""

    def __init__(self, stall_at: int | None = None) -> None:
        self.stall_at = stall_at
        self.writes: list[bytes] = []
        self.ended = False
        self.wrote = asyncio.Event()
        self.gone = asyncio.Event()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            if len(self.writes) == self.stall_at:
                await asyncio.Event().wait()  # a slow client: the write waits for room
            self.writes.append(message["body"])
            self.ended = not message["more_body"]
            self.wrote.set()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def watch(self) -> Departure:
        """What watches this client while an answer is sent (ASGI's receive: no ClientWatch)."""
        departure = Departure({}, self.receive)
        departure.settled()
        return departure


class Source:
    """Events in groups: a group's events are ready together; ``release`` lets the next come."""

    def __init__(self, *groups: list[bytes], spin: bool = False) -> None:
        self.groups = groups
        self.spin = spin
        self.gates = [asyncio.Event() for _ in groups]
        self.closed = False
        self.cancelled = False

    def release(self, group: int) -> None:
        self.gates[group].set()

    async def events(self) -> AsyncGenerator[bytes, None]:
        try:
            for gate, group in zip(self.gates, self.groups, strict=True):
                # Spinning waits on no future, so a cancel is thrown in rather than delivered.
                while self.spin and not gate.is_set():  # noqa: ASYNC110
                    await asyncio.sleep(0)
                await gate.wait()
                for data in group:
                    yield data
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.closed = True


async def test_events_ready_together_leave_in_one_write() -> None:
    client, source = Client(), Source([b"a", b"b"], [b"c", b"d", b"e"])
    source.release(0)
    sending = asyncio.ensure_future(send_events(client.send, client.watch(), source.events(),
                                                "req"))
    await client.wrote.wait()
    assert client.writes == [b"ab"]  # the first group went out while the next is awaited
    source.release(1)
    await sending
    assert client.writes == [b"ab", b"cde"] and client.ended and source.closed


async def test_a_stream_ready_at_once_is_one_write_that_ends_it() -> None:
    client, source = Client(), Source([b"a", b"b", b"c"])
    source.release(0)
    await send_events(client.send, client.watch(), source.events(), "req")
    assert client.writes == [b"abc"] and client.ended and source.closed


async def test_a_client_that_left_stops_the_stream() -> None:
    client, source = Client(), Source([b"a"], [b"b"], [b"c"])
    source.release(0)
    sending = asyncio.ensure_future(send_events(client.send, client.watch(), source.events(),
                                                "req"))
    await client.wrote.wait()
    client.gone.set()
    await asyncio.sleep(0)
    source.release(1)
    source.release(2)
    await sending
    assert client.writes == [b"a"] and not client.ended and source.closed


@pytest.mark.parametrize("spin", [False, True])
async def test_cancelling_the_sender_cancels_what_it_waits_on(spin: bool) -> None:
    client, source = Client(), Source([b"a"], [b"b"], spin=spin)
    source.release(0)
    sending = asyncio.ensure_future(send_events(client.send, client.watch(), source.events(),
                                                "req"))
    await client.wrote.wait()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert source.cancelled and source.closed and client.writes == [b"a"]


async def test_a_failure_while_waiting_reaches_the_sender() -> None:
    client = Client()

    async def failing() -> AsyncGenerator[bytes, None]:
        yield b"a"
        await asyncio.sleep(0)
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        await send_events(client.send, client.watch(), failing(), "req")
    assert client.writes == [b"a"]


async def test_cancelled_while_writing_what_is_ready_the_producers_are_cancelled_too() -> None:
    client, source = Client(stall_at=0), Source([b"a"], [b"b"])
    source.release(0)
    sending = asyncio.ensure_future(send_events(client.send, client.watch(), source.events(),
                                                "req"))
    for _ in range(5):
        await asyncio.sleep(0)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert source.cancelled and source.closed and client.writes == []
