"""Deepgram STT: the sans-I/O codec, and the actor against the protocol-faithful fake."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import ConnectionRejected, open_websocket_url

from vantum.errors import STTError
from vantum.providers import deepgram_messages as dm
from vantum.providers.base import (
    Finalize,
    FinalizeDone,
    SpeechStarted,
    STTEvent,
    STTInput,
    TranscriptEvent,
    UtteranceEnd,
)
from vantum.providers.reporting import reporting_to
from vantum.providers.stt_deepgram import DeepgramSTT
from vantum.testing.audio_fixtures import chunks, rms_dbfs, silence, speech_like
from vantum.testing.change import ChangeSignal
from vantum.testing.fake_deepgram import FakeDeepgram, FakeDeepgramConfig, serve_fake_deepgram


def fast(*script: str, **options: Any) -> FakeDeepgramConfig:
    """A fake config with short latencies (the tests do not wait on real-time pacing)."""
    words = script or ("hello world",)
    return FakeDeepgramConfig(script=words, final_latency=0.02, interim_latency=0.01, **options)


# ------------------------------------------------------------------ codec


def test_listen_url_carries_every_parameter() -> None:
    url = dm.listen_url("wss://api.deepgram.com/v1/listen?tag=x", dm.ListenOptions(language="fr"))
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert parts.path == "/v1/listen"
    assert query == {
        "tag": "x",
        "model": "nova-3",
        "encoding": "linear16",
        "sample_rate": "16000",
        "channels": "1",
        "language": "fr",
        "interim_results": "true",
        "punctuate": "true",
        "smart_format": "true",
        "endpointing": "300",
        "utterance_end_ms": "1000",
        "vad_events": "true",
    }
    assert dm.auth_headers("k") == [(b"Authorization", b"Token k")]


def test_parse_results_as_deepgram_sends_it() -> None:
    raw = json.dumps(
        {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": 1.5,
            "start": 2.25,
            "is_final": True,
            "speech_final": True,
            "from_finalize": False,
            "channel": {
                "alternatives": [
                    {
                        "transcript": "Hi there.",
                        "confidence": 0.91,
                        "words": [
                            {"word": "hi", "start": 2.3, "end": 2.5, "confidence": 0.9},
                            {"word": "there", "start": 2.6, "end": 3.0, "confidence": 0.92},
                        ],
                    }
                ]
            },
            "metadata": {"request_id": "r", "model_uuid": "u", "model_info": {}},
        }
    )
    event = dm.parse_server_message(raw, language="en-GB")
    assert event == TranscriptEvent(
        text="Hi there.",
        is_final=True,
        speech_final=True,
        confidence=0.91,
        start=2.25,
        duration=1.5,
        language="en-GB",
    )


def test_parse_other_messages() -> None:
    assert dm.parse_server_message(json.dumps(dm.speech_started_message(1.25))) == SpeechStarted(
        1.25
    )
    assert dm.parse_server_message(json.dumps(dm.utterance_end_message(3.5))) == UtteranceEnd(3.5)
    meta = dm.metadata_message(
        request_id="r", duration=4.0, created="c", sha256="s", model_uuid="u"
    )
    assert dm.parse_server_message(json.dumps(meta)) == dm.StreamMetadata("r", 4.0)
    assert dm.parse_server_message('{"type": "Warning"}') == dm.UnknownMessage("Warning")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"no": "type"}',
        '{"type": "Results"}',
        '{"type": "SpeechStarted", "timestamp": "x"}',
    ],
)
def test_malformed_messages_raise(raw: str) -> None:
    with pytest.raises(dm.MalformedMessage):
        dm.parse_server_message(raw)


def test_controls_and_query_validation() -> None:
    assert [dm.parse_control(m) for m in (dm.KEEPALIVE, dm.FINALIZE, dm.CLOSE_STREAM)] == [
        "KeepAlive",
        "Finalize",
        "CloseStream",
    ]
    with pytest.raises(ValueError):
        dm.parse_control('{"type": "Shout"}')
    with pytest.raises(ValueError, match="sample_rate"):
        dm.parse_listen_query({"encoding": "linear16"})
    with pytest.raises(ValueError, match="interim_results"):
        dm.parse_listen_query(
            {"encoding": "linear16", "sample_rate": "16000", "utterance_end_ms": "1000"}
        )


_times = st.floats(min_value=0, max_value=1e5, allow_nan=False, allow_infinity=False)
_words = st.builds(
    dm.Word,
    word=st.text(st.characters(categories=["L"]), min_size=1, max_size=12),
    punctuated_word=st.text(min_size=1, max_size=12).filter(lambda s: s.strip() == s),
    start=_times,
    end=_times,
    confidence=st.floats(min_value=0, max_value=1),
)


@given(
    words=st.lists(_words, max_size=8),
    start=_times,
    duration=_times,
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
)
def test_results_round_trip(
    words: list[dm.Word], start: float, duration: float, flags: tuple[bool, bool, bool, bool]
) -> None:
    is_final, speech_final, from_finalize, punctuated = flags
    message = dm.results_message(
        words,
        start=start,
        duration=duration,
        is_final=is_final,
        speech_final=speech_final,
        from_finalize=from_finalize,
        punctuated=punctuated,
    )
    event = dm.parse_server_message(dm.encode(message))
    assert isinstance(event, TranscriptEvent)
    texts = [w.punctuated_word if punctuated else w.word for w in words]
    assert event.text == " ".join(texts)
    assert (event.is_final, event.speech_final, event.from_finalize) == flags[:3]
    assert (event.start, event.duration) == (start, duration)
    assert event.confidence == min((w.confidence for w in words), default=0.0)


@given(
    options=st.builds(
        dm.ListenOptions,
        model=st.sampled_from(["nova-3", "nova-2-phonecall"]),
        language=st.sampled_from(["en-US", "fr", "multi"]),
        sample_rate=st.sampled_from([8000, 16000, 48000]),
        interim_results=st.just(True),
        endpointing_ms=st.none() | st.integers(0, 5000),
        utterance_end_ms=st.none() | st.integers(1000, 5000),
    )
)
def test_listen_query_round_trip(options: dm.ListenOptions) -> None:
    url = dm.listen_url("ws://h/v1/listen", options)
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert dm.parse_listen_query(params) == options


def test_audio_fixture_levels() -> None:
    assert -10.5 < rms_dbfs(speech_like(0.5, seed=3)) < -9.5
    assert rms_dbfs(silence(0.5)) == float("-inf")
    assert rms_dbfs(silence(0.5, level_dbfs=-70)) < -65
    assert speech_like(0.3, seed=1) == speech_like(0.3, seed=1)


# ------------------------------------------------------------------ actor vs fake


class Recorder:
    """Collects events and lets a feeder wait for one (real synchronisation)."""

    def __init__(self) -> None:
        self.items: list[STTEvent] = []
        self._changed = ChangeSignal()

    def add(self, event: STTEvent) -> None:
        self.items.append(event)
        self._changed.notify()

    async def wait_for(self, predicate: Callable[[STTEvent], bool]) -> None:
        await self._changed.wait_until(lambda: any(predicate(e) for e in self.items))

    def finals(self) -> list[TranscriptEvent]:
        return [e for e in self.items if isinstance(e, TranscriptEvent) and e.is_final and e.text]


Feeder = Callable[[trio.MemorySendChannel[STTInput], Recorder], Awaitable[None]]


async def run_stt(stt: DeepgramSTT, feeder: Feeder) -> Recorder:
    """Run the actor until it closes its events channel; the feeder closes the audio."""
    audio_in, audio_out = trio.open_memory_channel[STTInput](16)
    events_in, events_out = trio.open_memory_channel[STTEvent](16)
    recorder = Recorder()

    async def feed() -> None:
        async with audio_in:
            await feeder(audio_in, recorder)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stt.run, audio_out, events_in)
        nursery.start_soon(feed)
        async for event in events_out:
            recorder.add(event)
    return recorder


def send_all(*pieces: bytes | Finalize) -> Feeder:
    async def feeder(audio: trio.MemorySendChannel[STTInput], _: Recorder) -> None:
        for piece in pieces:
            if isinstance(piece, Finalize):
                await audio.send(piece)
            else:
                for chunk in chunks(piece):
                    await audio.send(chunk)

    return feeder


def client(fake: FakeDeepgram, **options: Any) -> DeepgramSTT:
    return DeepgramSTT(fake.api_key, fake.url, reconnect_backoff=0.01, **options)


async def test_interim_then_final_for_one_utterance() -> None:
    config = fast("Hello big world.")
    async with serve_fake_deepgram(config) as fake:
        got = await run_stt(client(fake), send_all(speech_like(1.0, seed=1), silence(1.4)))
    transcripts = [e for e in got.items if isinstance(e, TranscriptEvent)]
    interims = [e.text for e in transcripts if not e.is_final]
    assert interims == ["Hello", "Hello big", "Hello big world."]
    final = transcripts[-1]
    assert (final.text, final.is_final, final.speech_final) == ("Hello big world.", True, True)
    assert final.start == 0.0 and final.duration == pytest.approx(1.3)
    assert isinstance(got.items[0], SpeechStarted) and got.items[0].timestamp == 0.0
    assert isinstance(got.items[-1], UtteranceEnd) and 0.9 < got.items[-1].last_word_end <= 1.0
    assert fake.query_params[0]["language"] == "en-US"
    assert fake.messages["CloseStream"] == 1 and fake.close_codes == [1000]


async def test_finalize_flushes_pending_speech_once() -> None:
    config = fast("Turn over.")
    async with serve_fake_deepgram(config) as fake:
        got = await run_stt(client(fake), send_all(speech_like(0.8, seed=2), Finalize()))
    kinds = [type(e).__name__ for e in got.items]
    assert kinds.count("FinalizeDone") == 1
    done = kinds.index("FinalizeDone")
    flushed = got.items[done - 1]
    assert isinstance(flushed, TranscriptEvent)
    assert (flushed.text, flushed.is_final, flushed.from_finalize) == ("Turn over.", True, True)
    assert fake.messages["Finalize"] == 1


async def test_finalize_done_after_timeout_when_server_stays_silent() -> None:
    config = fast("Anyone there?", ignore_finalize=True)
    async with serve_fake_deepgram(config) as fake:

        async def feeder(audio: trio.MemorySendChannel[STTInput], got: Recorder) -> None:
            await send_all(speech_like(0.6, seed=4), Finalize())(audio, got)
            started = trio.current_time()
            await got.wait_for(lambda e: isinstance(e, FinalizeDone))
            assert trio.current_time() - started >= 0.2

        got = await run_stt(client(fake, finalize_timeout=0.25), feeder)
    assert [e for e in got.items if isinstance(e, FinalizeDone)] == [FinalizeDone(unanswered=True)]
    assert [f.text for f in got.finals()] == ["Anyone there?"]  # flushed by CloseStream


async def _speak_pause_speak(
    audio: trio.MemorySendChannel[STTInput], got: Recorder, pause: float = 0.7
) -> None:
    await send_all(speech_like(0.6, seed=5), silence(0.4))(audio, got)
    await got.wait_for(lambda e: isinstance(e, TranscriptEvent) and e.is_final)
    await trio.sleep(pause)  # the idle period under test: no audio flows
    await send_all(speech_like(0.6, seed=6), silence(0.4))(audio, got)


async def test_keepalive_keeps_idle_stream_open() -> None:
    # Real time against a real socket: the idle window leaves 700 ms of slack over the
    # 100 ms keepalive, so a loaded CI machine does not close it (it did at 300 ms once,
    # with a soak and another suite on the same two cores).
    config = fast("One.", "Two.", idle_timeout=0.8)

    async def pause_longer_than_the_idle_window(
        audio: trio.MemorySendChannel[STTInput], got: Recorder
    ) -> None:
        await _speak_pause_speak(audio, got, pause=1.2)

    async with serve_fake_deepgram(config) as fake:
        got = await run_stt(client(fake, keepalive_interval=0.1), pause_longer_than_the_idle_window)
    assert fake.connections == 1 and fake.close_codes == [1000]
    assert fake.messages["KeepAlive"] >= 4
    assert [f.text for f in got.finals()] == ["One.", "Two."]


async def test_idle_timeout_without_keepalive_reconnects() -> None:
    config = fast("One.", "Two.", idle_timeout=0.3)
    async with serve_fake_deepgram(config) as fake:
        got = await run_stt(client(fake, keepalive_interval=5.0), _speak_pause_speak)
    # the pause outlives the new connection's idle window too: each close is recovered
    assert fake.close_codes[0] == 1011 and fake.close_codes[-1] == 1000
    assert fake.connections == len(fake.close_codes) >= 2
    finals = got.finals()
    assert [f.text for f in finals] == ["One.", "Two."]
    # stream time, not the new connection's: finals tile the stream and end where speech did
    assert finals[1].start == pytest.approx(finals[0].start + finals[0].duration)
    assert finals[1].start + finals[1].duration == pytest.approx(1.9)


async def test_drop_mid_utterance_replays_without_duplicates() -> None:
    config = fast("Hello world.", "How are you today?")
    first, gap = speech_like(1.0, seed=7), silence(0.6)
    second = speech_like(1.2, seed=8) + silence(0.6)
    async with serve_fake_deepgram(config) as fake:
        fake.drop_after(2.0)

        async def feeder(audio: trio.MemorySendChannel[STTInput], got: Recorder) -> None:
            split = round(0.3 * 32000)  # 1.9 s into the stream, mid second utterance
            await send_all(first, gap, second[:split])(audio, got)
            await got.wait_for(lambda e: isinstance(e, TranscriptEvent) and e.text == "How")
            await send_all(second[split:])(audio, got)  # the drop comes at 2.0 s

        got = await run_stt(client(fake), feeder)
    finals = got.finals()
    assert [f.text for f in finals] == ["Hello world.", "How are you today?"]
    assert fake.connections == 2 and fake.close_codes == [1006, 1000]
    assert finals[1].start == pytest.approx(finals[0].start + finals[0].duration)
    assert finals[1].start + finals[1].duration == pytest.approx(3.1)  # speech end + endpointing
    covered = round(1.3 * 32000)  # the first final covered 1.3 s: only the rest is re-sent
    total = len(first + gap + second)
    assert fake.audio_bytes == (2 * 32000 - 640) + (total - covered)
    assert sum(isinstance(e, SpeechStarted) for e in got.items) == 2


async def run_failing(stt: DeepgramSTT) -> tuple[STTError, Recorder]:
    """Run the actor on a stream that never gets going; return the error it raises."""
    events_in, events_out = trio.open_memory_channel[STTEvent](4)
    audio_in, audio_out = trio.open_memory_channel[STTInput](4)
    with pytest.raises(STTError) as info:
        await stt.run(audio_out, events_in)
    got = Recorder()
    with pytest.raises(trio.EndOfChannel):  # events closed even on failure
        got.add(events_out.receive_nowait())
    with pytest.raises(trio.BrokenResourceError):  # and the audio input released
        audio_in.send_nowait(b"\0\0")
    return info.value, got


async def test_bad_key_is_an_stt_error() -> None:
    async with serve_fake_deepgram() as fake:
        error, _ = await run_failing(DeepgramSTT("wrong", fake.url))
    assert "401" in str(error) and "key" in str(error)
    assert fake.rejected == [401] and fake.connections == 0


async def test_giving_up_still_answers_the_finalize_it_took() -> None:
    """The turn waiting on a Finalize must not hang when the engine dies holding it."""
    async with serve_fake_deepgram(fast()) as fake:
        fake.stall_after(0.2)  # the Finalize is taken, then never answered
        stt = client(fake, finalize_timeout=0.3, max_reconnects=1)
        events_in, events_out = trio.open_memory_channel[STTEvent](64)
        audio_in, audio_out = trio.open_memory_channel[STTInput](64)
        got: list[STTEvent] = []

        async def collect() -> None:
            async for event in events_out:
                got.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            with pytest.raises(BaseExceptionGroup) as caught:
                async with trio.open_nursery() as inner:
                    inner.start_soon(stt.run, audio_out, events_in)
                    await fake.wait_connections(1)
                    fake.refuse_for(30, 503)  # every reconnect fails from now on
                    for chunk in chunks(speech_like(0.5, seed=3)):
                        await audio_in.send(chunk)
                    await audio_in.send(Finalize())
        assert caught.group_contains(STTError, match="2 times in a row; last: handshake refused")
        assert sum(isinstance(e, FinalizeDone) for e in got) == 1
        assert fake.rejected == [503] and fake.injected["stall"] == 1


@pytest.mark.parametrize(("status", "kind"), [(401, "auth"), (400, "rejected"), (404, "rejected")])
async def test_refusals_that_no_retry_helps_are_counted(status: int, kind: str) -> None:
    class Sink:
        def __init__(self) -> None:
            self.seen: list[tuple[str, str]] = []

        def provider_error(self, provider: str, kind: str) -> None:
            self.seen.append((provider, kind))

    sink = Sink()
    async with serve_fake_deepgram() as fake:
        fake.reject_next(status)
        with reporting_to(sink):
            error, _ = await run_failing(client(fake))
    assert str(status) in str(error) and fake.rejected == [status]
    assert sink.seen == [("deepgram", kind)]


async def test_rate_limit_retries_then_fails() -> None:
    async with serve_fake_deepgram(fast()) as fake:
        fake.reject_next(429)
        got = await run_stt(client(fake), send_all(speech_like(0.5, seed=9), silence(0.4)))
        assert fake.rejected == [429] and [f.text for f in got.finals()] == ["hello world"]
        fake.reject_next(429, times=5)
        error, _ = await run_failing(client(fake, max_reconnects=2))
    assert "429" in str(error)
    assert fake.rejected == [429] * 4 and fake.connections == 1


async def test_close_stream_ends_cleanly() -> None:
    async with serve_fake_deepgram(fast("Bye now.")) as fake:
        with trio.fail_after(5):
            got = await run_stt(client(fake), send_all(speech_like(0.7, seed=10)))
    assert [f.text for f in got.finals()] == ["Bye now."]  # pending speech flushed at close
    assert fake.messages["CloseStream"] == 1
    assert fake.sent["Metadata"] == 1 and fake.close_codes == [1000]


async def test_fake_refuses_bad_handshakes() -> None:
    async with serve_fake_deepgram() as fake:
        headers = dm.auth_headers(fake.api_key)
        for url, status in [
            (fake.url + "?sample_rate=16000", 400),
            (
                fake.url.replace("/v1/listen", "/v2/other")
                + "?encoding=linear16&sample_rate=16000",
                404,
            ),
            (dm.listen_url(fake.url, dm.ListenOptions(sample_rate=8000)), 400),
        ]:
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(url, extra_headers=headers):
                    pass
            assert info.value.status_code == status
    assert fake.rejected == [400, 404, 400]
