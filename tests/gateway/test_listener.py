"""The listening socket's close without resets (gateway/listener.py), on real sockets: once new
handshakes are refused, a connection the kernel had queued is still accepted with what its
client sent, a new one is neither accepted nor reset, and once the socket closes it is refused.
"""

from __future__ import annotations

import socket
import sys
import threading

import pytest

from switchgear.gateway.listener import listen, queued, refuse_handshakes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the socket filter and TCP_INFO are Linux's")

QUEUED = 5
#: Long enough for a connection on loopback to be accepted or refused, were it to be.
LOOPBACK_S = 0.3


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize("host", ["127.0.0.1",
                                  pytest.param("::1", marks=pytest.mark.skipif(
                                      not _ipv6(), reason="no IPv6 loopback here"))])
def test_queued_connections_stay_new_ones_wait_then_are_refused(host: str) -> None:
    listening = listen(host, 0)
    listening.listen(16)
    address = listening.getsockname()[:2]
    clients = [socket.create_connection(address, timeout=5) for _ in range(QUEUED)]
    try:
        for number, client in enumerate(clients):
            client.sendall(b"request %d" % number)
        assert queued(listening) == QUEUED

        assert refuse_handshakes(listening)
        with pytest.raises(TimeoutError):  # its SYN was dropped: not accepted, not refused
            socket.create_connection(address, timeout=LOOPBACK_S).close()
        assert queued(listening) == QUEUED
        for number in range(QUEUED):
            accepted, _ = listening.accept()
            with accepted:
                assert accepted.recv(100) == b"request %d" % number
                accepted.sendall(b"answer")
        assert queued(listening) == 0
        assert [client.recv(100) for client in clients] == [b"answer"] * QUEUED

        # A connection begun now is refused once the socket has closed (its SYN sent again).
        outcome: list[BaseException] = []

        def connect() -> None:
            try:
                socket.create_connection(address, timeout=10).close()
            except OSError as error:
                outcome.append(error)

        late = threading.Thread(target=connect)
        late.start()
        late.join(LOOPBACK_S)
        assert late.is_alive()  # still waiting
        listening.close()
        late.join(10)
        assert [type(error) for error in outcome] == [ConnectionRefusedError]
    finally:
        listening.close()
        for client in clients:
            client.close()
