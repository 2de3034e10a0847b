"""Phone calls end to end: the fake Twilio caller and REST API against a real server.

The transport's frame mapping is also driven directly (no sockets) through an
in-memory ASGI pair, so every rule of ``send()`` / ``receive()`` is pinned down.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from e2e_helpers import FAST_CA
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from vantum.audio.wav import write_wav
from vantum.config import Config
from vantum.errors import ConfigError
from vantum.pipeline import events as e
from vantum.pipeline.events import ServerEvent
from vantum.pipeline.transport import PeerGone
from vantum.protocol import events as ev
from vantum.protocol import mulaw
from vantum.protocol.client_events import DtmfInput, InputChunk, InputStart, PlaybackProgress
from vantum.protocol.twilio import (
    TICKET_PARAMETER,
    MediaFormat,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioSerializer,
    TwilioStart,
    TwilioStop,
    clear_message,
    derive_key,
    encode_inbound,
    issue_ticket,
    mark_message,
    media_message,
    parse_outbound,
)
from vantum.protocol.twilio.ticket import TICKET_TTL_S
from vantum.protocol.twilio_signature import compute_signature
from vantum.server.auth import new_secret
from vantum.testing.audio_fixtures import rms_dbfs, silence, speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_cartesia import expected_duration
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.fake_twilio import (
    FakeTwilioCall,
    FakeTwilioConfig,
    FakeTwilioRestConfig,
    dial_fake_twilio,
    fetch_twiml,
    place_call,
    serve_fake_twilio_rest,
    stream_url_for,
    webhook_params,
)
from vantum.testing.stack import Stack, open_stack
from vantum.transports import twilio_ws
from vantum.transports.twilio_rest import TwilioAPIError, TwilioREST, dial_twiml
from vantum.transports.twilio_ws import MediaStreamTransport, TwilioTransport

TOKEN = "twilio-auth-token-for-tests"
DG = FakeDeepgramConfig(
    script=("hello there", "what time is it"), final_latency=0.02, interim_latency=0.01
)


def heard_reply(messages: list[dict[str, Any]]) -> str:
    content = str(messages[-1]["content"])
    return "You pressed a key." if "keypad" in content else f"Heard {content}."


OA = FakeOpenAIConfig(first_token_latency=0.01, tokens_per_second=2000, responder=heard_reply)
SHORT_OA = attrs.evolve(OA, responder=lambda _messages: "Sure.")


def utterance(pcm_seconds: float = 1.0) -> bytes:
    """A caller's sentence: speech, then enough silence for auto turn-taking to end it."""
    return speech_like(pcm_seconds, 8000) + silence(0.6, 8000)


async def answered(stack: Stack, call: FakeTwilioCall, n: int) -> str:
    """Wait until the caller has heard all of the ``n``-th answer; return its utteranceId."""

    def done() -> bool:
        if len(stack.cartesia.completed) < n:
            return False
        return f"{stack.cartesia.completed[n - 1]}:end" in call.marks_echoed

    with trio.fail_after(10):
        await call.wait_until(done)
    return stack.cartesia.completed[n - 1]


async def wait_idle(stack: Stack) -> None:
    with trio.fail_after(3):
        await stack.app.wait_idle()
    assert stack.app.sessions == {}


# --- full calls ---------------------------------------------------------------------


async def test_phone_conversation_through_webhook_and_stream() -> None:
    async with open_stack(
        deepgram=DG, openai=OA, cartesia=FAST_CA, twilio_auth_token=TOKEN
    ) as stack:
        cfg = FakeTwilioConfig(auth_token=TOKEN)
        answer = await fetch_twiml(stack.url + "/twilio/voice?language=en-GB&x=1", cfg)
        assert answer.status == 200 and answer.stream_url == stream_url_for(stack.url)
        parameters = dict(answer.parameters)
        assert parameters.pop("vantumTicket").startswith("t1.")  # one stream of this call
        assert parameters == {
            "CallSid": cfg.call_sid,
            "AccountSid": cfg.account_sid,
            "From": cfg.from_number,
            "To": cfg.to_number,
            "Direction": "inbound",
            "language": "en-GB",
        }
        cfg = attrs.evolve(cfg, custom_parameters=answer.parameters)
        async with dial_fake_twilio(answer.stream_url, cfg) as call:
            produced = 0.0
            for n, expected in enumerate(["hello there", "what time is it"], 1):
                await call.say(utterance())  # real-time pace, as a caller speaks
                uid = await answered(stack, call, n)
                assert stack.openai.requests[n - 1]["messages"][-1]["content"] == expected
                seconds = stack.cartesia.audio_seconds[uid]
                assert seconds == pytest.approx(len(f"Heard {expected}.") * 0.06, abs=0.05)
                # Chunks go whole, unpadded: the caller hears exactly the answer.
                assert call.heard_seconds_for(uid + ":") == pytest.approx(seconds, abs=0.002)
                produced += seconds
            history = [m["role"] for m in stack.openai.requests[-1]["messages"]]
            assert history == ["system", "user", "assistant", "user"]
            # One media message per answer chunk (40 ms; the first ones as they come).
            assert max(call.frame_sizes) == 320 and 320 in call.frame_sizes
            assert call.marks_echoed == call.marks_received and call.marks_cleared == []
            # A mark per 200 ms of audio, plus a final one per answer.
            assert len(call.marks_received) <= produced / 0.2 + 2 * 2
            assert call.heard_seconds == pytest.approx(produced, abs=0.05)
            assert rms_dbfs(bytes(call.heard)) > -30  # the TTS voice, not silence
            assert call.bad_messages == []
            # ``stop`` ends the call: the server closes the stream normally.
            await call.send_event(
                lambda seq: TwilioStop(seq, cfg.stream_sid, cfg.account_sid, cfg.call_sid)
            )
            with trio.fail_after(3):
                await call.wait_until(lambda: call.closed)
            assert call.close_code == ev.CLOSE_NORMAL
        await wait_idle(stack)


