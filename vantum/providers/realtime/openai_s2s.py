"""The S2S engine for OpenAI's Realtime API (GA), over trio-websocket.

One :class:`_Connection` per call: a command channel up (audio, commit, respond,
truncate, tool results...) and an event channel down, translated by the sans-I/O
:mod:`.codec`. Behind them the provider's WebSocket can be *replaced*:

- **Before the session cap** (60 minutes at OpenAI; ``recycle_after_s``), at the
  first moment no answer is being generated and the caller is not mid-sentence, a
  new session is opened, configured with the same instructions and tools, given the
  call's history as text items (the pipeline's own, heard-only history:
  :class:`~..base.S2SRemember`), and only then swapped in. Commands queue in the
  bounded channel meanwhile (a few hundred milliseconds of audio), so nothing the
  caller says is lost and nothing is heard of the swap.
- **After a failure** (the socket dropped, the cap was hit anyway) the same happens
  at once; an answer that was being generated ends as ``failed``.

Errors the protocol makes benign are not errors here: ``conversation_already_has_
active_response`` (a response.create that raced one the server made itself, e.g.
after a tool result), ``response_cancel_not_active`` (the answer was already over),
and truncate/delete refusals (a warning: the history is Vantum's own anyway).
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from ...errors import ProviderError
from ..base import (
    ChatMessage,
    S2SAddText,
    S2SAnswerAudio,
    S2SAnswerDone,
    S2SAnswerItem,
    S2SAnswerItemDone,
    S2SAnswerStarted,
    S2SAnswerText,
    S2SAudioIn,
    S2SCancel,
    S2SClear,
    S2SCommand,
    S2SCommit,
    S2SDelete,
    S2SEvent,
    S2SFailure,
    S2SReconnected,
    S2SRemember,
    S2SRespond,
    S2SSetup,
    S2SSpeechStarted,
    S2SSpeechStopped,
    S2SToolResult,
    S2STruncate,
    S2SUpdate,
    S2SUserTranscript,
    ToolCall,
)
from . import codec as rc

log = logging.getLogger("vantum.s2s")

DEFAULT_URL = "wss://api.openai.com/v1/realtime"
SESSION_CAP_S = 60 * 60.0
VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
"""OpenAI's built-in voices; a call's voice that is not one (a Cartesia id from the
agent) is not sent, the session would refuse it."""
BENIGN = frozenset({"conversation_already_has_active_response", "response_cancel_not_active"})
CUT_REFUSED = frozenset(
    {"unsupported_content_type", "item_truncate_invalid_item_id", "item_delete_invalid_item_id"}
)


_Finish = Callable[[str, trio.CancelScope], None]
"""How a task of one WebSocket says why it ended (the first reason wins)."""


class RealtimeError(ProviderError):
    """The Realtime session could not be opened (or reopened)."""


class OpenAIRealtime:
    """``S2SEngine`` for OpenAI Realtime; one instance serves every call."""

    name = "openai-realtime"

    def __init__(
        self,
        api_key: str,
        url: str = DEFAULT_URL,
        model: str = "gpt-realtime",
        *,
        recycle_after_s: float = SESSION_CAP_S - 5 * 60,
        connect_timeout_s: float = 10.0,
        reconnect_attempts: int = 3,
    ) -> None:
        self.api_key = api_key
        self.url = url
        self.model = model
        self.recycle_after_s = recycle_after_s
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_attempts = reconnect_attempts

    @asynccontextmanager
    async def connect(self, setup: S2SSetup) -> AsyncIterator[_Connection]:
        conn = _Connection(self, setup)
        failure: RealtimeError | None = None
        async with trio.open_nursery() as nursery:
            try:
                ws = await conn.open(nursery)
            except RealtimeError as exc:
                failure = exc  # raised below, not from inside the nursery (as a group)
                nursery.cancel_scope.cancel()
            else:
                nursery.start_soon(conn.run, nursery, ws)
                try:
                    yield conn
                finally:
                    nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure


def session_config(model: str, setup: S2SSetup) -> rc.SessionConfig:
    vad = rc.ServerVad(silence_duration_ms=setup.silence_ms) if setup.auto_turns else None
    return rc.SessionConfig(
        model=model,
        instructions=setup.instructions,
        voice=setup.voice if setup.voice in VOICES else "marin",
        turn_detection=vad,
        tools=setup.tools,
    )


def history_items(messages: tuple[ChatMessage, ...]) -> list[rc.Item]:
    """The pipeline's history as conversation items (text, calls and their results)."""
    items: list[rc.Item] = []
    for m in messages:
        if m.role == "tool" and m.tool_call_id:
            items.append(rc.FunctionOutputItem(m.tool_call_id, m.content))
        elif m.role in ("user", "assistant", "system"):
            if m.content:
                items.append(rc.TextItem(m.role, m.content))  # type: ignore[arg-type]
            items.extend(rc.FunctionCallItem(c.id, c.name, c.arguments) for c in m.tool_calls)
    return items


