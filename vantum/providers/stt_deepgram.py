"""Deepgram live speech-to-text as an actor, with transparent reconnects.

A call must not lose words because one WebSocket died, so the actor keeps every
byte of audio that no *final* result has covered yet. When the socket drops (or
the server closes it for any reason we did not ask for) it reconnects with a
small backoff and re-sends that audio first; Deepgram treats each connection as
a fresh stream, so timestamps from the new connection are shifted by the stream
position the replay started at. Finals tile the stream, so nothing a final
already covered is transcribed twice.

``FinalizeDone`` is emitted exactly once per ``Finalize`` marker: on the first
``from_finalize`` result after it, or after ``finalize_timeout`` if none comes.
A pending ``Finalize`` is re-sent after a reconnect, since its answer died with
the old socket. An unanswered ``Finalize`` is also how a stalled server shows
(the socket is up but nothing comes back), so its first timeout drops that
connection and replays on a fresh one; only a second timeout gives up. A frame
that is not a Deepgram message is handled the same way (drop, replay).
"""

from __future__ import annotations

import collections
import logging
import math
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable
from functools import partial

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from ..errors import STTError
from . import deepgram_messages as dm
from .base import (
    Finalize,
    FinalizeDone,
    SpeechStarted,
    STTEvent,
    STTInput,
    TranscriptEvent,
    UtteranceEnd,
)
from .reporting import report

log = logging.getLogger("vantum.stt.deepgram")

Socket = trio.SocketStream | trio.SSLStream[trio.SocketStream]

REPLAY_CHUNK = 8_000
"""Bytes per message when re-sending buffered audio (250 ms): few, not huge, frames."""


@attrs.define
class _Stream:
    """What survives reconnects: unacknowledged audio and pending Finalize markers."""

    max_bytes: int
    buffer: bytearray = attrs.Factory(bytearray)
    buffer_start: int = 0
    """Stream byte offset of ``buffer[0]``."""
    received: int = 0
    audio_done: bool = False
    finalize_deadlines: collections.deque[float] = attrs.Factory(collections.deque)
    timer_scope: trio.CancelScope | None = None
    last_speech_started: float = -math.inf
    last_utterance_end: float = -math.inf
    overflowed: bool = False
    current: _Conn | None = None
    """The live connection, so a stalled one can be dropped."""
    head_retried: bool = False
    """The oldest pending Finalize already cost one reconnect."""
    messages: int = 0
    """Deepgram messages received, over all connections (a connection that got one
    made progress, so the count of failures in a row starts again)."""

    def finalize_answered(self) -> None:
        self.finalize_deadlines.popleft()
        self.head_retried = False

    def append(self, data: bytes) -> None:
        self.buffer += data
        self.received += len(data)
        excess = len(self.buffer) - self.max_bytes
        if excess > 0:
            excess += excess % 2
            log.warning(
                "replay buffer full: %d bytes no final covered will not be replayed", excess
            )
            del self.buffer[:excess]
            self.buffer_start += excess

    def trim_to(self, position: int) -> None:
        position = min(position - position % 2, self.received)
        if position > self.buffer_start:
            del self.buffer[: position - self.buffer_start]
            self.buffer_start = position

    def reschedule(self) -> None:
        if self.timer_scope is not None:
            self.timer_scope.cancel()


@attrs.define
class _Conn:
    """One WebSocket's share of the stream, and what its tasks tell each other while
    it is up. How it ended is not kept here: that is the :class:`_Ending` the
    connection's functions return."""

    offset: int
    """Stream byte offset of the first byte this connection received."""
    close_sent: bool = False
    """The sender sent CloseStream: a normal close (1000) now means we are done."""
    scope: trio.CancelScope | None = None
    """Cancelled by the finalize timer, and only when it finds the connection stalled."""
    delivering: bool = False
    """Handing a message to the pipeline: not a safe point to drop the connection."""


_DECISIVE = ("fatal", "finished", "malformed", "stall")
"""When two parties saw a connection end (one was already resuming as the other
cancelled it), the kind listed first wins; every other kind ranks after these."""


@attrs.frozen
class _Ending:
    """How one connection ended: the connect loop decides on this value alone.

    ``kind`` is ``finished`` (after our CloseStream: the stream is over), ``fatal``
    (``error`` says why; retrying cannot help), or what :func:`report` counts before
    a reconnect: ``malformed``, ``stall``, ``disconnect``, ``connect``, ``rejected``
    or ``rate_limit``.
    """

    kind: str
    reason: str = ""
    error: STTError | None = None
    got_message: bool = False
    """Deepgram answered on this connection at least once."""

    def rank(self) -> int:
        return _DECISIVE.index(self.kind) if self.kind in _DECISIVE else len(_DECISIVE)