async def test_bad_frames_are_logged_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="vantum.twilio")
    async with open_stack(deepgram=DG, openai=SHORT_OA, cartesia=FAST_CA) as stack:
        cfg = FakeTwilioConfig(speed=4.0)
        async with place_call(stack.url, cfg) as call:
            await call.send_raw("{not json")
            await call.send_raw('{"event": "bogus", "streamSid": "MZ1"}')
            await call.send_raw("[1, 2, 3]")
            await call.send_event(lambda seq: TwilioMedia(seq, "MZwrong", b"\xff" * 160, 1, 0))
            await call.send_event(lambda seq: TwilioDtmf(seq, "MZwrong", "1"))
            await call.send_event(lambda seq: TwilioMark(seq, cfg.stream_sid, "never-sent"))
            await call.say(utterance())
            uid = await answered(stack, call, 1)
            assert call.heard_seconds_for(uid + ":") > 0.2
            assert stack.openai.requests[0]["messages"][-1]["content"] == "hello there"
        await wait_idle(stack)
    warnings = [r.getMessage() for r in caplog.records if r.name == "vantum.twilio"]
    for needle in ("not valid JSON", "unknown Twilio event 'bogus'", "JSON object", "MZwrong"):
        assert any(needle in w and cfg.call_sid in w for w in warnings), (needle, warnings)
    assert any("never-sent" in w for w in warnings)


async def test_dtmf_reaches_the_conversation() -> None:
    async with open_stack(deepgram=DG, openai=OA, cartesia=FAST_CA) as stack:
        async with place_call(stack.url, FakeTwilioConfig(speed=4.0)) as call:
            await call.press("5")
            uid = await answered(stack, call, 1)
            message = stack.openai.requests[0]["messages"][-1]["content"]
            assert message == "(The caller pressed 5 on the keypad.)"
            expected = len("You pressed a key.") * 0.06
            assert call.heard_seconds_for(uid + ":") == pytest.approx(expected, abs=0.03)
        await wait_idle(stack)


async def test_socket_close_without_stop_ends_the_call() -> None:
    async with open_stack(deepgram=DG, openai=SHORT_OA, cartesia=FAST_CA) as stack:
        async with place_call(stack.url, FakeTwilioConfig(speed=4.0)) as call:
            with trio.fail_after(3):
                await stack.app.wait_open()
            await call.drop()  # no ``stop``: the connection just breaks
            await wait_idle(stack)


async def test_rest_hang_up_and_transfer_end_live_calls() -> None:
    async with serve_fake_twilio_rest() as rest:
        twilio: dict[str, Any] = {
            "twilio_account_sid": rest.config.account_sid,
            "twilio_auth_token": rest.config.auth_token,
            "twilio_api_base": rest.base_url,
        }
        async with open_stack(deepgram=DG, openai=SHORT_OA, cartesia=FAST_CA, **twilio) as stack:
            client = TwilioREST.from_config(stack.app.config)
            for action in ("hang_up", "transfer"):
                cfg = FakeTwilioConfig(auth_token=rest.config.auth_token, speed=4.0)
                async with place_call(stack.url, cfg, rest=rest) as call:
                    with trio.fail_after(3):
                        await stack.app.wait_open()
                    if action == "hang_up":
                        resource = await client.hang_up(cfg.call_sid)
                        assert resource["status"] == "completed"
                    else:
                        await client.transfer(cfg.call_sid, "+14155550100")
                    with trio.fail_after(3):
                        await call.wait_until(lambda: call.closed)
                    await wait_idle(stack)
            calls = list(rest.calls)
            assert rest.hangups == [calls[0]]
            assert rest.redirects == [(calls[1], "<Response><Dial>+14155550100</Dial></Response>")]
            with pytest.raises(TwilioAPIError) as err:
                await client.transfer(calls[0], "sip:desk@example.com")
            assert (err.value.status, err.value.code) == (400, 21220)