class _Connection:
    def __init__(self, engine: OpenAIRealtime, setup: S2SSetup) -> None:
        self.engine = engine
        self.setup = setup
        self.history: tuple[ChatMessage, ...] = ()
        self._commands_tx, self._commands_rx = trio.open_memory_channel[S2SCommand](64)
        self._events_tx, self._events_rx = trio.open_memory_channel[S2SEvent](256)
        self.active: str | None = None
        self.caller_speaking = False
        self.expired = False
        self.born = 0.0
        self._idle = trio.Event()
        """Replaced (after being set) whenever an answer ends or the caller stops."""
        self._user_text: dict[str, str] = {}
        self._release: dict[WebSocketConnection, trio.Event] = {}
        self.reconnects = 0

    @property
    def events(self) -> trio.MemoryReceiveChannel[S2SEvent]:
        return self._events_rx

    async def send(self, command: S2SCommand) -> None:
        # Once the provider is gone for good (reported once), what is sent is dropped.
        with contextlib.suppress(trio.BrokenResourceError):
            await self._commands_tx.send(command)

    # ------------------------------------------------------------------ lifecycle

    async def open(self, nursery: trio.Nursery) -> WebSocketConnection:
        """A configured session: handshake, ``session.created``, ``session.update``, history."""
        query = urllib.parse.urlencode({"model": self.engine.model})
        headers = [(b"Authorization", f"Bearer {self.engine.api_key}".encode())]
        url = f"{self.engine.url}?{query}"
        try:
            with trio.fail_after(self.engine.connect_timeout_s):
                ws: WebSocketConnection = await nursery.start(self._hold, url, headers)
                created = rc.decode_server(await ws.get_message())
        except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as exc:
            raise RealtimeError(f"realtime connect failed: {exc!r}") from None
        except BaseExceptionGroup as group:  # raised by the socket's own task
            raise RealtimeError(f"realtime connect failed: {group.exceptions!r}") from None
        except rc.InvalidEvent as exc:
            raise RealtimeError(f"realtime session did not start: {exc}") from None
        if not isinstance(created, rc.SessionCreated):
            raise RealtimeError(f"realtime session did not start: {created!r}")
        config = session_config(self.engine.model, self.setup)
        await ws.send_message(rc.encode_client(rc.SessionUpdate(config)))
        for item in history_items(self.history):
            await ws.send_message(rc.encode_client(rc.ItemCreate(item)))
        self.born = trio.current_time()
        self.expired = False
        return ws

    async def _hold(
        self,
        url: str,
        headers: list[tuple[bytes, bytes]],
        task_status: trio.TaskStatus[WebSocketConnection] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Owns one WebSocket (its reader task lives in this task's nursery) until it
        is released, so a replacement can be opened before the old one is closed."""
        timeout = self.engine.connect_timeout_s
        async with open_websocket_url(
            url, extra_headers=headers, connect_timeout=timeout, disconnect_timeout=1.0
        ) as ws:
            release = self._release[ws] = trio.Event()
            task_status.started(ws)
            await release.wait()

    def _close(self, ws: WebSocketConnection) -> None:
        release = self._release.pop(ws, None)
        if release is not None:
            release.set()

    async def run(self, nursery: trio.Nursery, ws: WebSocketConnection) -> None:
        async with self._events_tx:
            while True:
                outcome = await self._serve(ws)
                if outcome == "closed":
                    self._close(ws)
                    return
                if self.active is not None:
                    await self._events_tx.send(S2SAnswerDone(self.active, "failed"))
                    self._set_active(None)
                if outcome == "lost":
                    await self._events_tx.send(
                        S2SFailure("s2s.error.provider", "the speech-to-speech connection dropped")
                    )
                old = ws
                try:
                    ws = await self._reopen(nursery)
                except RealtimeError as exc:
                    self._commands_rx.close()
                    await self._events_tx.send(S2SFailure("s2s.error.provider", str(exc)))
                    return
                self._close(old)
                self.reconnects += 1
                log.info("s2s: session replaced (%s)", outcome)
                await self._events_tx.send(S2SReconnected(outcome))

    async def _reopen(self, nursery: trio.Nursery) -> WebSocketConnection:
        for attempt in range(self.engine.reconnect_attempts):
            try:
                return await self.open(nursery)
            except RealtimeError as exc:
                log.warning("s2s: reconnect %d failed: %s", attempt + 1, exc)
                await trio.sleep(0.2 * 2**attempt)  # backoff between attempts, not a sync
        raise RealtimeError("the speech-to-speech provider could not be reached again")

    async def _serve(self, ws: WebSocketConnection) -> str:
        """Run one WebSocket until it is lost, recycled, or the pipeline is done."""
        outcome: list[str] = []

        def finish(why: str, scope: trio.CancelScope) -> None:
            if not outcome:
                outcome.append(why)
            scope.cancel()

        async with trio.open_nursery() as n:
            n.start_soon(self._reader, ws, finish, n.cancel_scope)
            n.start_soon(self._writer, ws, finish, n.cancel_scope)
            n.start_soon(self._recycler, finish, n.cancel_scope)
        return outcome[0] if outcome else "lost"

    async def _recycler(self, finish: _Finish, scope: trio.CancelScope) -> None:
        await trio.sleep_until(self.born + self.engine.recycle_after_s)
        while self.active is not None or self.caller_speaking:
            await self._idle.wait()
        finish("recycle", scope)

    async def _writer(
        self, ws: WebSocketConnection, finish: _Finish, scope: trio.CancelScope
    ) -> None:
        while True:
            try:
                command = await self._commands_rx.receive()
            except trio.EndOfChannel:
                finish("closed", scope)
                return
            event = self._client_event(command)
            if event is None:
                continue
            try:
                await ws.send_message(rc.encode_client(event))
            except ConnectionClosed:
                finish("expired" if self.expired else "lost", scope)
                return

    def _client_event(self, command: S2SCommand) -> rc.ClientEvent | None:
        if isinstance(command, S2SAudioIn):
            return rc.AudioAppend(command.pcm)
        if isinstance(command, S2SCommit):
            return rc.AudioCommit()
        if isinstance(command, S2SClear):
            return rc.AudioClear()
        if isinstance(command, S2SRespond):
            return rc.ResponseCreate()
        if isinstance(command, S2SCancel):
            return rc.ResponseCancel()
        if isinstance(command, S2STruncate):
            return rc.ItemTruncate(command.item_id, command.audio_end_ms)
        if isinstance(command, S2SDelete):
            return rc.ItemDelete(command.item_id)
        if isinstance(command, S2SToolResult):
            return rc.ItemCreate(rc.FunctionOutputItem(command.call_id, command.output))
        if isinstance(command, S2SAddText):
            return rc.ItemCreate(rc.TextItem(command.role, command.text))
        if isinstance(command, S2SUpdate):
            self.setup = command.setup
            return rc.SessionUpdate(session_config(self.engine.model, command.setup))
        if isinstance(command, S2SRemember):
            self.history = command.messages  # kept for a replacement session
        return None

    async def _reader(
        self, ws: WebSocketConnection, finish: _Finish, scope: trio.CancelScope
    ) -> None:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                finish("expired" if self.expired else "lost", scope)
                return
            try:
                event = rc.decode_server(message)
            except rc.InvalidEvent as exc:
                log.warning("s2s: malformed server event skipped: %s", exc)
                continue
            for out in self._translate(event):
                await self._events_tx.send(out)

    def _set_active(self, response_id: str | None) -> None:
        self.active = response_id
        self._wake()

    def _wake(self) -> None:
        self._idle.set()
        self._idle = trio.Event()

    def _translate(self, e: rc.ServerEvent) -> list[S2SEvent]:
        if isinstance(e, rc.SpeechStarted):
            self.caller_speaking = True
            return [S2SSpeechStarted()]
        if isinstance(e, rc.SpeechStopped):
            self.caller_speaking = False
            self._wake()
            return [S2SSpeechStopped()]
        if isinstance(e, rc.UserTranscriptDelta):
            text = self._user_text.get(e.item_id, "") + e.delta
            self._user_text[e.item_id] = text
            return [S2SUserTranscript(e.item_id, text, False)]
        if isinstance(e, rc.UserTranscriptCompleted):
            self._user_text.pop(e.item_id, None)
            return [S2SUserTranscript(e.item_id, e.transcript, True)]
        if isinstance(e, rc.ResponseCreated):
            self._set_active(e.response_id)
            return [S2SAnswerStarted(e.response_id)]
        if isinstance(e, rc.OutputItemAdded) and e.kind == "message" and not e.done:
            return [S2SAnswerItem(e.response_id, e.item_id)]
        if isinstance(e, rc.AudioDelta):
            return [S2SAnswerAudio(e.response_id, e.item_id, e.pcm)]
        if isinstance(e, rc.TranscriptDelta):
            return [S2SAnswerText(e.response_id, e.item_id, e.delta)]
        if isinstance(e, rc.TranscriptDone):
            return [S2SAnswerItemDone(e.response_id, e.item_id, e.transcript)]
        if isinstance(e, rc.ResponseDone):
            if self.active == e.response_id:
                self._set_active(None)
            calls = tuple(
                ToolCall(c.call_id or c.item_id, c.name or "", c.arguments or "")
                for c in e.calls
                if e.status == "completed"
            )
            return [S2SAnswerDone(e.response_id, e.status, calls)]
        if isinstance(e, rc.ErrorReport):
            return self._error(e)
        return []

    def _error(self, e: rc.ErrorReport) -> list[S2SEvent]:
        code = e.code or e.type
        if code in BENIGN:
            log.info("s2s: benign: %s", e.message)
            return []
        if code in CUT_REFUSED or e.param == "audio_end_ms":
            log.warning("s2s: truncate/delete refused: %s", e.message)
            return []
        if code == "session_expired":
            self.expired = True  # the close follows: a replacement session is opened
            log.warning("s2s: %s", e.message)
            return []
        log.warning("s2s: provider error %s: %s", code, e.message)
        return [S2SFailure("s2s.error.provider", f"{code}: {e.message}")]


__all__ = ["DEFAULT_URL", "OpenAIRealtime", "RealtimeError", "history_items", "session_config"]
