"""Every accepted TCP connection, guarded: the deadlines and checks Hypercorn lacks.

What Hypercorn 0.18's trio worker does not do, found by reading it:

- **Writes cannot be interrupted.** ``TCPServer.protocol_send`` runs each
  ``stream.send_all`` inside a *shielded* cancel scope, so no cancellation (a session's
  scope, the drain, ``move_on_after``) reaches a write blocked on a peer that stopped
  reading: the session, the drain and the process wait forever.
- **A close handshake has no deadline.** After a close frame Hypercorn waits for the
  peer's reply as long as the TCP connection lives, and after closing for an over-size
  message (1009) it never tells the app the peer is gone, so the session runs on; its
  message buffer keeps growing with whatever the peer still sends.
- **Some protocol errors drop the TCP connection with no close frame** (wsproto reports
  them as a received ``CloseConnection`` and Hypercorn never answers it), e.g. a text
  frame that is not UTF-8 (RFC 6455 wants 1007).

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
  session's maximum duration use it, so they end on time whatever the peer does;
- once the server has sent a close frame, the peer has ``write_timeout`` to close;
- inbound WebSocket bytes go through ``ws_inspect.InboundFrames`` before Hypercorn sees
  them: an over-limit frame is refused from its header (1009), non-UTF-8 text with 1007,
  and a connection wsproto drops without a close frame gets a 1002 close first.

The app learns about its connection through ``asgi_ws.current_connection``: this module
sets it in the task that runs the connection, and Hypercorn starts the ASGI task from
there, so the app's task inherits it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
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
from .ws_inspect import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    FAILURE_CODES,
    InboundFrames,
    Violation,
    close_code_sent,
    close_frame,
)

log = logging.getLogger("vantum.server")

CLOSE_GRACE_S = 0.5
"""After a deadline (the drain's, a call's maximum duration), how long a session still
has to say goodbye and close before its connection is cut."""
_LINGER_MAX = 8 << 20
"""Bytes read and dropped at most while waiting for a failed peer to hang up."""


@attrs.frozen
class GuardLimits:
    write_timeout: float
    """Seconds a write may wait for room in the socket before the peer is cut."""
    max_message: int
    """Largest WebSocket message accepted, in bytes."""


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
        self._writing = False
        self._write_done: trio.Event | None = None
        self._read_scope: trio.CancelScope | None = None
        self._write_scope: trio.CancelScope | None = None
        self._aborted = False
        self._peer_eof = False
        # WebSocket state, once the server has answered an upgrade with 101.
        self._frames: InboundFrames | None = None
        self._carry = b""
        self._close_sent_at: float | None = None
        self._eof_to_app = False
        """Hypercorn is told the peer closed: the connection has failed."""
        self._drop_writes = False
        """The guard sent its own close frame: nothing may follow it."""
        self._linger = False

    # --- ConnectionControl -------------------------------------------------------

    @property
    def gone(self) -> bool:
        """Nothing written to this connection can reach the peer any more."""
        return self._aborted or self._drop_writes

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
        if self._eof_to_app:
            await trio.lowlevel.checkpoint()
            return b""
        data: bytes | bytearray
        if self._carry:
            data, self._carry = self._carry, b""
            await trio.lowlevel.checkpoint()
        else:
            data = await self._read(max_bytes)
            if self._eof_to_app:  # failed while we waited: nothing more is handed on
                return b""
            if not data:
                self._peer_eof = True
                return data
        if self._frames is not None:
            return await self._inspect(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.gone:
            await trio.lowlevel.checkpoint()  # see the module docstring: not an error
            return
        self._watch_outbound(data)
        await self._write(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if self._aborted:
            raise trio.ClosedResourceError("connection was cut")
        try:
            if self._owes_close_frame():
                # wsproto failed the connection and Hypercorn is dropping it silently.
                reason = "protocol error"
                await self._send_close(CLOSE_PROTOCOL_ERROR, reason)
                self._note_cut("bad_frame", f"closed with {CLOSE_PROTOCOL_ERROR}: {reason}")
            if not self._aborted:
                await self._inner.send_eof()
        except BaseException:
            self._abort(None)
            raise

    async def aclose(self) -> None:
        try:
            if self._linger and not self._aborted and not self._peer_eof:
                await self._drain_until_peer_closes()
        finally:
            self._inner.socket.close()
        await trio.lowlevel.checkpoint()

    # --- reading -----------------------------------------------------------------

    def _read_deadline(self) -> float:
        if self._close_sent_at is None:
            return self._deadline
        return min(self._deadline, self._close_sent_at + self._limits.write_timeout)

    async def _read(self, max_bytes: int | None) -> bytes | bytearray:
        with trio.CancelScope(deadline=self._read_deadline()) as scope:
            self._read_scope = scope
            try:
                return await self._inner.receive_some(max_bytes)
            finally:
                self._read_scope = None
        if self._eof_to_app:  # woken to report the failure
            return b""
        if trio.current_time() >= self._deadline:
            self._abort(self._deadline_reason)
        else:
            self._abort(None)  # the peer did not answer our close frame in time
        raise trio.ClosedResourceError("connection cut")

    async def _inspect(self, data: bytes | bytearray) -> bytes | bytearray:
        assert self._frames is not None
        n, violation = self._frames.feed(data)
        if violation is not None:
            await self._fail(violation)
            return data[: violation.offset]
        if n < len(data):
            self._carry = bytes(data[n:])
            return data[:n]
        return data

    async def _fail(self, violation: Violation) -> None:
        """The peer broke the rules: close frame, then tell Hypercorn it hung up."""
        self._note_cut(violation.cut, f"closed with {violation.code}: {violation.reason}")
        self._eof_to_app = True
        self._linger = True
        await self._send_close(violation.code, violation.reason)
        self._drop_writes = True

    async def _drain_until_peer_closes(self) -> None:
        """Read and drop what the peer still sends until it hangs up, so that closing
        does not reset the connection before it has read our close frame."""
        dropped = 0
        closed_at = self._close_sent_at or trio.current_time()
        with trio.move_on_at(min(self._deadline, closed_at + self._limits.write_timeout)):
            while dropped < _LINGER_MAX:
                try:
                    data = await self._inner.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                dropped += len(data)
        self._abort(None)  # it did not hang up: reset

    # --- writing -----------------------------------------------------------------

    def _watch_outbound(self, data: bytes | bytearray | memoryview) -> None:
        if self._frames is None:
            if bytes(data[:13]) == b"HTTP/1.1 101 ":
                self._upgraded(bytes(data))
            return
        code = close_code_sent(data)
        if code is None:
            return
        self._note_close_sent()
        if code in FAILURE_CODES:
            # Hypercorn (or the app) failed the connection, e.g. a compressed message
            # that inflated past the limit: the session must hear of it now.
            self._note_cut(
                "oversize" if code == CLOSE_TOO_BIG else "bad_frame", f"closed with {code}"
            )
            self._eof_to_app = True
            self._linger = True
            if self._read_scope is not None:
                self._read_scope.cancel()

    def _upgraded(self, response: bytes) -> None:
        """From here on the peer sends frames. (Frames sent before the 101 cannot occur:
        Hypercorn answers data that arrives before the app accepts with HTTP 400.)"""
        head = response.split(b"\r\n\r\n", 1)[0].lower()
        deflate = b"sec-websocket-extensions" in head and b"permessage-deflate" in head
        self._frames = InboundFrames(self._limits.max_message, deflate=deflate)

    def _note_close_sent(self) -> None:
        if self._close_sent_at is None:
            self._close_sent_at = trio.current_time()
            if self._read_scope is not None:
                self._read_scope.deadline = min(self._read_scope.deadline, self._read_deadline())

    def _owes_close_frame(self) -> bool:
        return (
            self._frames is not None
            and self._close_sent_at is None
            and not self._peer_eof
            and not self._frames.peer_closed
        )

    async def _send_close(self, code: int, reason: str) -> None:
        if self._close_sent_at is not None or self.gone:
            return
        self._note_close_sent()
        await self._write(close_frame(code, reason))

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        """``send_all`` with a deadline on progress: each wait for room in the socket
        may last ``write_timeout``, and none may pass the connection's deadline.

        Writes are serialised here (Hypercorn serialises its own, the guard's close
        frames must not land inside one of them). Like ``trio.SocketStream.send_all``
        it writes without blocking and waits for room only when the socket is full,
        but it does not yield after a write that did not wait: Hypercorn's send lock
        has just yielded, and a second trip through the scheduler per message was a
        measurable share of the cost of a frame.
        """
        while self._writing:
            if self._write_done is None:
                self._write_done = trio.Event()
            await self._write_done.wait()
        self._writing = True
        try:
            await self._write_unshared(data)
        finally:
            self._writing = False
            if self._write_done is not None:
                self._write_done.set()
                self._write_done = None

    async def _write_unshared(self, data: bytes | bytearray | memoryview) -> None:
        sock = self._inner.socket
        await trio.lowlevel.checkpoint_if_cancelled()
        with memoryview(data) as view:
            sent = 0
            while sent < len(view):
                fd = sock.fileno()
                if self._aborted or fd < 0:
                    return
                try:
                    with view[sent:] as rest:
                        sent += os.write(fd, rest)
                    continue
                except BlockingIOError:
                    pass
                except OSError:  # reset by the peer
                    self._abort(None)
                    return
                deadline = min(trio.current_time() + self._limits.write_timeout, self._deadline)
                with trio.CancelScope(deadline=deadline) as scope:
                    self._write_scope = scope
                    try:
                        await trio.lowlevel.wait_writable(sock)
                    except trio.ClosedResourceError:  # cut meanwhile
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
            level = logging.WARNING if self._frames is not None else logging.INFO
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


class _KeepOpen(trio.abc.Listener[trio.SocketStream]):
    """A listener that ``trio.serve_listeners`` cannot close: it closes what it serves
    when it stops, and a closing listener resets its queued connections, so
    :func:`serve_guarded` closes the socket itself, after taking the queue when it
    leaves a group (:func:`_leave`)."""

    def __init__(self, inner: trio.SocketListener) -> None:
        self.inner = inner

    async def accept(self) -> trio.SocketStream:
        return await self.inner.accept()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def _leave(
    listeners: list[tuple[stdlib_socket.socket, trio.SocketListener]],
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept every connection queued on ``listeners``, then close them, with no
    checkpoint in between: a connection the kernel queues after the last ``accept``
    and before ``close`` (the same few microseconds of this thread) is the only one
    the close can still reset."""
    for sock, listener in listeners:
        while True:
            try:
                conn, _ = sock.accept()  # non-blocking (Hypercorn set it so)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ECONNABORTED: that one is gone already
                log.debug("accept while leaving: %s", exc)
                continue
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
            nursery.start_soon(handle, stream)
        listener.socket.close()
    log.info("left the port's group: no new connections come here")