# --- webhook and handshake ------------------------------------------------------------


async def test_webhook_signature_is_enforced() -> None:
    async with open_stack(twilio_auth_token=TOKEN) as stack:
        voice = stack.url + "/twilio/voice"
        cfg = FakeTwilioConfig(auth_token=TOKEN)
        assert (await fetch_twiml(voice, cfg)).status == 200
        # Tampered: the caller ID changed after Twilio signed the request.
        signed = compute_signature(TOKEN, voice, webhook_params(cfg))
        forged = {**webhook_params(cfg), "From": "+19999999999"}
        assert (await fetch_twiml(voice, cfg, params=forged, signature=signed)).status == 403
        unsigned = attrs.evolve(cfg, auth_token=None)
        assert (await fetch_twiml(voice, unsigned)).status == 403
        wrong = attrs.evolve(cfg, auth_token="another-token")
        assert (await fetch_twiml(voice, wrong)).status == 403
        status = stack.url + "/twilio/status"
        ended = {**webhook_params(cfg), "CallStatus": "completed", "CallDuration": "42"}
        assert (await fetch_twiml(status, cfg, params=ended)).status == 204
        assert (await fetch_twiml(status, unsigned, params=ended)).status == 403
        # The media stream's handshake is signed too.
        with pytest.raises(ConnectionRejected) as rejected:
            async with dial_fake_twilio(stream_url_for(stack.url), unsigned):
                pass
        assert rejected.value.status_code == 403
        async with httpx.AsyncClient(timeout=5.0) as http:
            assert (await http.get(status)).status_code == 405
            assert (await http.post(stack.url + "/twilio/nothing")).status_code == 404
        assert stack.app.sessions == {}


def twilio_sessions(stack: Stack) -> float:
    value = stack.app.metrics.registry.get_sample_value(
        "vantum_sessions_total", {"transport": "twilio"}
    )
    return value or 0.0


async def refused_stream(stack: Stack, cfg: FakeTwilioConfig) -> FakeTwilioCall:
    """Dial the stream with ``cfg`` as is; return the call once the server closed it."""
    async with dial_fake_twilio(stream_url_for(stack.url), cfg) as call:
        with trio.fail_after(5):
            await call.wait_until(lambda: call.closed)
    return call


