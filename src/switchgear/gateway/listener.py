"""The gateway's listening socket: bound before the app starts, so that a busy port is reported
as such (never after a "switchgear ready" that was not true), and closed at the end without
resetting a connection the kernel had already taken on.

Closing a listening socket resets every connection in its accept queue. To the client (a load
balancer) those were connected: it may have sent a request on one, and a balancer does not send
a POST again once it was sent. So the gateway first stops the handshakes (a socket filter drops
every new SYN: the client sends it again a second later, finds the port closed, and goes to
another replica), serves what is queued, and closes once the queue is empty. Linux only;
elsewhere the socket closes as it is.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys

#: SO_ATTACH_FILTER (linux/asm-generic/socket.h), which Python's socket module does not name.
SO_ATTACH_FILTER = 26
#: A classic BPF program, run by the kernel on each segment the listening socket receives (the
#: data starts at the TCP header): a SYN without ACK (byte 13 holds the flags) is dropped, every
#: other segment (the handshakes under way, completing) passes. Instructions: code, jt, jf, k.
DROP_SYN = (
    (0x30, 0, 0, 13),          # load the byte at offset 13: the flags
    (0x54, 0, 0, 0x12),        # keep SYN and ACK
    (0x15, 1, 0, 0x02),        # SYN alone: jump to the drop
    (0x06, 0, 0, 0xFFFFFFFF),  # pass the whole segment
    (0x06, 0, 0, 0),           # drop it
)
#: Where struct tcp_info (linux/tcp.h) holds tcpi_unacked: a listening socket's accept queue.
TCPI_UNACKED_AT = 24


class CannotListen(Exception):
    """The gateway cannot listen where it was told to; the message says why and what to pass."""


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host`` and ``port`` as uvicorn would bind it (IPv6 when the host
    has a colon), ready for it to listen on; CannotListen (in the user's words) when the address
    is in use, unknown, not this machine's, or not allowed."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise CannotListen(_why_not(host, port, error)) from None
    sock.set_inheritable(True)
    return sock


def refuse_handshakes(sock: socket.socket) -> bool:
    """Drop every new connection's first segment on the listening ``sock`` from now on, while
    the handshakes under way complete and the accept queue stays; whether that could be done
    (Linux: yes)."""
    if not sys.platform.startswith("linux"):
        return False
    program = b"".join(struct.pack("HBBI", *instruction) for instruction in DROP_SYN)
    instructions = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog: the number of instructions and their address (the kernel copies them)
    fprog = struct.pack("HL", len(DROP_SYN), ctypes.addressof(instructions))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def queued(sock: socket.socket) -> int:
    """Connections in the listening ``sock``'s accept queue, handshakes done, not yet accepted
    (0 where the kernel does not say)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCPI_UNACKED_AT + 4)
    except (OSError, AttributeError):  # AttributeError: no TCP_INFO on this platform
        return 0
    count: int = struct.unpack_from("I", info, TCPI_UNACKED_AT)[0]
    return count


def _why_not(host: str, port: int, error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return f"cannot listen on {host!r}: no such host or address; pass --host (e.g. 127.0.0.1)"
    if error.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is in use (another process listens there, perhaps "
                "another gateway): stop it, or pass --port")
    if error.errno == errno.EACCES:
        return (f"cannot listen on port {port} of {host}: permission denied (ports below 1024 "
                "need privileges); pass --port")
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine; pass --host"
    return f"cannot listen on {host} port {port}: {error.strerror or error}"