class DeepgramSTT:
    """Streams 16 kHz PCM to Deepgram and forwards its transcripts as STT events."""

    name = "deepgram"

    def __init__(
        self,
        api_key: str,
        url: str = "wss://api.deepgram.com/v1/listen",
        *,
        model: str = "nova-3",
        endpointing_ms: int = 300,
        utterance_end_ms: int = 1000,
        keepalive_interval: float = 4.0,
        finalize_timeout: float = 2.0,
        max_reconnects: int = 3,
        reconnect_backoff: float = 0.1,
        close_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        max_replay_seconds: float = 60.0,
    ) -> None:
        self.api_key = api_key
        self.url = url
        self.model = model
        self.endpointing_ms = endpointing_ms
        self.utterance_end_ms = utterance_end_ms
        self.keepalive_interval = keepalive_interval
        self.finalize_timeout = finalize_timeout
        self.max_reconnects = max_reconnects
        self.reconnect_backoff = reconnect_backoff
        self.close_timeout = close_timeout
        self.connect_timeout = connect_timeout
        self.max_replay_seconds = max_replay_seconds

    def listen_url(self, language: str) -> str:
        options = dm.ListenOptions(
            model=self.model,
            language=language,
            endpointing_ms=self.endpointing_ms,
            utterance_end_ms=self.utterance_end_ms,
        )
        return dm.listen_url(self.url, options)

    async def run(
        self,
        audio: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        *,
        language: str = "en-US",
    ) -> None:
        stream = _Stream(max_bytes=round(self.max_replay_seconds * dm.BYTES_PER_SECOND))
        error: STTError | None = None
        async with audio, events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._finalize_timer, stream, events)
                try:
                    await self._connect_loop(audio, events, stream, language)
                except STTError as exc:
                    error = exc
                nursery.cancel_scope.cancel()
            # Also when giving up: a turn waits for the answer to its Finalize, and
            # an engine that takes one and dies without it would hold that turn forever.
            try:
                for _ in range(len(stream.finalize_deadlines)):
                    await events.send(FinalizeDone())
            except trio.BrokenResourceError:
                if error is None:
                    raise
            if error is not None:
                raise error

    async def _connect_loop(
        self,
        audio: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        stream: _Stream,
        language: str,
    ) -> None:
        url = self.listen_url(language)
        failures = 0
        while True:
            ending = await self._connect_once(url, audio, events, stream, language)
            if ending.error is not None:
                report(self.name, "fatal")
                raise ending.error
            if ending.kind == "finished":
                return
            report(self.name, ending.kind)
            failures = 1 if ending.got_message else failures + 1
            if failures > self.max_reconnects:
                raise STTError(
                    f"Deepgram stream failed {failures} times in a row; last: {ending.reason}"
                )
            log.warning("Deepgram: %s; reconnecting (attempt %d)", ending.reason, failures)
            await trio.sleep(self.reconnect_backoff * 2 ** (failures - 1))

    async def _connect_once(
        self,
        url: str,
        audio: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        stream: _Stream,
        language: str,
    ) -> _Ending:
        """One connection's life, and how it ended.

        The session's own ending (from the sender or receiver) and a stall (the
        finalize timer cancelled ``stalled``) can both happen; the more decisive
        one is the connection's ending (:data:`_DECISIVE`).
        """
        conn = _Conn(offset=stream.buffer_start)
        messages = stream.messages
        stalled = trio.CancelScope()
        try:
            ending = await self._connection(url, conn, stalled, audio, events, stream, language)
        except ConnectionRejected as exc:
            ending = self._rejection(exc)
        except HandshakeError as exc:
            ending = _Ending("connect", f"cannot connect: {exc!r}")
        candidates = [ending]
        if stalled.cancel_called:
            reason = f"no answer to Finalize in {self.finalize_timeout:g}s (stalled)"
            candidates.append(_Ending("stall", reason))
        decisive = min(candidates, key=_Ending.rank)
        return attrs.evolve(decisive, got_message=stream.messages > messages)

    async def _connection(
        self,
        url: str,
        conn: _Conn,
        stalled: trio.CancelScope,
        audio: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        stream: _Stream,
        language: str,
    ) -> _Ending:
        """Open, run and close one WebSocket inside ``stalled`` (the finalize timer's
        handle on it); raises HandshakeError / ConnectionRejected unwrapped.

        We own the TCP stream (rather than ``open_websocket_url``) because
        trio-websocket leaves a client socket open when the server closes first
        or refuses the handshake; here it is always closed on the way out.
        """
        # A stall cancels everything below before the session can say how it ended.
        ending = _Ending("disconnect", "socket closed unexpectedly (code None)")
        sock, host, resource = await self._open_stream(url)
        try:
            try:
                with stalled:
                    async with trio.open_nursery() as nursery:
                        conn.scope = stalled
                        stream.current = conn
                        with trio.move_on_after(self.connect_timeout) as handshake:
                            ws = await wrap_client_stream(
                                nursery,
                                sock,
                                host,
                                resource,
                                extra_headers=dm.auth_headers(self.api_key),
                            )
                        if handshake.cancelled_caught:
                            raise ConnectionTimeout
                        ending = await self._session(ws, conn, audio, events, stream, language)
                        with trio.move_on_after(self.close_timeout):
                            await ws.aclose()
                        nursery.cancel_scope.cancel()
            except* HandshakeError as group:
                raise group.exceptions[0] from None
        finally:
            stream.current = None
            await trio.aclose_forcefully(sock)
        return ending

    async def _open_stream(self, url: str) -> tuple[Socket, str, str]:
        """TCP (or TLS) connection for ``url``, plus the Host header and resource."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise STTError(f"not a WebSocket URL: {self.url!r}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{port}"
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            with trio.fail_after(self.connect_timeout):
                if secure:
                    context = ssl.create_default_context()
                    return (
                        await trio.open_ssl_over_tcp_stream(
                            parts.hostname, port, ssl_context=context, https_compatible=True
                        ),
                        host,
                        resource,
                    )
                return await trio.open_tcp_stream(parts.hostname, port), host, resource
        except trio.TooSlowError:
            raise ConnectionTimeout from None
        except OSError as exc:
            raise HandshakeError(f"cannot reach {parts.hostname}:{port}: {exc}") from exc

    def _rejection(self, exc: ConnectionRejected) -> _Ending:
        """How a refused handshake ends the connection; raises when retrying cannot
        help, after reporting it (``auth`` for a refused key, else ``rejected``)."""
        body = (exc.body or b"").decode(errors="replace")[:200]
        if exc.status_code in (401, 403):
            report(self.name, "auth")
            raise STTError(
                f"Deepgram refused the API key (HTTP {exc.status_code}); check the key. {body}"
            ) from None
        if exc.status_code != 429 and exc.status_code < 500:
            report(self.name, "rejected")
            raise STTError(
                f"Deepgram refused the stream (HTTP {exc.status_code}): {body}"
            ) from None
        kind = "rate_limit" if exc.status_code == 429 else "rejected"
        return _Ending(kind, f"handshake refused with HTTP {exc.status_code}")

    async def _session(
        self,
        ws: WebSocketConnection,
        conn: _Conn,
        audio: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        stream: _Stream,
        language: str,
    ) -> _Ending:
        """Send and receive until one side knows how the connection ends."""
        endings: list[_Ending] = []
        async with trio.open_nursery() as nursery:

            async def until_ended(task: Callable[[], Awaitable[_Ending | None]]) -> None:
                ending = await task()
                if ending is not None:
                    endings.append(ending)
                    nursery.cancel_scope.cancel()

            receiver = partial(self._receiver, ws, conn, events, stream, language)
            nursery.start_soon(until_ended, receiver, name=self._receiver)
            sender = partial(self._sender, ws, conn, audio, stream)
            nursery.start_soon(until_ended, sender, name=self._sender)
        # Both can end at once (one was resuming as the other cancelled it).
        return min(endings, key=_Ending.rank)

    async def _sender(
        self,
        ws: WebSocketConnection,
        conn: _Conn,
        audio: trio.MemoryReceiveChannel[STTInput],
        stream: _Stream,
    ) -> _Ending | None:
        """Replay, then forward the pipeline's input; None when the socket closed
        under it (the receiver sees that close too and says what it means)."""
        try:
            replay = bytes(stream.buffer)
            for i in range(0, len(replay), REPLAY_CHUNK):
                await ws.send_message(replay[i : i + REPLAY_CHUNK])
            for _ in range(len(stream.finalize_deadlines)):
                await ws.send_message(dm.FINALIZE)
            while not stream.audio_done:
                await self._forward_one(ws, audio, stream)
            conn.close_sent = True
            await ws.send_message(dm.CLOSE_STREAM)
        except ConnectionClosed:
            return None  # the receiver sees the close too and decides what it means
        await trio.sleep(self.close_timeout)
        log.warning("Deepgram did not close %.1fs after CloseStream; giving up", self.close_timeout)
        return _Ending("finished")

    async def _forward_one(
        self,
        ws: WebSocketConnection,
        audio: trio.MemoryReceiveChannel[STTInput],
        stream: _Stream,
    ) -> None:
        """Send the next input, or a KeepAlive when none came for a while."""
        with trio.move_on_after(self.keepalive_interval) as idle:
            try:
                item = await audio.receive()
            except trio.EndOfChannel:
                stream.audio_done = True
                return
        if idle.cancelled_caught:
            await ws.send_message(dm.KEEPALIVE)
        elif isinstance(item, Finalize):
            stream.finalize_deadlines.append(trio.current_time() + self.finalize_timeout)
            stream.reschedule()
            await ws.send_message(dm.FINALIZE)
        elif item:
            stream.append(item)
            await ws.send_message(item)

    async def _receiver(
        self,
        ws: WebSocketConnection,
        conn: _Conn,
        events: trio.MemorySendChannel[STTEvent],
        stream: _Stream,
        language: str,
    ) -> _Ending:
        """Forward Deepgram's messages until the socket closes or sends garbage."""
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code if exc.reason is not None else 1006
                if conn.close_sent and code == 1000:
                    return _Ending("finished")
                if code == 1008:
                    reason = exc.reason.reason if exc.reason is not None else None
                    error = STTError(f"Deepgram could not decode the audio (1008): {reason}")
                    return _Ending("fatal", str(error), error)
                return _Ending("disconnect", f"socket closed unexpectedly (code {code})")
            if isinstance(raw, bytes):
                continue
            try:
                message = dm.parse_server_message(raw, language=language)
            except dm.MalformedMessage as exc:
                # The words it carried are not lost: drop this connection and replay
                # what no final covered. It counts as a failed attempt, so a server
                # that only sends garbage still ends in STTError.
                return _Ending("malformed", str(exc))
            stream.messages += 1
            conn.delivering = True
            try:
                await self._deliver(message, conn, events, stream)
            finally:
                conn.delivering = False

    async def _deliver(
        self,
        message: dm.ServerMessage,
        conn: _Conn,
        events: trio.MemorySendChannel[STTEvent],
        stream: _Stream,
    ) -> None:
        """Shift one message into stream time and forward what the pipeline uses."""
        offset = conn.offset / dm.BYTES_PER_SECOND
        if isinstance(message, TranscriptEvent):
            if message.is_final:
                end = message.start + message.duration
                stream.trim_to(conn.offset + 2 * round(end * dm.BYTES_PER_SECOND / 2))
            if message.text or message.from_finalize:
                await events.send(attrs.evolve(message, start=message.start + offset))
            if message.from_finalize and stream.finalize_deadlines:
                stream.finalize_answered()
                stream.reschedule()
                await events.send(FinalizeDone())
        elif isinstance(message, SpeechStarted):
            timestamp = message.timestamp + offset
            if timestamp > stream.last_speech_started:  # a replay repeats what we sent
                stream.last_speech_started = timestamp
                await events.send(SpeechStarted(timestamp=timestamp))
        elif isinstance(message, UtteranceEnd):
            last_word_end = message.last_word_end + offset
            if last_word_end > stream.last_utterance_end:
                stream.last_utterance_end = last_word_end
                await events.send(UtteranceEnd(last_word_end=last_word_end))
        else:
            log.debug("Deepgram: %r", message)

    async def _finalize_timer(
        self, stream: _Stream, events: trio.MemorySendChannel[STTEvent]
    ) -> None:
        """Answer a Finalize the provider never acknowledged, so turns cannot hang."""
        while True:
            deadline = stream.finalize_deadlines[0] if stream.finalize_deadlines else math.inf
            with trio.CancelScope(deadline=deadline) as scope:
                stream.timer_scope = scope
                await trio.sleep_forever()
            stream.timer_scope = None
            now = trio.current_time()
            conn = stream.current
            due = stream.finalize_deadlines and stream.finalize_deadlines[0] <= now
            retry = due and not stream.head_retried
            if retry and conn is not None and conn.scope is not None and not conn.delivering:
                log.warning(
                    "Deepgram sent no from_finalize result in %.1fs; reconnecting",
                    self.finalize_timeout,
                )
                stream.head_retried = True
                stream.finalize_deadlines[0] = now + self.finalize_timeout
                conn.scope.cancel()
                continue
            while stream.finalize_deadlines and stream.finalize_deadlines[0] <= now:
                stream.finalize_answered()
                log.warning("Deepgram sent no from_finalize result in %.1fs", self.finalize_timeout)
                await events.send(FinalizeDone(unanswered=True))