async def test_a_replayed_stream_handshake_opens_no_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The handshake's signature covers only the stream URL, the same for every call. A
    captured handshake and ``start`` (ticket included), replayed during the call and
    after it, must open nothing: the ticket is good for one stream."""
    caplog.set_level(logging.WARNING, logger="vantum.twilio")
    replays = 10
    async with open_stack(
        deepgram=DG, openai=SHORT_OA, cartesia=FAST_CA, twilio_auth_token=TOKEN
    ) as stack:
        async with place_call(stack.url, FakeTwilioConfig(auth_token=TOKEN, speed=4.0)) as call:
            with trio.fail_after(3):
                await stack.app.wait_open()
            captured = call.config  # same URL, so the same X-Twilio-Signature; same start
            replayed = await refused_stream(stack, captured)
            assert replayed.close_code == ev.CLOSE_POLICY
            assert len(stack.app.sessions) == 1  # the real call goes on
            await call.press("5")
            await answered(stack, call, 1)
        await wait_idle(stack)
        for _ in range(replays):
            replayed = await refused_stream(stack, captured)
            assert replayed.close_code == ev.CLOSE_POLICY
        assert twilio_sessions(stack) == 1
        assert refused_count(stack, "stream_ticket_reused") == 1 + replays
        assert stack.app.sessions == {}
    refusals = [r.getMessage() for r in caplog.records if "refused media stream" in r.message]
    assert len(refusals) == 1 + replays
    assert all(captured.call_sid in m and "already used" in m for m in refusals)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "missing"),
        ("malformed", "malformed"),
        ("forged", "bad_signature"),
        ("another call's", "bad_signature"),
        ("expired", "expired"),
    ],
)
async def test_a_stream_without_a_valid_ticket_is_refused(
    case: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vantum.twilio")
    async with open_stack(twilio_auth_token=TOKEN) as stack:
        cfg = FakeTwilioConfig(auth_token=TOKEN)
        tickets, now = stack.app.stream_tickets, time.time()
        ticket = {
            "missing": None,
            "malformed": "t1.not-a-ticket",
            "forged": issue_ticket(derive_key(new_secret().encode()), cfg.call_sid, now=now),
            "another call's": tickets.issue("CA" + "9" * 32, now=now),
            "expired": tickets.issue(cfg.call_sid, now=now - TICKET_TTL_S - 1),
        }[case]
        params = {"CallSid": cfg.call_sid} | ({TICKET_PARAMETER: ticket} if ticket else {})
        call = await refused_stream(stack, attrs.evolve(cfg, custom_parameters=params))
        assert call.close_code == ev.CLOSE_POLICY
        assert refused_count(stack, f"stream_ticket_{reason}") == 1
        assert twilio_sessions(stack) == 0
        # A ticket the webhook issued for this call still opens it (once).
        good = {TICKET_PARAMETER: tickets.issue(cfg.call_sid, now=time.time())}
        async with dial_fake_twilio(
            stream_url_for(stack.url), attrs.evolve(cfg, custom_parameters=good)
        ):
            with trio.fail_after(3):
                await stack.app.wait_open()
    (refusal,) = [r.getMessage() for r in caplog.records if "refused media stream" in r.message]
    assert cfg.call_sid in refusal and "ticket" in refusal
    assert ticket is None or ticket not in refusal  # never logged


async def test_a_stream_must_start_promptly_and_usably(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twilio_ws, "START_TIMEOUT_S", 0.3)
    async with open_stack() as stack:
        async with open_websocket_url(stream_url_for(stack.url)) as ws:
            await ws.send_message(encode_inbound(TwilioConnected()))  # and then nothing
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == ev.CLOSE_POLICY
        cfg = FakeTwilioConfig()
        start = TwilioStart(
            1,
            cfg.stream_sid,
            cfg.account_sid,
            cfg.call_sid,
            media_format=MediaFormat(sample_rate=16000),  # not what we asked for
            custom_parameters={
                TICKET_PARAMETER: stack.app.stream_tickets.issue(cfg.call_sid, now=time.time())
            },
        )
        async with open_websocket_url(stream_url_for(stack.url)) as ws:
            await ws.send_message(encode_inbound(TwilioConnected()))
            await ws.send_message(encode_inbound(start))
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == ev.CLOSE_POLICY
        assert refused_count(stack, "twilio_no_start") == 1
        assert refused_count(stack, "twilio_bad_start") == 1
        assert twilio_sessions(stack) == 0


async def test_public_url_behind_a_proxy(tmp_path: Path) -> None:
    public = "https://voice.example.com"
    async with open_stack(
        deepgram=DG, openai=SHORT_OA, cartesia=FAST_CA, twilio_auth_token=TOKEN, public_url=public
    ) as stack:
        cfg = FakeTwilioConfig(auth_token=TOKEN, speed=4.0)
        local = stack.url + "/twilio/voice"
        answer = await fetch_twiml(public + "/twilio/voice", cfg, connect_to=local)
        assert answer.status == 200
        assert answer.stream_url == "wss://voice.example.com/twilio/stream"
        # Signed for the address we were reached at, not the one Twilio called: refused.
        assert (await fetch_twiml(local, cfg)).status == 403
        local_ws = stream_url_for(stack.url)
        wav = tmp_path / "caller.wav"  # a recording at 16 kHz, streamed as 8 kHz mu-law
        write_wav(wav, speech_like(1.0, 16_000) + silence(0.6, 16_000), 16_000)
        cfg = attrs.evolve(cfg, custom_parameters=answer.parameters)
        async with dial_fake_twilio(answer.stream_url, cfg, connect_to=local_ws) as call:
            await call.say_wav(wav)
            await answered(stack, call, 1)
        await wait_idle(stack)


async def test_webhook_rejects_calls_at_capacity() -> None:
    async with open_stack(max_sessions=0) as stack:
        answer = await fetch_twiml(stack.url + "/twilio/voice", FakeTwilioConfig())
        assert answer.status == 200 and answer.stream_url is None
        assert '<Reject reason="busy" />' in answer.body


def refused_count(stack: Stack, reason: str) -> float:
    value = stack.app.metrics.registry.get_sample_value(
        "vantum_sessions_refused_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_stream_handshake_flood_from_one_address_gets_429() -> None:
    async with open_stack(
        deepgram=DG,
        openai=SHORT_OA,
        cartesia=FAST_CA,
        twilio_connect_rate_per_s=0.01,
        twilio_connect_burst=3,
        connect_rate_per_s=0.01,  # /ws: one connection, then one per 100 s
        connect_burst=1,
    ) as stack:
        for _ in range(3):
            async with place_call(stack.url, FakeTwilioConfig()):
                with trio.fail_after(3):
                    await stack.app.wait_open()
            await wait_idle(stack)
        with pytest.raises(ConnectionRejected) as rejected:
            async with place_call(stack.url, FakeTwilioConfig()):
                pass
        assert rejected.value.status_code == 429
        assert int(dict(rejected.value.headers)[b"retry-after"]) == 100  # 1 / 0.01 s
        assert refused_count(stack, "twilio_rate_limited") == 1
        assert (
            stack.app.metrics.registry.get_sample_value(
                "vantum_sessions_total", {"transport": "twilio"}
            )
            == 3
        )
        # Its own bucket: the same address may still open /ws (whose burst is 1).
        async with BrowserClient.connect(stack.ws_url) as client:
            assert client.session_id
        assert refused_count(stack, "rate_limited") == 0


def test_stream_rate_limit_settings() -> None:
    config = Config()
    assert (config.twilio_connect_rate_per_s, config.twilio_connect_burst) == (10.0, 100)
    env = {"VANTUM_TWILIO_CONNECT_RATE": "0", "VANTUM_TWILIO_CONNECT_BURST": "7"}
    config = Config.from_env(env)
    assert (config.twilio_connect_rate_per_s, config.twilio_connect_burst) == (0.0, 7)


# --- REST client errors -------------------------------------------------------------


async def test_rest_client_reports_twilio_errors() -> None:
    rest_cfg = FakeTwilioRestConfig()
    async with serve_fake_twilio_rest(rest_cfg) as rest:
        sid = "CA" + "a" * 32
        rest.add_call(sid)
        bad_auth = TwilioREST(rest_cfg.account_sid, "wrong", rest.base_url)
        with pytest.raises(TwilioAPIError) as err:
            await bad_auth.hang_up(sid)
        assert (err.value.status, err.value.code) == (401, 20003)
        client = TwilioREST(rest_cfg.account_sid, rest_cfg.auth_token, rest.base_url)
        with pytest.raises(TwilioAPIError) as err:
            await client.hang_up("CA" + "b" * 32)
        assert (err.value.status, err.value.code) == (404, 20404)
        assert "was not found" in err.value.message
        rest.fail_next(503, 20503, "Service Unavailable")
        with pytest.raises(TwilioAPIError, match="Service Unavailable"):
            await client.hang_up(sid)
        assert rest.calls[sid] == "in-progress"
        assert (await client.hang_up(sid))["status"] == "completed"
        assert rest.rejected == [401, 404]
    with pytest.raises(TwilioAPIError) as err:  # the fake is gone: nothing listens
        await client.hang_up(sid)
    assert err.value.status is None and "unreachable" in err.value.message
    with pytest.raises(ValueError):
        client.call_url("../../Accounts")
    with pytest.raises(ValueError):
        dial_twiml("+1 415 <script>")
    assert (
        dial_twiml("sip:a@b.example")
        == "<Response><Dial><Sip>sip:a@b.example</Sip></Dial></Response>"
    )
    with pytest.raises(ConfigError):
        TwilioREST.from_config(Config())


# --- the transport, without sockets ------------------------------------------------------


class MemoryASGI:
    """Both ends of an ASGI WebSocket in memory: feed inbound frames, read outbound ones."""

    def __init__(self) -> None:
        self.tx, self.rx = trio.open_memory_channel[dict[str, Any]](100)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return await self.rx.receive()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def feed(self, text: str) -> None:
        self.tx.send_nowait({"type": "websocket.receive", "text": text})

    def take(self) -> list[Any]:
        out = [parse_outbound(m["text"]) for m in self.sent]
        self.sent.clear()
        return out


STREAM = "MZ" + "1" * 32
CALL = "CA" + "2" * 32


class Line:
    """Inbound Twilio frames with increasing sequence numbers."""

    def __init__(self, asgi: MemoryASGI) -> None:
        self.asgi = asgi
        self.seq = 0

    def next(self) -> int:
        self.seq += 1
        return self.seq

    def start(self, **params: str) -> None:
        self.asgi.feed(encode_inbound(TwilioConnected()))
        start = TwilioStart(self.next(), STREAM, "AC" + "3" * 32, CALL, custom_parameters=params)
        self.asgi.feed(encode_inbound(start))

    def media(self, ulaw: bytes = b"\xff" * 160, stream: str = STREAM) -> None:
        self.asgi.feed(encode_inbound(TwilioMedia(self.next(), stream, ulaw, self.seq, 0)))

    def mark(self, name: str) -> None:
        self.asgi.feed(encode_inbound(TwilioMark(self.next(), STREAM, name)))


async def started(**options: Any) -> tuple[TwilioTransport, MemoryASGI, Line]:
    asgi = MemoryASGI()
    transport = TwilioTransport("session-1", asgi.receive, asgi.send, **options)
    line = Line(asgi)
    line.start(language="de-DE", voiceId="voice-7")
    start = await transport.receive()
    assert isinstance(start, InputStart)
    assert start == InputStart(
        start.event_id, 8000, language="de-DE", voice_id="voice-7", turn_mode="auto"
    )
    assert transport.call_id == CALL
    return transport, asgi, line


async def framed() -> tuple[MediaStreamTransport, MemoryASGI, Line]:
    """The phone transport in 20 ms frames with a mark per chunk (what Telnyx gets),
    over Twilio's serializer."""
    asgi = MemoryASGI()
    transport = MediaStreamTransport("session-1", asgi.receive, asgi.send, TwilioSerializer())
    line = Line(asgi)
    line.start()
    assert isinstance(await transport.receive(), InputStart)
    return transport, asgi, line


