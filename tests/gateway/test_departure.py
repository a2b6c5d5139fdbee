"""Departure: the connection a request came on (a ClientWatch, as gateway/connections.py puts
in the scope) tells it the client left: the answering task is cancelled while its answer is
being made, only marked ``left`` after; ``close`` stops the watching, and a departure made on
a connection already lost cancels at once. Without a ClientWatch it listens with ``receive``."""

from __future__ import annotations

import asyncio

from switchgear.gateway.http import CLIENT_WATCH, ClientWatch, Departure, Message


def lost() -> ClientWatch:
    """The watch of a connection already lost."""
    watch = ClientWatch()
    watch.lose()
    return watch


async def never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def answering(connection: ClientWatch, settle: bool) -> tuple[Departure, asyncio.Task[None]]:
    """A task that makes a departure on ``connection`` (settled at once when ``settle``), then
    waits; the departure and the task, once it waits."""
    made: asyncio.Future[Departure] = asyncio.get_running_loop().create_future()

    async def answer() -> None:
        departure = Departure({CLIENT_WATCH: connection}, never)
        if settle:
            departure.settled()
        made.set_result(departure)
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(answer())
    return await made, task


async def test_a_client_leaving_while_the_answer_is_made_cancels_it() -> None:
    connection = ClientWatch()
    departure, task = await answering(connection, settle=False)
    assert list(connection.departures) == [departure]
    connection.lose()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and departure.left


async def test_once_settled_a_departure_is_only_noted() -> None:
    connection = ClientWatch()
    departure, task = await answering(connection, settle=True)
    connection.lose()
    await asyncio.sleep(0)
    assert departure.left and not task.done()
    task.cancel()


async def test_closing_stops_the_watching() -> None:
    connection = ClientWatch()
    departure, task = await answering(connection, settle=False)
    departure.close()
    assert connection.departures == {}
    connection.lose()
    await asyncio.sleep(0)
    assert not departure.left and not task.done()
    task.cancel()


async def test_a_connection_already_lost_cancels_at_once() -> None:
    departure, task = await answering(lost(), settle=False)
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and departure.left


async def test_without_a_client_watch_receive_tells() -> None:
    gone = asyncio.Event()

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def answer() -> None:
        Departure({}, receive)
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(answer())
    await asyncio.sleep(0)
    gone.set()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