async def serve_guarded(
    app: Any,
    hc: HypercornConfig,
    limits: GuardLimits,
    table: ConnectionTable,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    stop_accepting: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.serve``, with each connection's stream guarded (plain TCP only).

    Follows Hypercorn 0.18's ``worker_serve``: lifespan, listeners, one ``TCPServer``
    task per connection, and on shutdown stop accepting, let connections finish for
    ``hc.graceful_timeout`` s, then cancel them.

    ``stop_accepting`` (a listener in a ``SO_REUSEPORT`` group): once it returns, the
    listeners are closed, before the shutdown, so the kernel sends new connections to
    the group's other listeners. Linux resets whatever is still queued on a listener
    when it closes (``net.ipv4.tcp_migrate_req`` off, the default), so the queue is
    accepted first (:func:`_leave`) and served like any connection.
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
                            trio.serve_listeners,
                            handle,
                            [_KeepOpen(listener) for listener in listeners],
                            handler_nursery=server_nursery,
                        )
                    )
                    await (stop_accepting or shutdown_trigger)()
                    accepting.cancel_scope.cancel()
                if stop_accepting is not None:
                    pairs = list(zip(sockets.insecure_sockets, listeners, strict=True))
                    _leave(pairs, handle, server_nursery)
                    await shutdown_trigger()
            finally:
                for listener in listeners:
                    listener.socket.close()  # idempotent; _leave may have closed it
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + hc.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
