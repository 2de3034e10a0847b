"""Every accepted TCP connection, guarded: the deadlines Hypercorn lacks.

What Hypercorn 0.18's trio worker does not do, found by reading it: **writes cannot be
interrupted.** ``TCPServer.protocol_send`` runs each ``stream.send_all`` inside a
*shielded* cancel scope, so no cancellation (a session's scope, the drain,
``move_on_after``) reaches a write blocked on a peer that stopped reading: the
session, the drain and the process wait forever.

What does reach a blocked write is the socket: Hypercorn reads and writes through the
stream object it is given, and a cancel scope opened *inside* ``send_all`` is inside the
shield. So :func:`serve_guarded` runs Hypercorn's own ``TCPServer`` on each accepted
connection (as ``hypercorn.trio.serve`` does) but hands it a :class:`GuardedStream`:

- every write must make progress within ``write_timeout`` (and stop at the
  connection's deadline); otherwise the socket is reset (RST) and closed, which wakes
  Hypercorn's reader with ``ClosedResourceError``, so Hypercorn tears the connection
  down and sends the app ``websocket.disconnect``. The write itself then returns as if
  done: raising would make Hypercorn deliver that disconnect from inside the app's own
  ``send``, which can deadlock a session whose reader is waiting on its writer;
- a connection can be given a deadline (:meth:`GuardedStream.cut_at`): the drain and a
  session's maximum duration use it, so they end on time whatever the peer does.

The app learns about its connection through ``asgi_ws.current_connection``: this module
sets it in the task that runs the connection, and Hypercorn starts the ASGI task from
there, so the app's task inherits it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket as stdlib_socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import repr_socket_addr, wrap_app

from ..transports.asgi_ws import current_connection

log = logging.getLogger("vantum.server")

CLOSE_GRACE_S = 0.5
"""After a deadline (the drain's, a call's maximum duration), how long a session still
has to say goodbye and close before its connection is cut."""


@attrs.frozen
class GuardLimits:
    write_timeout: float
    """Seconds a write may wait for room in the socket before the peer is cut."""


class ConnectionTable:
    """The guarded connections open now, and the deadline every one of them has."""

    def __init__(self) -> None:
        self.open: set[GuardedStream] = set()
        self.deadline = math.inf
        self.deadline_reason = ""

    def cut_all_at(self, deadline: float, reason: str) -> None:
        """Every connection, open now or accepted later, ends by ``deadline``."""
        if deadline < self.deadline:
            self.deadline, self.deadline_reason = deadline, reason
        for stream in self.open:
            stream.cut_at(deadline, reason)


class GuardedStream(trio.abc.HalfCloseableStream):
    """The accepted socket as Hypercorn's ``TCPServer`` sees it, with deadlines.

    Implements ``asgi_ws.ConnectionControl`` for the ASGI app running on it.
    """

    def __init__(self, inner: trio.SocketStream, limits: GuardLimits, peer: str) -> None:
        self._inner = inner
        self.socket = inner.socket
        """Hypercorn reads the peer's and its own address from it."""
        self._limits = limits
        self._peer = peer
        self.cut_reason: str | None = None
        self._deadline = math.inf
        self._deadline_reason = ""
        self._read_scope: trio.CancelScope | None = None
        self._write_scope: trio.CancelScope | None = None
        self._aborted = False
        self._websocket = False

    # --- ConnectionControl -------------------------------------------------------

    @property
    def gone(self) -> bool:
        """Nothing written to this connection can reach the peer any more."""
        return self._aborted

    def cut_at(self, deadline: float, reason: str) -> None:
        """End the connection by ``deadline`` (trio time) at the latest."""
        if deadline >= self._deadline:
            return
        self._deadline, self._deadline_reason = deadline, reason
        for scope in (self._read_scope, self._write_scope):
            if scope is not None:
                scope.deadline = min(scope.deadline, deadline)

    # --- trio.abc.HalfCloseableStream ------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        with trio.CancelScope(deadline=self._deadline) as scope:
            self._read_scope = scope
            try:
                return await self._inner.receive_some(max_bytes)
            finally:
                self._read_scope = None
        self._abort(self._deadline_reason)
        raise trio.ClosedResourceError("connection cut")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.gone:
            await trio.lowlevel.checkpoint()  # see the module docstring: not an error
            return
        if not self._websocket and bytes(data[:13]) == b"HTTP/1.1 101 ":
            self._websocket = True
        await self._write(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._aborted:
            raise trio.ClosedResourceError("connection was cut")
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()

    # --- writing -----------------------------------------------------------------

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        """``send_all`` with a deadline on progress: each wait for room in the socket
        may last ``write_timeout``, and none may pass the connection's deadline."""
        sock = self._inner.socket
        with memoryview(data) as view:
            sent = 0
            while sent < len(view) and not self._aborted:
                deadline = min(trio.current_time() + self._limits.write_timeout, self._deadline)
                with trio.CancelScope(deadline=deadline) as scope:
                    self._write_scope = scope
                    try:
                        with view[sent:] as rest:
                            sent += await sock.send(rest)
                    except (OSError, trio.ClosedResourceError):  # reset, or cut meanwhile
                        self._abort(None)
                        return
                    finally:
                        self._write_scope = None
                if scope.cancelled_caught:
                    late = trio.current_time() >= self._deadline
                    self._abort(self._deadline_reason if late else "slow_reader")
                    return

    # --- cutting -----------------------------------------------------------------

    def _note_cut(self, reason: str, detail: str) -> None:
        if self.cut_reason is None:
            self.cut_reason = reason
            # A call cut is news; an idle HTTP keep-alive connection cut by the drain is not.
            level = logging.WARNING if self._websocket else logging.INFO
            log.log(level, "connection from %s cut (%s): %s", self._peer, reason, detail)

    def _abort(self, reason: str | None) -> None:
        """Reset and close the socket now; whoever waits on it wakes up."""
        if reason is not None:
            self._note_cut(reason, _DETAIL.get(reason, reason).format(self._limits.write_timeout))
        if self._aborted:
            return
        self._aborted = True
        sock = self._inner.socket
        with contextlib.suppress(OSError):
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, _RESET)
        sock.close()


