"""Phone calls: a carrier media stream (Twilio ``<Connect><Stream>``) as a session Transport.

The session pipeline is the browser's, unchanged: this transport turns carrier
frames into the same client events (``start`` becomes an auto-turn
``audio.input.start`` at 8 kHz, ``media`` becomes ``audio.input.chunk``,
``dtmf`` a keypad event) and turns the session's answer audio back into the
carrier's frames. All carrier specifics live in a :class:`MediaStreamSerializer`,
so Telnyx, Plivo or Vonage are one serializer each, not another transport.

A phone line has no channel for error events, and one garbled frame must not
hang up on a caller: bad frames are logged with the call id and skipped.

Outbound audio leaves either as one ``media`` message per answer chunk (Twilio
plays a payload of any length: every message is a JSON + base64 encode and a
WebSocket frame, so the fewer the better) or, for a carrier that wants them, as
exact 20 ms frames (a carry keeps the remainder for the next chunk). A mark named
``<utteranceId>:<n>`` follows every ``mark_ms`` of audio (``<utteranceId>:end``
after its last audio). The carrier echoes a mark once the audio before it has
played, which gives :meth:`MediaStreamTransport.played_ms`: what the caller really
heard, to within one mark interval (it errs low: audio played after the last
echoed mark of a cut answer is not counted). Each mark costs two messages (ours and
the echo), hence one per ``mark_ms`` rather than one per chunk. A cancelled answer
sends ``clear``, dropping whatever the carrier still has queued; its pending marks
come back at once, and when all are back the transport reports what was played to
the session as a :class:`~vantum.protocol.client_events.PlaybackProgress`, so the
history after a barge-in holds what the carrier played, not the server clock's
guess. A paused answer (caller speech being judged) sends ``clear`` too, at once; if
it resumes, its audio follows again from the server's estimate of what was played.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import attrs
import trio

from ..agents.selection import AgentChoice, AgentRefused, CallFacts
from ..audio.resample import StreamResampler
from ..errors import ConfigError, ProtocolError, VantumError
from ..logs import annotate, bind
from ..pipeline.events import (
    ErrorEvent,
    OutputCancelled,
    OutputChunk,
    OutputComplete,
    OutputPaused,
    ServerEvent,
)
from ..pipeline.settings import CallSettings
from ..pipeline.transport import PeerGone
from ..protocol import events as ev
from ..protocol.client_events import (
    ClientEvent,
    DtmfInput,
    InputChunk,
    InputStart,
    PlaybackProgress,
)
from ..protocol.ids import new_id
from ..protocol.twilio import (
    TICKET_PARAMETER,
    AudioIn,
    CarrierEvent,
    DtmfIn,
    Mark,
    MediaStreamSerializer,
    Start,
    Stop,
    TicketError,
    TwilioSerializer,
    frame_audio,
)
from ..protocol.twilio.dialing import (
    AMD_PARAMETER,
    DIAL_PARAMETER,
    Verdict,
    variables_from,
    verdict,
)
from ..protocol.twilio_signature import SIGNATURE_HEADER, validate_signature
from .asgi_ws import AsgiWebSocket
from .browser import ASGIReceive, ASGISend
from .host import SessionHost
from .twilio_http import header_value, request_urls
from .twilio_rest import TwilioAPIError, TwilioREST

log = logging.getLogger("vantum.twilio")

FRAME_MS = 20
MARK_MS = 200
"""Audio between two marks on a carrier that takes chunks whole (Twilio): the
player's lead, so the marks' resolution is that of the server's own clock."""
START_TIMEOUT_S = 10.0
"""A stream must send ``start`` this soon after the handshake (Twilio sends it at once)."""
DTMF_DIGITS = frozenset("0123456789*#ABCD")
MESSAGE_AFTER_S = 0.5
"""Quiet after a machine's beep before a voicemail message starts."""
KEEP_UTTERANCES = 16
"""Playback records kept per call (older answers are forgotten)."""


