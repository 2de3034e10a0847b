"""Fake Twilio for tests: a phone caller on a media stream, and the REST API.

**The caller** (:func:`dial_fake_twilio`) does what Twilio does when a call hits
``<Connect><Stream>``: it opens the WebSocket (signed with ``X-Twilio-Signature``
when given the auth token), sends ``connected`` and ``start`` (callSid,
streamSid, customParameters), then 20 ms mu-law ``media`` frames at real-time
pace, silence while the caller says nothing, as a phone line does. What the
server sends back is "played" in real time: marks are echoed once the audio
queued before them has played, ``clear`` drops queued audio and returns the
pending marks at once, and everything played lands in ``heard`` (PCM16 8 kHz).
:func:`fetch_twiml` plays the voice webhook first, as Twilio would, and the stream
passes its ``<Parameter>``s back (Vantum serves no stream without the one-time
ticket among them); :func:`place_call` does both::

    answer = await fetch_twiml(stack.url + "/twilio/voice", config)
    config = attrs.evolve(config, custom_parameters=answer.parameters)  # the stream ticket
    async with dial_fake_twilio(answer.stream_url, config) as call:
        await call.say(speech_like(1.0, 8000) + silence(0.6, 8000))
        await call.wait_until(lambda: call.heard_seconds > 1.0)
        await call.press("5")
    # leaving the block sends ``stop`` and closes, like a caller hanging up

    async with place_call(stack.url, config) as call:  # the same, in one step
        ...

**The REST API** (:func:`serve_fake_twilio_rest`) is a real HTTP server with
Twilio's Call update endpoint: basic auth is checked (401, code 20003), unknown
calls get 404 (20404), ``Status=completed`` ends a call, ``Twiml`` redirects it
(400/21220 once it has ended), and every request is recorded. Give it to
``dial_fake_twilio(..., rest=fake)`` and a hang-up or redirect stops that
call's media stream, as on the real network.
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.parse
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from ..asgi import read_body, serve_app, serve_lifespan
from ..audio.resample import StreamResampler
from ..audio.wav import read_wav
from ..protocol import mulaw
from ..protocol.twilio import (
    FRAME_BYTES,
    SAMPLE_RATE,
    InboundEvent,
    OutboundClear,
    OutboundMark,
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioProtocolError,
    TwilioStart,
    TwilioStop,
    encode_inbound,
    parse_outbound,
)
from ..protocol.twilio_signature import SIGNATURE_HEADER, compute_signature
from .change import ChangeSignal
from .dtmf_detect import DtmfDetector

FRAME_S = 0.02
CLOSE_GRACE_S = 3.0


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@attrs.frozen
class FakeTwilioConfig:
    account_sid: str = attrs.field(factory=lambda: _sid("AC"))
    call_sid: str = attrs.field(factory=lambda: _sid("CA"))
    stream_sid: str = attrs.field(factory=lambda: _sid("MZ"))
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    auth_token: str | None = None
    """Sign the webhook and the stream handshake with this token (None: unsigned)."""
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    speed: float | None = 1.0
    """Pace of the mic and of playback (1.0 = real time, 4.0 = four times faster,
    None = as fast as the socket allows, with no silence sent between utterances)."""
    max_buffered_s: float = 120.0
    """Playback buffer; audio beyond it is dropped and counted in ``overflow_frames``."""
    playout_delay: float = 0.0
    """Seconds between audio arriving and starting to play when playback (re)starts:
    the carrier's jitter buffer and the phone network. Marks come back that much later
    than the server's clock expects, as on a real line."""


@attrs.frozen
class Segment:
    """Audio played between two marks, attributed to the mark that closes it."""

    mark: str
    seconds: float
    cleared: bool = False


@attrs.frozen
class TwimlAnswer:
    status: int
    body: str
    stream_url: str | None = None
    parameters: Mapping[str, str] = attrs.field(factory=dict, hash=False)


def webhook_params(config: FakeTwilioConfig) -> dict[str, str]:
    """The form fields Twilio POSTs to a voice URL for an incoming call."""
    return {
        "AccountSid": config.account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": config.call_sid,
        "CallStatus": "ringing",
        "Called": config.to_number,
        "Caller": config.from_number,
        "Direction": "inbound",
        "From": config.from_number,
        "To": config.to_number,
    }