_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on with a zero timeout: close() sends RST and frees the buffers at once."""
_DETAIL = {
    "slow_reader": "the peer did not read: a write waited {:.1f} s for room",
    "max_duration": "the call reached its maximum duration and did not end",
    "shutdown": "the server is shutting down and the connection did not end in time",
}


async def serve_guarded(
    app: Any,
    hc: HypercornConfig,
    limits: GuardLimits,
    table: ConnectionTable,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.serve``, with each connection's stream guarded (plain TCP only).

    Follows Hypercorn 0.18's ``worker_serve``: lifespan, listeners, one ``TCPServer``
    task per connection, and on shutdown stop accepting, let connections finish for
    ``hc.graceful_timeout`` s, then cancel them.
    """
    wrapped = wrap_app(app, hc.wsgi_max_body_size, "asgi")
    lifespan_state: dict[str, Any] = {}
    lifespan = Lifespan(wrapped, hc, lifespan_state)
    context = WorkerContext(None)

    async def handle(stream: trio.SocketStream) -> None:
        peer = repr_socket_addr(stream.socket.family, stream.socket.getpeername())
        guarded = GuardedStream(stream, limits, peer)
        if table.deadline < math.inf:
            guarded.cut_at(table.deadline, table.deadline_reason)
        table.open.add(guarded)
        token = current_connection.set(guarded)
        try:
            # TCPServer is annotated for TLS streams; it uses only what a Stream has,
            # plus .socket (and treats a stream without do_handshake as plain TCP).
            server = TCPServer(wrapped, hc, context, dict(lifespan_state), guarded)  # type: ignore[arg-type]
            await server.run()
        finally:
            current_connection.reset(token)
            table.open.discard(guarded)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            sockets = hc.create_sockets()
            listeners = []
            binds = []
            for sock in sockets.insecure_sockets:
                sock.listen(hc.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            task_status.started(binds)
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(
                        partial(
                            trio.serve_listeners, handle, listeners, handler_nursery=server_nursery
                        )
                    )
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + hc.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