@attrs.define
class UtterancePlayback:
    """One answer's audio as the carrier saw it."""

    utterance_id: str
    sent_ms: int = 0
    sent_samples: int = 0
    marked_samples: int = 0
    """Samples sent before this answer's latest mark."""
    played_ms: int = 0
    marks: int = 0
    final_mark: str | None = None
    finished: bool = False
    """The last mark came back: the caller heard the whole answer."""
    cleared: bool = False
    echoed: int = 0
    """Marks of this answer the carrier has sent back (played or cleared)."""
    reported: bool = False

    @property
    def settled(self) -> bool:
        """Cleared, and every mark sent before the clear is back: ``played_ms`` is final."""
        return self.cleared and self.echoed >= self.marks + (self.final_mark is not None)


class MediaStreamTransport:
    """A session Transport over an ASGI WebSocket speaking a carrier's media-stream JSON."""

    def __init__(
        self,
        session_id: str,
        receive: ASGIReceive,
        send: ASGISend,
        serializer: MediaStreamSerializer,
        *,
        max_frame_bytes: int = 1 << 20,
        carrier: str = "carrier",
        frame_ms: int | None = FRAME_MS,
        mark_ms: int = 0,
    ) -> None:
        """``frame_ms``: outbound audio cut into frames of exactly this length (None:
        one message per answer chunk, as long as the chunk). ``mark_ms``: a mark
        after at least this much audio since the previous one (0: after every chunk)."""
        self.session_id = session_id
        self.serializer = serializer
        self.carrier = carrier
        self.start: Start | None = None
        self.ignored = 0
        """Inbound frames skipped as malformed or out of place."""
        self.stopped = False
        self.start_unusable = False
        """The carrier's ``start`` could not be used (e.g. an unsupported media format)."""
        self.ws = AsgiWebSocket(receive, send, max_frame_bytes)
        self._rate = serializer.sample_rate
        self._frame_ms = frame_ms
        self._frame_bytes = 2 * self._rate * (frame_ms or FRAME_MS) // 1000
        self._mark_samples = self._rate * mark_ms // 1000
        self._carry = b""
        self._current: UtterancePlayback | None = None
        self._resampler: StreamResampler | None = None
        self._utterances: OrderedDict[str, UtterancePlayback] = OrderedDict()
        self._played_total = 0
        self._progress = trio.Event()
        self._chunks = 0
        self._ready: list[ClientEvent] = []
        """Events waiting to be handed to the session: the ``start`` read before it ran,
        the final playback of cut answers."""

    @property
    def call_id(self) -> str:
        return self.start.call_id if self.start else self.session_id

    # --- inbound ------------------------------------------------------------------

    async def receive(self) -> ClientEvent | ProtocolError:
        while True:
            if self._ready:
                return self._ready.pop(0)
            event = await self._read_event()
            if event is not None:
                return event

    async def receive_start(self) -> Start:
        """Read frames up to the carrier's ``start`` and return it, before any session
        runs (the server decides on it); the session's first ``receive()`` still gets
        it, as ``audio.input.start``. Raises PeerGone if the stream ends first, or its
        start is unusable (``start_unusable`` is then set)."""
        while self.start is None:
            event = await self._read_event()
            if event is not None:
                self._ready.append(event)
        return self.start

    async def skip_input(self) -> None:
        """Read and drop inbound frames until cancelled; PeerGone when the stream ends.

        Used while an outbound call waits for its answering-machine verdict: what the
        callee says before it is not a turn, and must not pile up unread."""
        while True:
            await self._read_event()

    async def _read_event(self) -> ClientEvent | None:
        """One inbound frame as a client event, or None if it carries none for the session."""
        if self.stopped:
            raise PeerGone()
        try:
            data = await self.ws.receive_frame()
        except PeerGone:
            if self.ws.close_code is not None:
                log.info("call %s: %s closed the stream", self.call_id, self.carrier)
            raise
        if data is None:
            return None
        try:
            item = self.serializer.parse(data)
        except (VantumError, ValueError) as exc:  # ValueError: e.g. non-ASCII base64
            if self.start is None and getattr(exc, "event", None) == "start":
                log.error("call %s: unusable start, ending: %s", self.call_id, exc)
                self.start_unusable = True
                raise PeerGone() from exc
            self._skip(str(exc))
            return None
        return self._client_event(item)

    def _client_event(self, item: CarrierEvent | None) -> ClientEvent | None:
        if isinstance(item, AudioIn):
            # Chunks are never acknowledged, so their id only has to be unique in the
            # call; a counter costs far less than a UUIDv7 at 50 frames a second.
            self._chunks += 1
            return InputChunk(f"{self.session_id}:{self._chunks}", item.pcm16)
        if isinstance(item, Mark):
            return self._on_mark(item)
        if isinstance(item, Start):
            return self._on_start(item)
        elif isinstance(item, DtmfIn):
            if item.digit.upper() in DTMF_DIGITS and len(item.digit) == 1:
                return DtmfInput(new_id(), item.digit.upper())
            self._skip(f"dtmf digit {item.digit[:16]!r} is not a keypad key")
        elif isinstance(item, Stop):
            self.stopped = True
            log.info("call %s: %s stopped the stream", self.call_id, self.carrier)
            raise PeerGone()
        return None

    def _on_start(self, start: Start) -> InputStart:
        self.start = start
        annotate(call_sid=start.call_id, stream_sid=start.stream_id)  # for every actor's logs
        params = start.custom_parameters
        language: str | None = params.get("language") or None
        if language is not None and not 2 <= len(language) <= 16:
            log.warning(
                "call %s: language %r is not a tag like 'en-US'", start.call_id, language[:20]
            )
            language = None  # the agent's, else en-US
        log.info(
            "call %s: stream %s started (session %s, from %s)",
            start.call_id,
            start.stream_id,
            self.session_id,
            params.get("From", "?"),
        )
        return InputStart(
            new_id(),
            start.sample_rate,
            language=language,
            voice_id=params.get("voiceId") or None,
            turn_mode="auto",
        )

    def _on_mark(self, mark: Mark) -> PlaybackProgress | None:
        delta = mark.played_ms - self._played_total
        self._played_total = mark.played_ms
        play = self._utterances.get(mark.name.rpartition(":")[0])
        if play is not None:
            play.played_ms += delta
            play.echoed += 1
            if mark.name == play.final_mark and not mark.cleared:
                play.finished = True
        self._progress.set()
        self._progress = trio.Event()
        return None if play is None else self._report(play)

    def _report(self, play: UtterancePlayback) -> PlaybackProgress | None:
        """What the caller heard of a cut answer, once the carrier has said it all.

        Only cut answers are reported, once each: the session needs the heard part of
        an interrupted answer for its history; a finished one was heard whole. One
        message per barge-in instead of one per echoed mark (25 a second).
        """
        if play.reported or not play.settled:
            return None
        play.reported = True
        return PlaybackProgress(play.utterance_id, play.played_ms, play.finished)

    def _skip(self, why: str) -> None:
        self.ignored += 1
        if self.ignored <= 10 or self.ignored in (100, 1000, 10_000):
            log.warning(
                "call %s: ignored %s frame #%d: %s", self.call_id, self.carrier, self.ignored, why
            )

    # --- playback -----------------------------------------------------------------

    def playback(self, utterance_id: str) -> UtterancePlayback | None:
        return self._utterances.get(utterance_id)

    def played_ms(self, utterance_id: str) -> int:
        """Milliseconds of this answer the carrier confirmed as played (marks echoed)."""
        play = self._utterances.get(utterance_id)
        return play.played_ms if play else 0

    async def wait_finished(self, utterance_id: str) -> bool:
        """Wait until the answer has fully played (True) or was cleared (False)."""
        while True:
            play = self._utterances.get(utterance_id)
            if play is not None and (play.finished or play.cleared):
                return play.finished
            await self._progress.wait()

    # --- outbound -----------------------------------------------------------------

    async def send(self, event: ServerEvent) -> None:
        if self.ws.closed:
            raise PeerGone()
        audio = isinstance(event, OutputChunk | OutputComplete | OutputCancelled | OutputPaused)
        if self.start is None and audio:
            log.warning(
                "call %s: %s before the stream started, dropped", self.call_id, type(event).__name__
            )
        elif isinstance(event, OutputChunk):
            await self._audio(event.utterance_id, event.pcm, event.rate)
        elif isinstance(event, OutputComplete):
            await self._complete(event.utterance_id)
        elif isinstance(event, OutputCancelled):
            await self._cancel(event.utterance_id)
        elif isinstance(event, OutputPaused):
            await self._pause(event.utterance_id)
        elif isinstance(event, ErrorEvent):
            log.info("call %s: %s: %s", self.call_id, event.code, event.message)
        else:
            log.debug(
                "call %s: %s not sent to the %s", self.call_id, type(event).__name__, self.carrier
            )

    def _playback_for(self, uid: str) -> UtterancePlayback | None:
        play = self._utterances.get(uid)
        if play is not None:
            return None if play.cleared or play.final_mark else play
        play = self._utterances[uid] = UtterancePlayback(uid)
        while len(self._utterances) > KEEP_UTTERANCES:
            self._utterances.popitem(last=False)
        return play

    async def _audio(self, uid: str, pcm: bytes, rate: int) -> None:
        play = self._playback_for(uid)
        if play is None:
            return  # a late chunk of a cancelled or finished answer
        frames: list[str | bytes] = []
        if self._current is not play:
            frames += self._flush()
            self._current = play
            self._resampler = None if rate == self._rate else StreamResampler(rate, self._rate)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        if self._frame_ms is None:
            chunks = [pcm] if pcm else []
        else:
            chunks, self._carry = frame_audio(pcm, self._frame_bytes, self._carry)
        frames += [self.serializer.serialize_audio(c) for c in chunks]
        self._count(play, sum(len(c) for c in chunks) // 2)
        if chunks and play.sent_samples - play.marked_samples >= max(1, self._mark_samples):
            frames.append(self._mark(play))
        await self._write(frames)

    def _count(self, play: UtterancePlayback, samples: int) -> None:
        play.sent_samples += samples
        play.sent_ms = play.sent_samples * 1000 // self._rate

    def _flush(self) -> list[str | bytes]:
        """The current answer's held-back audio (in 20 ms framing, the last partial frame
        padded with silence) and its final mark."""
        play, self._current = self._current, None
        if play is None:
            return []
        if self._resampler is not None:
            self._carry += self._resampler.flush()
            self._resampler = None
        frames: list[str | bytes] = []
        carry, self._carry = self._carry, b""
        if self._frame_ms is None:
            if carry:
                frames.append(self.serializer.serialize_audio(carry))
                self._count(play, len(carry) // 2)
        else:
            for start in range(0, len(carry), self._frame_bytes):
                piece = carry[start : start + self._frame_bytes]
                padded = piece.ljust(self._frame_bytes, b"\0")
                frames.append(self.serializer.serialize_audio(padded))
                self._count(play, len(padded) // 2)
        play.final_mark = f"{play.utterance_id}:end"
        frames.append(self.serializer.serialize_mark(play.final_mark))
        return frames

    def _mark(self, play: UtterancePlayback) -> str | bytes:
        play.marks += 1
        play.marked_samples = play.sent_samples
        return self.serializer.serialize_mark(f"{play.utterance_id}:{play.marks}")

    async def _complete(self, uid: str) -> None:
        if self._current is not None and self._current.utterance_id == uid:
            await self._write(self._flush())

    async def _cancel(self, uid: str) -> None:
        play = self._utterances.get(uid) or self._playback_for(uid)
        if play is not None:
            play.cleared = True
            report = self._report(play)  # every mark already came back: nothing pending
            if report is not None:
                self._ready.append(report)
        if self._current is not None and self._current.utterance_id == uid:
            self._current, self._carry, self._resampler = None, b"", None
        log.info("call %s: answer %s interrupted, clearing playback", self.call_id, uid)
        await self._write([self.serializer.serialize_clear()])

    async def _pause(self, uid: str) -> None:
        """Caller speech paused the answer: drop what the carrier has queued (``clear``).

        The answer is not over: its pending marks come back now adding nothing to
        what was played, and on resumption its audio simply follows again (from
        the server's estimate of what was played) with new marks.
        """
        if self._current is not None and self._current.utterance_id == uid:
            self._current, self._carry, self._resampler = None, b"", None
        log.info("call %s: answer %s paused, clearing playback", self.call_id, uid)
        await self._write([self.serializer.serialize_clear()])

    async def _write(self, frames: list[str | bytes]) -> None:
        for frame in frames:
            await self.ws.send_frame(frame)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


class TwilioTransport(MediaStreamTransport):
    """:class:`MediaStreamTransport` speaking Twilio Media Streams: each answer chunk
    is one ``media`` message, with a mark every :data:`MARK_MS` of audio."""

    def __init__(
        self,
        session_id: str,
        receive: ASGIReceive,
        send: ASGISend,
        *,
        max_frame_bytes: int = 1 << 20,
        mark_ms: int = MARK_MS,
    ) -> None:
        super().__init__(
            session_id,
            receive,
            send,
            TwilioSerializer(),
            max_frame_bytes=max_frame_bytes,
            carrier="Twilio",
            frame_ms=None,  # Twilio plays a media payload of any length
            mark_ms=mark_ms,
        )


async def serve_twilio_stream(
    app: SessionHost, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend
) -> None:
    """Accept Twilio's media-stream WebSocket and run a session on it.

    Before accepting: the handshake's ``X-Twilio-Signature`` (when an auth token is
    set) and the server's capacity. After accepting, before any session: a ``start``
    within :data:`START_TIMEOUT_S` carrying the one-time ticket our webhook issued for
    its ``callSid``. A stream failing either is closed with 1008, logged and counted in
    ``vantum_sessions_refused_total``, and no session ever runs for it.
    """
    connect = await receive()
    if connect["type"] != "websocket.connect":
        return
    token = app.config.twilio_auth_token
    if token:
        signature = header_value(scope, SIGNATURE_HEADER)
        urls = request_urls(app.config, scope)
        if not any(validate_signature(token, url, (), signature) for url in urls):
            log.warning(
                "refused media stream: %s X-Twilio-Signature (signed URL tried: %s)",
                "invalid" if signature else "missing",
                urls[0],
            )
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
    refusal = app.refusal()
    if refusal is not None:
        reason, code, message = refusal
        log.warning("refused media stream: %s", message)
        app.metrics.sessions_refused.labels(reason).inc()
        await send({"type": "websocket.close", "code": code})
        return
    await send({"type": "websocket.accept"})
    transport = TwilioTransport(new_id(), receive, send, max_frame_bytes=app.config.max_frame_bytes)
    # Bound here, not only by serve_session: the start and any refusal are logged with
    # the session id, and the call ids the start annotates reach the session's records.
    with bind(session_id=transport.session_id, transport="twilio"):
        if await admit_stream(app, transport):
            settings = await agent_settings(app, transport)
            if settings is not None:
                settings = await answering_machine(app, transport, settings)
            if settings is not None:
                meta = {**call_meta(transport.start), **(_dial_meta(transport) or {})}
                await app.serve_session(transport, "twilio", settings, meta=meta)


def _dial_meta(transport: MediaStreamTransport) -> dict[str, str] | None:
    """An outbound call's record links to its dial (``twilio_dial``) and carrier SID."""
    assert transport.start is not None
    dial_id = transport.start.custom_parameters.get(DIAL_PARAMETER)
    if not dial_id:
        return None
    return {"direction": "outbound", "dial": dial_id, "carrier_sid": transport.start.call_id}


async def answering_machine(
    app: SessionHost, transport: MediaStreamTransport, settings: CallSettings
) -> CallSettings | None:
    """For an outbound call placed with AMD: wait (up to the agent's ``amd_wait_ms``)
    for Twilio's verdict before the greeting, dropping what the line says meanwhile,
    then act on the agent's ``on_machine``. None: the call is over (hung up, or the
    callee went away while we waited)."""
    assert transport.start is not None
    agent = settings.agent
    if transport.start.custom_parameters.get(AMD_PARAMETER) != "1" or agent is None:
        return settings
    call_sid = transport.start.call_id
    answered_by: str | None = None
    gone = False
    async with trio.open_nursery() as nursery:

        async def drain() -> None:
            nonlocal gone
            try:
                await transport.skip_input()
            except PeerGone:
                gone = True
                nursery.cancel_scope.cancel()

        nursery.start_soon(drain)
        answered_by = await app.dialer.amd().wait_amd(call_sid, agent.amd_wait_ms / 1000)
        nursery.cancel_scope.cancel()
    if gone:
        return None
    if answered_by is None:
        log.info("call %s: no AMD verdict within %d ms; greeting", call_sid, agent.amd_wait_ms)
        return settings
    if verdict(answered_by) is not Verdict.MACHINE or agent.on_machine == "continue":
        return settings
    if agent.on_machine == "hangup":
        log.info("call %s: answered by %s; hanging up", call_sid, answered_by)
        await _hang_up(app, call_sid)
        await transport.close(ev.CLOSE_NORMAL, "answering machine")
        return None
    # leave_message: no greeting, no conversation: once the line is quiet (the beep
    # has gone), say the message as the idle goodbye, which hangs up when it has played.
    log.info("call %s: answered by %s; leaving the message", call_sid, answered_by)
    turn = attrs.evolve(
        settings.turn,
        idle_prompt_s=MESSAGE_AFTER_S,
        max_idle_prompts=0,
        goodbye=agent.machine_message or "",
        barge_in=False,
    )
    return attrs.evolve(settings, greeting=None, turn=turn)


async def _hang_up(app: SessionHost, call_sid: str) -> None:
    try:
        await TwilioREST.from_config(app.config).hang_up(call_sid)
    except (ConfigError, TwilioAPIError, ValueError) as exc:
        log.warning("call %s: could not hang up through the REST API: %s", call_sid, exc)


async def agent_settings(
    app: SessionHost, transport: MediaStreamTransport, kind: str = "twilio"
) -> CallSettings | None:
    """The call's settings with its agent: the webhook URL's ``agent`` parameter (checked
    when the webhook answered), or the resolver's choice, or the default."""
    assert transport.start is not None
    start = transport.start
    params = start.custom_parameters
    facts = CallFacts(
        start.call_id,
        kind,
        caller=params.get("From"),
        called=params.get("To"),
        requested_agent=params.get("agent") or None,
    )
    variables = variables_from(params)
    try:
        return await app.call_settings(facts, choice=AgentChoice(variables=variables))
    except AgentRefused as exc:
        log.error("call %s: cannot run its agent: %s", start.call_id, exc.message)
        app.metrics.sessions_refused.labels(f"agent_{exc.reason}").inc()
        await transport.close(ev.CLOSE_POLICY, f"agent refused: {exc.reason}")
        return None


def call_meta(start: Start | None) -> dict[str, str]:
    """What the call record keeps of a stream's ``start``: the carrier's call id and
    the caller and callee our voice webhook passed on as stream parameters."""
    if start is None:
        return {}
    params = start.custom_parameters
    meta = {"call_sid": start.call_id, "stream_sid": start.stream_id}
    for key, name in (("From", "from"), ("To", "to"), ("Direction", "direction")):
        if params.get(key):
            meta[name] = params[key]
    return meta


async def admit_stream(
    app: SessionHost, transport: MediaStreamTransport, kind: str = "twilio"
) -> bool:
    """Wait for the stream's ``start`` and check its ticket; close the stream if refused.

    Every carrier's stream goes through this (``kind`` prefixes the refusal reasons:
    ``twilio_no_start``, ``telnyx_bad_start``...)."""
    start: Start | None = None
    gone = False
    with trio.move_on_after(START_TIMEOUT_S):
        try:
            start = await transport.receive_start()
        except PeerGone:
            gone = True
    if gone:
        if transport.start_unusable:  # logged where it was read
            return await _refuse(app, transport, f"{kind}_bad_start", "unusable start")
        return False  # hung up before it started: nothing to refuse
    if start is None:
        message = f"no start within {START_TIMEOUT_S:g} s"
        log.warning("refused media stream: %s", message)
        return await _refuse(app, transport, f"{kind}_no_start", message)
    try:
        app.stream_tickets.redeem(
            start.custom_parameters.get(TICKET_PARAMETER), start.call_id, now=time.time()
        )
    except TicketError as exc:
        log.warning(
            "call %s: refused media stream %s: %s (a replayed or forged handshake, or a "
            "stream this server's webhook did not answer)",
            start.call_id,
            start.stream_id,
            exc.message,
        )
        return await _refuse(app, transport, f"stream_ticket_{exc.reason.value}", exc.message)
    refusal = app.refusal()  # again: calls may have started while this one waited for start
    if refusal is not None:
        reason, code, message = refusal
        log.warning("call %s: refused media stream: %s", start.call_id, message)
        app.metrics.sessions_refused.labels(reason).inc()
        await transport.close(code, message)
        return False
    return True


async def _refuse(app: SessionHost, transport: MediaStreamTransport, reason: str, why: str) -> bool:
    app.metrics.sessions_refused.labels(reason).inc()
    await transport.close(ev.CLOSE_POLICY, f"stream refused: {why}")
    return False
