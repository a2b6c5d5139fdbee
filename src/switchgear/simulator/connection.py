"""Ways a simulated server breaks a client's connection on purpose."""

from __future__ import annotations

import socket
import struct

from aiohttp import web

#: SO_LINGER on with a zero timeout: closing the socket sends RST instead of FIN.
_LINGER_ZERO = struct.pack("ii", 1, 0)


def reset_connection(request: web.Request) -> None:
    """Reset the request's TCP connection at once: the client sees ECONNRESET, no response."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


def cut_connection(request: web.Request) -> None:
    """Close the connection after what was already written: a response cut short."""
    transport = request.transport
    if transport is not None:
        transport.close()