async def fetch_twiml(
    voice_url: str,
    config: FakeTwilioConfig,
    *,
    connect_to: str | None = None,
    signature: str | None = None,
    params: Mapping[str, str] | None = None,
) -> TwimlAnswer:
    """POST the voice webhook like Twilio; ``voice_url`` is what gets signed.

    ``connect_to`` sends the request elsewhere (a server behind a proxy whose
    public URL is ``voice_url``); ``signature`` overrides the computed one.
    """
    form = dict(params if params is not None else webhook_params(config))
    headers = {"User-Agent": "TwilioProxy/1.1"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    elif config.auth_token:
        headers[SIGNATURE_HEADER] = compute_signature(config.auth_token, voice_url, form)
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(connect_to or voice_url, data=form, headers=headers)
    answer = TwimlAnswer(response.status_code, response.text)
    if response.status_code != 200 or not response.text:
        return answer
    stream = ET.fromstring(response.text).find("./Connect/Stream")
    if stream is None:
        return answer
    parameters = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return attrs.evolve(answer, stream_url=stream.get("url"), parameters=parameters)


class FakeTwilioCall:
    """One call's media stream, seen from Twilio's side."""

    def __init__(self, ws: WebSocketConnection, config: FakeTwilioConfig) -> None:
        self.ws = ws
        self.config = config
        self.heard = bytearray()
        """PCM16 8 kHz the caller has heard (played, not cleared)."""
        self.received = bytearray()
        """All media the server sent, as PCM16, including audio later cleared."""
        self._dtmf = DtmfDetector(SAMPLE_RATE)
        self._dtmf_fed = 0
        self.segments: list[Segment] = []
        self.marks_received: list[str] = []
        self.marks_echoed: list[str] = []
        self.marks_cleared: list[str] = []
        self.clears = 0
        self.frame_sizes: Counter[int] = Counter()
        """mu-law bytes per outbound media message (Vantum sends each answer chunk whole)."""
        self.bad_messages: list[str] = []
        self.overflow_frames = 0
        self.close_code: int | None = None
        self.stopped = False
        self._seq = 0
        self._send_lock = trio.Lock()
        self._queue: deque[bytes | str] = deque()
        self._queued_s = 0.0
        self._segment_s = 0.0
        self._pending_clear: list[str] = []
        self._mic_done = False
        self._changed = ChangeSignal()
        self._mic_tx, self._mic_rx = trio.open_memory_channel[bytes | trio.Event](50)

    @property
    def heard_seconds(self) -> float:
        return len(self.heard) / 2 / SAMPLE_RATE

    @property
    def dtmf(self) -> DtmfDetector:
        """The keys pressed in what the caller heard (in-band DTMF: ``dtmf.digits``),
        decoded when asked, from where the last look stopped: a call nobody asks
        (load tests) spends nothing on it."""
        if self._dtmf_fed < len(self.heard):
            self._dtmf.feed(bytes(self.heard[self._dtmf_fed :]))
            self._dtmf_fed = len(self.heard)
        return self._dtmf

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def heard_seconds_for(self, mark_prefix: str) -> float:
        """Seconds played before marks starting with ``mark_prefix`` (e.g. ``uid + ':'``)."""
        return sum(s.seconds for s in self.segments if s.mark.startswith(mark_prefix))

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Block until ``predicate()`` holds; re-checked on every message and played frame."""
        await self._changed.wait_until(predicate)

    # --- what the caller does -----------------------------------------------------

    async def say(self, pcm16: bytes, rate: int = SAMPLE_RATE) -> None:
        """Speak ``pcm16`` into the call; returns once the last frame was sent."""
        if rate != SAMPLE_RATE:
            resampler = StreamResampler(rate, SAMPLE_RATE)
            pcm16 = resampler.process(pcm16) + resampler.flush()
        size = 2 * FRAME_BYTES
        done = trio.Event()
        try:
            for i in range(0, len(pcm16), size):
                await self._mic_tx.send(pcm16[i : i + size].ljust(size, b"\0"))
            await self._mic_tx.send(done)
        except trio.BrokenResourceError:
            raise ConnectionClosed(None) from None
        await self.wait_until(lambda: done.is_set() or self._mic_done)
        if not done.is_set():
            raise ConnectionClosed(None)

    async def say_wav(self, path: str | Path) -> None:
        pcm, rate = read_wav(path)
        await self.say(pcm, rate)

    async def press(self, digit: str) -> None:
        await self.send_event(lambda seq: TwilioDtmf(seq, self.config.stream_sid, digit))

    async def send_event(self, build: Callable[[int], InboundEvent]) -> None:
        """Send the event ``build(sequence_number)`` makes; numbers stay in send order."""
        async with self._send_lock:
            self._seq += 1
            await self.ws.send_message(encode_inbound(build(self._seq)))

    async def send_raw(self, text: str | bytes) -> None:
        """Send any frame as is (malformed JSON, unknown events...)."""
        async with self._send_lock:
            await self.ws.send_message(text)

    async def hang_up(self) -> None:
        """Send ``stop`` and close, as Twilio does when the caller hangs up."""
        if self.stopped:
            return
        self.stopped = True
        cfg = self.config
        try:
            await self.send_event(
                lambda seq: TwilioStop(seq, cfg.stream_sid, cfg.account_sid, cfg.call_sid)
            )
            await self.ws.aclose()
        except ConnectionClosed:
            pass

    async def drop(self) -> None:
        """Close the socket without ``stop``, as a network failure would."""
        self.stopped = True
        await self.ws.aclose()

    # --- the line -----------------------------------------------------------------

    async def _start(self) -> None:
        cfg = self.config
        await self.send_raw(encode_inbound(TwilioConnected()))
        await self.send_event(
            lambda seq: TwilioStart(
                seq,
                cfg.stream_sid,
                cfg.account_sid,
                cfg.call_sid,
                custom_parameters=dict(cfg.custom_parameters),
            )
        )

    async def _mic(self) -> None:
        """One frame every 20 ms: queued speech, else silence (unless unpaced)."""
        speed = self.config.speed
        due = trio.current_time()
        chunk = 0
        try:
            async with self._mic_rx:
                while True:
                    due, chunk = await self._mic_frame(speed, due, chunk)
        except ConnectionClosed:
            pass
        self._mic_done = True
        self._changed.notify()

    async def _mic_frame(self, speed: float | None, due: float, chunk: int) -> tuple[float, int]:
        silence = bytes(2 * FRAME_BYTES)
        while True:
            try:
                item = self._mic_rx.receive_nowait()
            except trio.WouldBlock:
                if speed is not None:
                    item = silence
                else:
                    item = await self._mic_rx.receive()
            if isinstance(item, trio.Event):
                item.set()
                self._changed.notify()  # wake say(), which waits on it
                continue
            if speed is not None:
                await trio.sleep_until(due)
                due = max(due + FRAME_S / speed, trio.current_time() - 0.1)
            await self._send_media(mulaw.encode(item), chunk + 1)
            return due, chunk + 1

    async def _send_media(self, payload: bytes, chunk: int) -> None:
        timestamp = round((chunk - 1) * FRAME_S * 1000)
        await self.send_event(
            lambda seq: TwilioMedia(seq, self.config.stream_sid, payload, chunk, timestamp)
        )

    async def _reader(self) -> None:
        try:
            while True:
                self._on_message(await self.ws.get_message())
                self._changed.notify()
        except ConnectionClosed as exc:
            self.close_code = exc.reason.code if exc.reason else 1006
            self._changed.notify()
        # Twilio echoes no marks once the stream is gone.

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = parse_outbound(message)
        except TwilioProtocolError as exc:
            self.bad_messages.append(f"{exc}: {message[:200]!r}")
            return
        if event.stream_sid != self.config.stream_sid:
            self.bad_messages.append(f"wrong streamSid: {message[:200]!r}")
            return
        if isinstance(event, OutboundMark):
            self._queue_mark(event.name)
        elif isinstance(event, OutboundClear):
            self._clear_queue()
        else:
            self._queue_audio(mulaw.decode(event.payload), len(event.payload))

    # The carrier's playback, shared with the fake Telnyx (whose frames differ, not this).

    def _queue_mark(self, name: str) -> None:
        self.marks_received.append(name)
        self._queue.append(name)

    def _clear_queue(self) -> None:
        """``clear``: queued audio is dropped, queued marks go back at once."""
        self.clears += 1
        pending = [item for item in self._queue if isinstance(item, str)]
        self._queue.clear()
        self._queued_s = 0.0
        self._pending_clear.extend(pending)

    def _queue_audio(self, pcm: bytes, wire_bytes: int) -> None:
        self.frame_sizes[wire_bytes] += 1
        self.received += pcm
        seconds = len(pcm) / 2 / SAMPLE_RATE
        if self._queued_s + seconds > self.config.max_buffered_s:
            self.overflow_frames += 1
            return
        self._queue.append(pcm)
        self._queued_s += seconds

    async def _player(self) -> None:
        """Plays queued audio in real time and echoes marks as they are reached."""
        speed = self.config.speed
        due: float | None = None
        while True:
            if self._pending_clear:
                names, self._pending_clear = self._pending_clear, []
                if self._segment_s:
                    self.segments.append(Segment(names[0], self._segment_s, cleared=True))
                    self._segment_s = 0.0
                for name in names:
                    self.marks_cleared.append(name)
                    await self._echo(name)
                continue
            if not self._queue:
                # Keep ``due``: frames trickling in faster than they play must still
                # wait their turn; only a real underrun (due in the past) restarts it.
                await self._changed.wait()
                if due is not None and due < trio.current_time():
                    due = None
                continue
            now = trio.current_time()
            due = now + self.config.playout_delay if due is None else max(due, now - 0.1)
            await trio.sleep_until(due)
            if not self._queue:
                continue  # cleared while we waited
            item = self._queue.popleft()
            if isinstance(item, str):
                self.segments.append(Segment(item, self._segment_s))
                self._segment_s = 0.0
                self.marks_echoed.append(item)
                await self._echo(item)
                continue
            seconds = len(item) / 2 / SAMPLE_RATE
            self._queued_s -= seconds
            self._segment_s += seconds
            self.heard += item
            self._changed.notify()
            if speed is not None:
                due += seconds / speed

    async def _echo(self, name: str) -> None:
        with suppress(ConnectionClosed):
            await self.send_event(lambda seq: TwilioMark(seq, self.config.stream_sid, name))
        self._changed.notify()

    async def _watch_rest(self, rest: FakeTwilioRest) -> None:
        await rest.wait_ended(self.config.call_sid)
        await self.hang_up()


@asynccontextmanager
async def dial_fake_twilio(
    stream_url: str,
    config: FakeTwilioConfig | None = None,
    *,
    connect_to: str | None = None,
    rest: FakeTwilioRest | None = None,
) -> AsyncIterator[FakeTwilioCall]:
    """Open the media stream ``stream_url`` (signed as is; dialled at ``connect_to`` if set)."""
    cfg = config or FakeTwilioConfig()
    headers: list[tuple[bytes, bytes]] = [(b"user-agent", b"Twilio.TmeWs/1.0")]
    if cfg.auth_token:
        signature = compute_signature(cfg.auth_token, stream_url)
        headers.append((SIGNATURE_HEADER.encode(), signature.encode()))
    if rest is not None:
        rest.add_call(cfg.call_sid, cfg)
    # The socket's own teardown is bounded: once the call is over Twilio drops a stream
    # whose close does not complete within a few seconds (CLOSE_GRACE_S), rather than
    # wait for the server's TCP close forever.
    with trio.CancelScope() as teardown:
        async with open_websocket_url(
            connect_to or stream_url, extra_headers=headers, disconnect_timeout=2
        ) as ws:
            async with trio.open_nursery() as nursery:
                call = FakeTwilioCall(ws, cfg)
                await call._start()
                nursery.start_soon(call._reader)
                nursery.start_soon(call._player)
                nursery.start_soon(call._mic)
                if rest is not None:
                    nursery.start_soon(call._watch_rest, rest)
                try:
                    yield call
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await call.hang_up()
                    nursery.cancel_scope.cancel()
                    teardown.deadline = trio.current_time() + CLOSE_GRACE_S


@asynccontextmanager
async def place_call(
    server_url: str,
    config: FakeTwilioConfig | None = None,
    *,
    voice_path: str = "/twilio/voice",
    rest: FakeTwilioRest | None = None,
) -> AsyncIterator[FakeTwilioCall]:
    """A call as Twilio places it: POST the voice webhook of the server at ``server_url``
    (``http://host:port``; signed when ``config.auth_token`` is set), then open the
    ``<Stream>`` it answered, passing its ``<Parameter>``s back in ``start`` — the
    one-time stream ticket among them, without which Vantum serves no stream.
    ``call.config.custom_parameters`` holds what was passed."""
    cfg = config or FakeTwilioConfig()
    answer = await fetch_twiml(server_url + voice_path, cfg)
    if answer.stream_url is None:
        raise RuntimeError(
            f"the voice webhook answered no <Stream> (HTTP {answer.status}): {answer.body[:200]}"
        )
    cfg = attrs.evolve(cfg, custom_parameters=answer.parameters)
    async with dial_fake_twilio(answer.stream_url, cfg, rest=rest) as call:
        yield call


async def post_callback(url: str, form: Mapping[str, str], auth_token: str | None) -> int:
    """POST a status or AMD callback to ``url`` as Twilio does (signed with the token)."""
    headers = {"User-Agent": "TwilioProxy/1.1"}
    if auth_token:
        headers[SIGNATURE_HEADER] = compute_signature(auth_token, url, form)
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(url, data=dict(form), headers=headers)
    return response.status_code


def _callback_form(created: CreatedCall, cfg: FakeTwilioConfig, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": cfg.account_sid,
        "CallSid": created.sid,
        "From": created.get("From") or "",
        "To": created.get("To") or "",
        "Direction": "outbound-api",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def end_outbound(
    rest: FakeTwilioRest,
    created: CreatedCall,
    status: str,
    config: FakeTwilioConfig | None = None,
    duration_s: int = 0,
) -> int:
    """The call ends (``completed``) or never connects (``busy``, ``no-answer``,
    ``failed``): Twilio posts the final ``StatusCallback``."""
    cfg = config or FakeTwilioConfig()
    rest.calls[created.sid] = status
    url = created.get("StatusCallback")
    if url is None:
        return 0
    form = _callback_form(created, cfg, CallStatus=status, CallDuration=str(duration_s))
    return await post_callback(url, form, cfg.auth_token)


@asynccontextmanager
async def answer_outbound(
    rest: FakeTwilioRest,
    created: CreatedCall,
    config: FakeTwilioConfig | None = None,
    *,
    answered_by: str | None = "human",
    amd_after: float = 0.0,
) -> AsyncIterator[FakeTwilioCall]:
    """Twilio's side of an outbound call the callee picks up: the ``answered`` status,
    the ``Url`` fetched (signed, ``Direction=outbound-api``), the ``<Stream>`` opened;
    with asynchronous AMD, ``AnsweredBy`` posted to ``AsyncAmdStatusCallback``
    ``amd_after`` seconds later (None: no verdict at all). Leaving the block hangs
    up and posts the final ``completed`` status."""
    cfg = attrs.evolve(config or FakeTwilioConfig(), call_sid=created.sid)
    rest.calls[created.sid] = "in-progress"
    status_url = created.get("StatusCallback")
    if status_url is not None and "answered" in created.all("StatusCallbackEvent"):
        await post_callback(
            status_url, _callback_form(created, cfg, CallStatus="in-progress"), cfg.auth_token
        )
    url = created.get("Url")
    if url is None:
        raise RuntimeError("the call was created without a Url")
    answer = await fetch_twiml(
        url, cfg, params=_callback_form(created, cfg, CallStatus="in-progress")
    )
    if answer.stream_url is None:
        raise RuntimeError(f"the Url answered no <Stream> (HTTP {answer.status}): {answer.body}")
    cfg = attrs.evolve(cfg, custom_parameters=answer.parameters)
    amd_url = created.get("AsyncAmdStatusCallback")
    async with dial_fake_twilio(answer.stream_url, cfg, rest=rest) as call:
        async with trio.open_nursery() as nursery:
            if amd_url is not None and answered_by is not None:

                async def verdict() -> None:
                    await trio.sleep(amd_after)
                    form = _callback_form(
                        created,
                        cfg,
                        AnsweredBy=answered_by,
                        MachineDetectionDuration=str(int(amd_after * 1000)),
                    )
                    await post_callback(amd_url, form, cfg.auth_token)

                nursery.start_soon(verdict)
            yield call
    await end_outbound(rest, created, "completed", cfg, duration_s=1)


# --- REST API --------------------------------------------------------------------


@attrs.frozen
class FakeTwilioRestConfig:
    account_sid: str = "AC" + "f" * 32
    auth_token: str = "fake-twilio-token"
    latency: float = 0.0
    """Seconds before each response, as a remote API takes."""


@attrs.frozen
class CallUpdate:
    call_sid: str
    params: Mapping[str, str] = attrs.field(hash=False)
    status: int


@attrs.frozen
class CreatedCall:
    """A ``POST Calls.json`` the fake accepted: the call it created and what it was told."""

    sid: str
    params: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.params if k == name]


@attrs.define
class FakeTwilioRest:
    """The running fake REST API: its base URL, the calls it knows and what it was asked."""

    config: FakeTwilioRestConfig
    base_url: str = ""
    calls: dict[str, str] = attrs.Factory(dict)
    """Call SID -> status ("in-progress", "completed")."""
    updates: list[CallUpdate] = attrs.Factory(list)
    """Every authenticated update request, in order, with the status it got."""
    rejected: list[int] = attrs.Factory(list)
    created: list[CreatedCall] = attrs.Factory(list)
    """Every call placed through ``Calls.json``, in order."""
    _failures: deque[tuple[int, int, str]] = attrs.Factory(deque)
    _ended: dict[str, trio.Event] = attrs.Factory(dict)
    _changed: ChangeSignal = attrs.Factory(ChangeSignal)

    @property
    def hangups(self) -> list[str]:
        return [u.call_sid for u in self.updates if u.status == 200 and "Status" in u.params]

    @property
    def redirects(self) -> list[tuple[str, str]]:
        return [
            (u.call_sid, u.params["Twiml"])
            for u in self.updates
            if u.status == 200 and "Twiml" in u.params
        ]

    def add_call(self, call_sid: str, config: FakeTwilioConfig | None = None) -> None:
        """Make ``call_sid`` a live call (``dial_fake_twilio(rest=...)`` does this)."""
        self.calls[call_sid] = "in-progress"
        self._ended.setdefault(call_sid, trio.Event())

    def fail_next(
        self, status: int, code: int = 20500, message: str = "Internal Server Error"
    ) -> None:
        self._failures.append((status, code, message))

    async def wait_ended(self, call_sid: str) -> None:
        """Return once the call was hung up or redirected away from its stream."""
        await self._ended.setdefault(call_sid, trio.Event()).wait()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        await self._changed.wait_until(predicate)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = (await read_body(receive)) or b""
        if self.config.latency:
            await trio.sleep(self.config.latency)
        status, payload = self._handle(scope, body)
        self._changed.notify()
        data = json.dumps(payload).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def _handle(self, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
        path = scope["path"]
        if not self._authorized(scope):
            self.rejected.append(401)
            return _twilio_error(401, 20003, "Authenticate")
        if path == f"/2010-04-01/Accounts/{self.config.account_sid}/Calls.json":
            if scope["method"] != "POST":
                self.rejected.append(405)
                return _twilio_error(405, 20004, "Method not allowed")
            pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            return self._create(tuple(pairs))
        prefix = f"/2010-04-01/Accounts/{self.config.account_sid}/Calls/"
        if not path.startswith(prefix) or not path.endswith(".json"):
            self.rejected.append(404)
            return _twilio_error(404, 20404, f"The requested resource {path} was not found")
        call_sid = path[len(prefix) : -len(".json")]
        if call_sid not in self.calls:
            self.rejected.append(404)
            return _twilio_error(404, 20404, f"The requested resource {path} was not found")
        if scope["method"] == "GET":
            return 200, self._resource(call_sid)
        if scope["method"] != "POST":
            self.rejected.append(405)
            return _twilio_error(405, 20004, "Method not allowed")
        params = dict(
            urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        )
        status, payload = self._update(call_sid, params)
        self.updates.append(CallUpdate(call_sid, params, status))
        return status, payload

    def _create(self, pairs: tuple[tuple[str, str], ...]) -> tuple[int, dict[str, Any]]:
        """``Calls.json``: Twilio's checks for the fields Vantum sends, then a queued call."""
        if self._failures:
            return _twilio_error(*self._failures.popleft())
        params = dict(pairs)
        if not params.get("To"):
            return _twilio_error(400, 21201, "No 'To' number is specified")
        if not params.get("From"):
            return _twilio_error(400, 21213, "No 'From' number is specified")
        if not params.get("Url") and not params.get("Twiml"):
            return _twilio_error(400, 21205, "Url parameter is required")
        for key in ("Url", "StatusCallback", "AsyncAmdStatusCallback"):
            if key in params and not params[key].startswith(("http://", "https://")):
                return _twilio_error(400, 21205, f"{key} is not a valid URL")
        detection = params.get("MachineDetection")
        if detection is not None and detection not in ("Enable", "DetectMessageEnd"):
            return _twilio_error(400, 21212, f"Invalid MachineDetection: {detection}")
        sid = _sid("CA")
        self.created.append(CreatedCall(sid, pairs))
        self.add_call(sid)
        self.calls[sid] = "queued"
        resource = self._resource(sid)
        resource.update(to=params["To"], from_=params["From"], direction="outbound-api")
        resource["from"] = resource.pop("from_")
        return 201, resource

    def _update(self, call_sid: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self._failures:
            return _twilio_error(*self._failures.popleft())
        if "Status" in params:
            if params["Status"] not in ("completed", "canceled"):
                return _twilio_error(400, 21218, f"Invalid Status: {params['Status']}")
            self.calls[call_sid] = "completed"
            self._ended[call_sid].set()
            return 200, self._resource(call_sid)
        if "Twiml" in params or "Url" in params:
            if self.calls[call_sid] not in ("in-progress", "queued"):
                return _twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
            if "Twiml" in params:
                try:
                    root = ET.fromstring(params["Twiml"])
                except ET.ParseError:
                    return _twilio_error(400, 12100, "Document parse failure")
                if root.tag != "Response":
                    return _twilio_error(400, 12100, "Document parse failure")
            self._ended[call_sid].set()  # the new TwiML replaces <Connect><Stream>
            return 200, self._resource(call_sid)
        return _twilio_error(400, 20001, "No updatable parameters given")

    def _authorized(self, scope: dict[str, Any]) -> bool:
        cfg = self.config
        expected = (
            "Basic " + base64.b64encode(f"{cfg.account_sid}:{cfg.auth_token}".encode()).decode()
        )
        headers = dict(scope["headers"])
        return bool(headers.get(b"authorization", b"").decode("latin-1") == expected)

    def _resource(self, call_sid: str) -> dict[str, Any]:
        uri = f"/2010-04-01/Accounts/{self.config.account_sid}/Calls/{call_sid}.json"
        return {
            "sid": call_sid,
            "account_sid": self.config.account_sid,
            "status": self.calls[call_sid],
            "api_version": "2010-04-01",
            "uri": uri,
        }


def _twilio_error(status: int, code: int, message: str) -> tuple[int, dict[str, Any]]:
    info = f"https://www.twilio.com/docs/errors/{code}"
    return status, {"code": code, "message": message, "more_info": info, "status": status}


@asynccontextmanager
async def serve_fake_twilio_rest(
    config: FakeTwilioRestConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeTwilioRest]:
    """Run the fake REST API on ``host:port``; use ``fake.base_url`` as TWILIO_API_BASE."""
    fake = FakeTwilioRest(config or FakeTwilioRestConfig())
    async with serve_app(fake.app, host, port) as url:
        fake.base_url = url
        yield fake


def stream_url_for(server_url: str, path: str = "/twilio/stream") -> str:
    """``ws://host:port/twilio/stream`` for an ``http://host:port`` server URL."""
    parts = urllib.parse.urlsplit(server_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{path}"


__all__ = [
    "CallUpdate",
    "CreatedCall",
    "FakeTwilioCall",
    "FakeTwilioConfig",
    "FakeTwilioRest",
    "FakeTwilioRestConfig",
    "Segment",
    "TwimlAnswer",
    "answer_outbound",
    "dial_fake_twilio",
    "end_outbound",
    "fetch_twiml",
    "place_call",
    "post_callback",
    "serve_fake_twilio_rest",
    "stream_url_for",
    "webhook_params",
]
