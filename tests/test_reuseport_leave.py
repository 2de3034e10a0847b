"""A worker leaving its port's ``SO_REUSEPORT`` group loses no queued connection.

Linux resets the connections still queued on a listening socket when it closes
(``net.ipv4.tcp_migrate_req`` off, the default), so a draining worker that simply
closed its listener would reset callers the kernel had already handed to it.
``serve_guarded`` with ``stop_accepting`` first accepts the queue, then closes: every
queued caller gets an answer. Real sockets on loopback; the connections are made
while the server's accept loop cannot run (no checkpoint in between), so they are
in the listener's queue when the leave starts.
"""

from __future__ import annotations

import socket
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig

from vantum.asgi import serve_lifespan
from vantum.server.connections import ConnectionTable, GuardLimits, serve_guarded
from vantum.server.seat import reuseport_socket
from vantum.transports.browser import ASGIReceive, ASGISend

QUEUED = 24


async def _hello(scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    body = b"hello\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _answer(client: socket.socket) -> bytes:
    """What the server sent before closing (empty if it reset the connection)."""
    sock = trio.socket.from_stdlib_socket(client)
    received = b""
    try:
        while chunk := await sock.recv(4096):
            received += chunk
            if received.endswith(b"hello\n"):
                break
    except ConnectionResetError:
        return b""
    finally:
        sock.close()
    return received


async def test_connections_queued_when_a_listener_leaves_its_group_are_served() -> None:
    own = reuseport_socket("127.0.0.1", 0)
    port = own.getsockname()[1]
    hc = HypercornConfig()
    hc.bind = [f"fd://{own.detach()}"]
    hc.accesslog = None
    hc.graceful_timeout = 1.0
    leave = trio.Event()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                serve_guarded,
                _hello,
                hc,
                GuardLimits(5.0, 1 << 16),
                ConnectionTable(),
                shutdown_trigger=stop.wait,
                stop_accepting=leave.wait,
            )
        )
        # Blocking connects with no checkpoint: the kernel completes each handshake
        # and queues it on the listener; the server's accept task does not run.
        clients = []
        for _ in range(QUEUED):
            client = socket.create_connection(("127.0.0.1", port))
            client.sendall(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
            clients.append(client)
        leave.set()
        answers: list[bytes] = []

        async def collect(client: socket.socket) -> None:
            answers.append(await _answer(client))

        with trio.fail_after(10):
            async with trio.open_nursery() as readers:
                for client in clients:
                    readers.start_soon(collect, client)
        # The listener is gone: the port refuses new connections.
        refused = False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except ConnectionRefusedError:
            refused = True
        stop.set()
    served = [a for a in answers if a.startswith(b"HTTP/1.1 200") and a.endswith(b"hello\n")]
    assert len(served) == QUEUED, answers
    assert refused