def chunk(uid: str, ms: int, rate: int = 8000, value: int = 1000) -> e.OutputChunk:
    pcm = int(value).to_bytes(2, "little", signed=True) * (rate * ms // 1000)
    return e.OutputChunk(uid, pcm, rate)


async def test_transport_receive_maps_twilio_events() -> None:
    transport, asgi, line = await started()
    ulaw = bytes(range(160))
    line.media(ulaw)
    item = await transport.receive()
    assert isinstance(item, InputChunk) and item.audio == mulaw.decode(ulaw)
    asgi.feed(encode_inbound(TwilioDtmf(line.next(), STREAM, "#")))
    item = await transport.receive()
    assert isinstance(item, DtmfInput) and item.digit == "#"
    # Skipped, never returned to the session: garbage, a wrong stream, a non-key digit.
    asgi.feed("garbage")
    asgi.feed(encode_inbound(TwilioMedia(line.next(), STREAM, b"", 1, 0)).replace('""', '"\u00e9"'))
    line.media(stream="MZ" + "9" * 32)
    asgi.feed(encode_inbound(TwilioDtmf(line.next(), STREAM, "55")))
    line.media(b"\x00" * 160)
    item = await transport.receive()
    assert isinstance(item, InputChunk) and item.audio == mulaw.decode(b"\x00" * 160)
    assert transport.ignored == 4
    asgi.feed(encode_inbound(TwilioStop(line.next(), STREAM, "AC" + "3" * 32, CALL)))
    with pytest.raises(PeerGone):
        await transport.receive()
    assert transport.stopped


async def test_transport_disconnect_is_peer_gone() -> None:
    transport, asgi, _line = await started()
    asgi.tx.send_nowait({"type": "websocket.disconnect", "code": 1006})
    with pytest.raises(PeerGone):
        await transport.receive()
    with pytest.raises(PeerGone):
        await transport.send(chunk("u", 40))


async def test_transport_send_frames_audio_and_marks_each_chunk() -> None:
    transport, asgi, line = await framed()
    await transport.send(e.OutputStarted("u1", 0))
    assert asgi.take() == []
    await transport.send(chunk("u1", 40))
    out = asgi.take()
    assert [type(o) for o in out] == [OutboundMedia, OutboundMedia, OutboundMark]
    assert out[2] == OutboundMark(STREAM, "u1:1")
    assert all(len(o.payload) == 160 for o in out[:2])
    assert mulaw.decode(out[0].payload) == mulaw.decode(mulaw.encode(chunk("u1", 20).pcm))
    await transport.send(chunk("u1", 30))  # 10 ms stays in the carry
    assert [type(o) for o in asgi.take()] == [OutboundMedia, OutboundMark]
    not_for_the_phone: list[ServerEvent] = [
        e.TranscriptFinal("x", 1.0, 0, "en-US"),
        e.ResponseText("u1", "x"),
        e.TurnMetrics("u1"),
        e.ErrorEvent(ev.ERR_TTS, "x", "turn"),
    ]
    for event in not_for_the_phone:
        await transport.send(event)
    assert asgi.take() == []
    await transport.send(e.OutputComplete("u1"))
    last, final = asgi.take()
    assert isinstance(last, OutboundMedia) and final == OutboundMark(STREAM, "u1:end")
    pcm = mulaw.decode(last.payload)
    assert pcm[160:] == bytes(160)  # padded with silence after the carried 10 ms
    playback = transport.playback("u1")
    assert playback is not None and playback.sent_ms == 80
    # Marks come back as Twilio plays the audio (a finished answer is not reported to
    # the session: it was heard whole).
    for name, played in (("u1:1", 40), ("u1:2", 60), ("u1:end", 80)):
        line.mark(name)
        line.media()
        assert isinstance(await transport.receive(), InputChunk)
        assert transport.played_ms("u1") == played
    assert await transport.wait_finished("u1") is True


async def test_twilio_sends_each_chunk_whole_and_marks_every_mark_ms() -> None:
    """Twilio plays a payload of any length: one ``media`` message per answer chunk
    (no 20 ms cutting, no padding), and a mark per ``MARK_MS`` of audio, not per chunk."""
    transport, asgi, line = await started()
    assert twilio_ws.MARK_MS == 200
    await transport.send(chunk("u1", 40))
    out = asgi.take()
    assert [type(o) for o in out] == [OutboundMedia]  # 40 ms: no mark yet
    assert len(out[0].payload) == 320
    assert mulaw.decode(out[0].payload) == mulaw.decode(mulaw.encode(chunk("u1", 40).pcm))
    await transport.send(chunk("u1", 30))  # any length goes as it is
    assert [len(o.payload) for o in asgi.take() if isinstance(o, OutboundMedia)] == [240]
    for _ in range(3):
        await transport.send(chunk("u1", 40))
    sent = asgi.take()  # 190 ms so far: the mark waits for the next chunk
    assert [type(o) for o in sent] == [OutboundMedia] * 3
    await transport.send(chunk("u1", 40))
    assert [type(o) for o in asgi.take()] == [OutboundMedia, OutboundMark]
    await transport.send(chunk("u1", 25))
    await transport.send(e.OutputComplete("u1"))
    tail = asgi.take()
    assert tail[-1] == OutboundMark(STREAM, "u1:end") and len(tail) == 2
    assert isinstance(tail[0], OutboundMedia) and len(tail[0].payload) == 200  # unpadded
    playback = transport.playback("u1")
    assert playback is not None and playback.sent_ms == 255 and playback.marks == 1
    for name, played in (("u1:1", 230), ("u1:end", 255)):
        line.mark(name)
        line.media()
        assert isinstance(await transport.receive(), InputChunk)
        assert transport.played_ms("u1") == played
    assert await transport.wait_finished("u1") is True


async def test_twilio_cut_answer_reports_the_audio_before_its_last_echoed_mark() -> None:
    """With a mark per 200 ms, a cut answer's played audio is what its echoed marks
    cover: it errs low by less than one mark interval, never high."""
    transport, asgi, line = await started()
    for _ in range(10):  # 400 ms: marks after 200 and 400 ms
        await transport.send(chunk("u7", 40))
    assert [o.name for o in asgi.take() if isinstance(o, OutboundMark)] == ["u7:1", "u7:2"]
    line.mark("u7:1")
    line.media()
    assert isinstance(await transport.receive(), InputChunk)
    await transport.send(e.OutputCancelled("u7", "barge_in"))
    assert asgi.take() == [OutboundClear(STREAM)]
    line.mark("u7:2")  # returned by the clear: not played
    assert await transport.receive() == PlaybackProgress("u7", 200)


async def test_transport_cancel_sends_clear_and_drops_late_audio() -> None:
    transport, asgi, line = await framed()
    await transport.send(chunk("u2", 40))
    await transport.send(chunk("u2", 40))
    asgi.take()
    line.mark("u2:1")  # played before the barge-in
    line.media()
    assert isinstance(await transport.receive(), InputChunk)
    await transport.send(e.OutputCancelled("u2", "barge_in"))
    assert asgi.take() == [OutboundClear(STREAM)]
    await transport.send(chunk("u2", 40))
    await transport.send(e.OutputComplete("u2"))
    assert asgi.take() == []  # nothing of a cancelled answer follows the clear
    line.mark("u2:2")  # Twilio returns the pending mark: dropped, not played
    # With every mark back, what was played is final and reported to the session.
    assert await transport.receive() == PlaybackProgress("u2", 40)
    assert transport.played_ms("u2") == 40
    assert await transport.wait_finished("u2") is False
    # The next answer starts clean.
    await transport.send(chunk("u3", 20))
    assert [type(o) for o in asgi.take()] == [OutboundMedia, OutboundMark]


async def test_transport_reports_a_cut_answer_whose_marks_were_all_back() -> None:
    """Cut just as its last chunk played: no mark is pending, so the clear returns none;
    what was played is reported at once."""
    transport, asgi, line = await framed()
    await transport.send(chunk("u5", 40))
    asgi.take()
    line.mark("u5:1")
    line.media()
    assert isinstance(await transport.receive(), InputChunk)
    await transport.send(e.OutputCancelled("u5", "barge_in"))
    assert await transport.receive() == PlaybackProgress("u5", 40)


async def test_transport_resamples_other_rates_to_8k() -> None:
    transport, asgi, _line = await framed()
    for _ in range(5):
        await transport.send(chunk("u4", 40, rate=16_000))
    await transport.send(e.OutputComplete("u4"))
    media = [o for o in asgi.take() if isinstance(o, OutboundMedia)]
    assert all(len(m.payload) == 160 for m in media)
    assert len(media) == 10  # 200 ms at 8 kHz, whatever the source rate


async def test_transport_drops_audio_before_start() -> None:
    asgi = MemoryASGI()
    transport = TwilioTransport("session-2", asgi.receive, asgi.send)
    await transport.send(e.SessionReady())
    await transport.send(chunk("u", 40))
    assert asgi.sent == []


# --- the fake caller's own contract -------------------------------------------------------


async def test_fake_caller_plays_in_real_time_and_honours_clear() -> None:
    """What the barge-in path relies on: marks echo after playback; clear drops and returns."""
    cfg = FakeTwilioConfig(speed=1.0)
    echoed: list[tuple[str, float]] = []

    async def server(request: WebSocketRequest) -> None:
        ws = await request.accept()
        assert json.loads(await ws.get_message())["event"] == "connected"
        assert json.loads(await ws.get_message())["event"] == "start"
        tone = mulaw.encode(speech_like(0.02, 8000, seed=1))
        t0 = trio.current_time()
        for count, name in ((10, "a"), (50, "b"), (0, "c")):
            for _ in range(count):
                await ws.send_message(media_message(cfg.stream_sid, tone))
            await ws.send_message(mark_message(cfg.stream_sid, name))
        while len(echoed) < 3:
            msg = json.loads(await ws.get_message())
            if msg["event"] == "mark":
                echoed.append((msg["mark"]["name"], trio.current_time() - t0))
                if msg["mark"]["name"] == "a":
                    await ws.send_message(clear_message(cfg.stream_sid))
        await ws.aclose()

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(serve_websocket, server, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{listener.port}/twilio/stream"
        async with dial_fake_twilio(url, cfg) as call:
            with trio.fail_after(3):
                await call.wait_until(lambda: call.closed)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in echoed] == ["a", "b", "c"]
    assert 0.18 <= echoed[0][1] < 0.4  # 200 ms of audio played before "a" came back
    assert echoed[2][1] - echoed[0][1] < 0.1  # the cleared marks return at once
    assert call.marks_echoed == ["a"] and call.marks_cleared == ["b", "c"] and call.clears == 1
    assert call.heard_seconds < 0.35  # the cleared second of audio was never played
    assert len(call.received) == 2 * 60 * 160
    assert call.segments[0].mark == "a" and call.segments[0].seconds == pytest.approx(0.2)


async def test_transport_ends_a_call_whose_start_is_unusable() -> None:
    asgi = MemoryASGI()
    transport = TwilioTransport("session-3", asgi.receive, asgi.send)
    start = TwilioStart(
        1, STREAM, "AC" + "3" * 32, CALL, media_format=MediaFormat(sample_rate=16000)
    )
    asgi.feed(encode_inbound(start))
    with pytest.raises(PeerGone):
        await transport.receive()


async def test_barge_in_on_a_phone_call_sends_clear_and_stops_playback() -> None:
    story = " ".join(f"Part {i} of a long answer." for i in range(15))
    long_oa = attrs.evolve(OA, responder=lambda _messages: story)
    dg = FakeDeepgramConfig(
        script=("tell me a story", "no wait stop"), final_latency=0.02, interim_latency=0.01
    )
    async with open_stack(deepgram=dg, openai=long_oa, cartesia=FAST_CA) as stack:
        async with place_call(stack.url, FakeTwilioConfig()) as call:
            await call.say(utterance())
            with trio.fail_after(10):
                await call.wait_until(lambda: call.heard_seconds > 1.0)
            await call.say(speech_like(1.5, 8000) + silence(0.6, 8000))
            with trio.fail_after(10):
                await call.wait_until(lambda: call.clears >= 1)
            uid = stack.cartesia.cancels[0] if stack.cartesia.cancels else None
            assert uid is not None  # the TTS context was cancelled at the provider
            heard = call.heard_seconds_for(uid + ":")
            assert 0.5 < heard < stack.cartesia.audio_seconds.get(uid, 99)
            # The interruption is answered, and the LLM history holds the heard part only.
            with trio.fail_after(10):
                await call.wait_until(lambda: len(stack.openai.requests) >= 2)
            history = stack.openai.requests[-1]["messages"]
            assert history[-1]["content"] == "no wait stop"
            assert 0 < len(history[-2]["content"]) < len(story)
        await wait_idle(stack)


async def test_history_after_a_phone_barge_in_follows_the_marks_not_the_clock() -> None:
    """The line plays answer audio 2 s after it arrives (jitter buffer, network), so the
    server's clock believes 2 s more was heard than Twilio's marks confirm. The LLM's
    history must hold what the marks say was played."""
    story = " ".join(f"Part {i} of a long answer." for i in range(15))
    long_oa = attrs.evolve(OA, responder=lambda _messages: story)
    dg = FakeDeepgramConfig(
        script=("tell me a story", "no wait stop"), final_latency=0.02, interim_latency=0.01
    )
    async with open_stack(deepgram=dg, openai=long_oa, cartesia=FAST_CA) as stack:
        cfg = FakeTwilioConfig(playout_delay=2.0)
        async with place_call(stack.url, cfg) as call:
            await call.say(utterance())
            with trio.fail_after(10):
                await call.wait_until(lambda: call.heard_seconds > 2.0)
            await call.say(speech_like(1.5, 8000) + silence(0.6, 8000))
            with trio.fail_after(10):
                await call.wait_until(lambda: len(stack.openai.requests) >= 2)
            (uid,) = stack.cartesia.cancels[:1]
            played = call.heard_seconds_for(uid + ":")
            history = stack.openai.requests[-1]["messages"]
            assert history[-1]["content"] == "no wait stop"
            heard_text = str(history[-2]["content"])
            assert story.startswith(heard_text) and heard_text
            # Word timestamps cut at a word boundary at or before what was played.
            assert played - 0.8 <= expected_duration(heard_text) <= played + 0.1
        await wait_idle(stack)
