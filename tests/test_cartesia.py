"""Cartesia TTS: wire codecs, the fake server, and the engine against the fake."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from trio_websocket import ConnectionRejected, open_websocket_url

from vantum.errors import TTSError
from vantum.providers import cartesia_messages as cm
from vantum.providers.base import TTSAudio, TTSEngine, TTSEvent, WordTimestamps
from vantum.providers.tts_cartesia import DEFAULT_VOICE_ID, CartesiaConnection, CartesiaTTS
from vantum.testing.fake_cartesia import (
    FakeCartesia,
    FakeCartesiaConfig,
    expected_duration,
    render_pcm,
    serve_fake_cartesia,
)

RATE = 24_000

# ------------------------------------------------------------------ codecs


def test_url_carries_key_and_version_and_keeps_other_params() -> None:
    url = cm.build_url("wss://h/tts/websocket?x=1&api_key=old", "k&y", "2025-04-16")
    assert url == "wss://h/tts/websocket?x=1&api_key=k%26y&cartesia_version=2025-04-16"
    assert cm.handshake_credentials(url.removeprefix("wss://h"), []) == ("k&y", "2025-04-16")


def test_credentials_from_headers_and_query_wins() -> None:
    headers = [(b"X-API-Key", b"hk"), (b"Cartesia-Version", b"2024-06-10")]
    assert cm.handshake_credentials("/tts/websocket", headers) == ("hk", "2024-06-10")
    assert cm.handshake_credentials("/tts/websocket?api_key=q", headers) == ("q", "2024-06-10")


def test_generation_request_shape() -> None:
    req = cm.GenerationRequest("c1", "Hi, ", "sonic-2", "v-1", continue_=True, add_timestamps=True)
    assert json.loads(cm.encode_request(req)) == {
        "model_id": "sonic-2",
        "transcript": "Hi, ",
        "voice": {"mode": "id", "id": "v-1"},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
        "language": "en",
        "context_id": "c1",
        "continue": True,
        "add_timestamps": True,
    }
    cancel = json.loads(cm.encode_request(cm.CancelRequest("c1")))
    assert cancel == {"context_id": "c1", "cancel": True}


def test_parses_documented_responses() -> None:
    chunk = json.dumps(
        {"type": "chunk", "data": "AAEC", "done": False, "status_code": 206, "step_time": 12}
        | {"context_id": "c"}
    )
    assert cm.parse_response(chunk) == cm.AudioChunk("c", b"\x00\x01\x02", 12.0)
    ts = {
        "type": "timestamps",
        "done": False,
        "status_code": 206,
        "context_id": "c",
        "word_timestamps": {"words": ["Hello", "world"], "start": [0, 0.5], "end": [0.4, 0.9]},
    }
    assert cm.parse_response(json.dumps(ts)) == cm.Timestamps(
        "c", ("Hello", "world"), (0.0, 0.5), (0.4, 0.9)
    )
    done = '{"type":"done","done":true,"status_code":200,"context_id":"c"}'
    assert cm.parse_response(done) == cm.Done("c")
    flush = '{"type":"flush_done","done":false,"flush_done":true,"flush_id":1,"context_id":"c"}'
    assert cm.parse_response(flush) == cm.FlushDone("c", 1)
    legacy = '{"type":"error","error":"bad voice","status_code":400,"done":true,"context_id":"c"}'
    assert cm.parse_response(legacy) == cm.ErrorResponse("c", "bad voice", 400)
    structured = {
        "type": "error",
        "done": True,
        "status_code": 429,
        "error_code": "concurrency_limited",
        "title": "Too many concurrent requests",
        "message": "You have exceeded your plan's concurrency limit.",
        "context_id": "c",
    }
    err = cm.parse_response(json.dumps(structured))
    assert isinstance(err, cm.ErrorResponse) and err.status_code == 429
    assert (
        err.describe()
        == "Too many concurrent requests: You have exceeded your plan's concurrency limit."
    )
    phonemes = '{"type":"phoneme_timestamps","context_id":"c","phoneme_timestamps":{}}'
    assert cm.parse_response(phonemes) == cm.OtherResponse("phoneme_timestamps", "c")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1]",
        '{"context_id":"c"}',
        '{"type":"chunk","data":"AAEC"}',
        '{"type":"chunk","data":"@@@","context_id":"c"}',
        '{"type":"timestamps","context_id":"c","word_timestamps":{"words":["a"],"start":[],"end":[]}}',
        '{"type":"error","status_code":"x","error":"e"}',
    ],
)
def test_malformed_responses_raise_message_error(text: str) -> None:
    with pytest.raises(cm.CartesiaMessageError):
        cm.parse_response(text)


@pytest.mark.parametrize(
    "obj",
    [
        {"transcript": "hi", "voice": {"mode": "id", "id": "v"}, "output_format": {}},
        {"model_id": "m", "voice": {"mode": "id", "id": "v"}, "output_format": {}},
        {"model_id": "m", "transcript": "t", "voice": {"mode": "id"}, "output_format": {}},
        {"cancel": True},
    ],
)
def test_malformed_requests_raise_message_error(obj: dict[str, object]) -> None:
    with pytest.raises(cm.CartesiaMessageError):
        cm.parse_request(json.dumps(obj))


_ids = st.text(min_size=1, max_size=20)
_floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
_responses = st.one_of(
    st.builds(cm.AudioChunk, _ids, st.binary(max_size=64), _floats),
    _ids.flatmap(
        lambda cid: st.integers(0, 5).flatmap(
            lambda n: st.builds(
                cm.Timestamps,
                st.just(cid),
                st.lists(st.text(), min_size=n, max_size=n).map(tuple),
                st.lists(_floats, min_size=n, max_size=n).map(tuple),
                st.lists(_floats, min_size=n, max_size=n).map(tuple),
            )
        )
    ),
    st.builds(cm.Done, _ids),
    st.builds(cm.FlushDone, _ids, st.integers(0, 2**31)),
    st.builds(
        cm.ErrorResponse,
        st.none() | _ids,
        st.text(),
        st.integers(100, 599),
        st.none() | st.text(min_size=1),
        st.none() | st.text(),
    ),
    st.builds(cm.OtherResponse, st.sampled_from(["phoneme_timestamps", "x"]), _ids),
)


@given(_responses)
def test_response_round_trip(response: cm.Response) -> None:
    assert cm.parse_response(cm.encode_response(response)) == response


@given(
    st.builds(
        cm.GenerationRequest,
        st.none() | _ids,
        st.text(),
        _ids,
        _ids,
        st.builds(cm.OutputFormat, st.just("raw"), st.just("pcm_s16le"), st.integers(8000, 48000)),
        st.none() | st.text(),
        st.booleans(),
        st.booleans(),
        st.none() | st.integers(0, 5000),
        st.booleans(),
    )
    | st.builds(cm.CancelRequest, _ids)
)
def test_request_round_trip(request: cm.Request) -> None:
    assert cm.parse_request(cm.encode_request(request)) == request


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
_keys = st.sampled_from(["type", "context_id", "data", "word_timestamps", "error", "message"])


@given(st.dictionaries(_keys, _json) | st.text())
def test_parsers_are_total(value: object) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    for parse in (cm.parse_response, cm.parse_request):
        with contextlib.suppress(cm.CartesiaMessageError):
            parse(text)


# -------------------------------------------------------------- fake audio


@given(st.lists(st.text(max_size=15), max_size=5))
def test_expected_duration_is_additive_and_matches_rendered_audio(parts: list[str]) -> None:
    whole = "".join(parts)
    assert expected_duration(whole) == pytest.approx(sum(map(expected_duration, parts)))
    assert len(render_pcm(whole, 16_000)) == round(expected_duration(whole) * 16_000) * 2


def test_rendered_audio_is_voiced_words_and_silent_gaps() -> None:
    pcm = render_pcm("ab cd", RATE)
    per_char = round(0.06 * RATE) * 2
    word, gap = pcm[: 2 * per_char], pcm[2 * per_char : 3 * per_char]
    assert gap == bytes(len(gap)) and max(word[1::2]) > 0x10
    assert render_pcm("ab", RATE) != render_pcm("cd", RATE)  # pitch differs per word


# ------------------------------------------------------- engine against fake


async def speak(
    conn: CartesiaConnection,
    context_id: str,
    texts: Sequence[str],
    *,
    stream_after_first_audio: bool = False,
    voice_id: str | None = None,
) -> list[TTSEvent]:
    """Run one context; optionally hold back later texts until audio has arrived."""
    text_tx, text_rx = trio.open_memory_channel[str](8)
    out_tx, out_rx = trio.open_memory_channel[TTSEvent](64)
    events: list[TTSEvent] = []
    first_audio = trio.Event()

    async def feed() -> None:
        async with text_tx:
            for i, text in enumerate(texts):
                if i == 1 and stream_after_first_audio:
                    await first_audio.wait()
                await text_tx.send(text)

    async def collect() -> None:
        async for event in out_rx:
            events.append(event)
            if isinstance(event, TTSAudio):
                first_audio.set()

    error: TTSError | None = None
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            nursery.start_soon(collect)
            async with out_tx:
                try:
                    await conn.synthesize(context_id, text_rx, out_tx, voice_id=voice_id)
                except TTSError as exc:
                    error = exc  # raised below, outside the nursery, unwrapped
                    nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    return events


def pcm_of(events: Sequence[TTSEvent]) -> bytes:
    return b"".join(e.pcm for e in events if isinstance(e, TTSAudio))


def words_of(events: Sequence[TTSEvent]) -> list[str]:
    return [w for e in events if isinstance(e, WordTimestamps) for w in e.words]


async def test_streamed_context_plays_all_text_in_order_with_timestamps() -> None:
    texts = ["Hello there, ", "this is a streamed answer. ", "Goodbye."]
    async with (
        serve_fake_cartesia() as fake,
        CartesiaTTS(fake.api_key, fake.url).connect() as conn,
    ):
        events = await speak(conn, "ctx-1", texts, stream_after_first_audio=True)
    full = "".join(texts)
    pcm = pcm_of(events)
    assert len(pcm) / 2 / RATE == pytest.approx(expected_duration(full), abs=1e-3)
    assert pcm == render_pcm(full, RATE)  # every chunk, in order
    assert words_of(events) == full.split()
    starts = [s for e in events if isinstance(e, WordTimestamps) for s in e.start]
    assert starts == sorted(starts)
    sent = fake.requests["ctx-1"]
    assert [r.transcript for r in sent] == [*texts, ""]
    assert [r.continue_ for r in sent] == [True, True, True, False]
    assert all(r.add_timestamps and r.output_format.sample_rate == RATE for r in sent)
    assert all(r.max_buffer_delay_ms == 0 and r.voice_id == DEFAULT_VOICE_ID for r in sent)
    assert fake.completed == ["ctx-1"]


async def test_chunks_are_joined_like_words() -> None:
    async with (
        serve_fake_cartesia() as fake,
        CartesiaTTS(fake.api_key, fake.url, sample_rate=16_000).connect() as conn,
    ):
        events = await speak(conn, "c", ["First sentence.", "Second one."], voice_id="v2")
    assert [r.transcript for r in fake.requests["c"]] == ["First sentence.", " Second one.", ""]
    assert pcm_of(events) == render_pcm("First sentence. Second one.", 16_000)
    assert {r.voice_id for r in fake.requests["c"]} == {"v2"}


def test_engine_satisfies_the_tts_protocol() -> None:
    engine: TTSEngine = CartesiaTTS("key", sample_rate=16_000)  # checked by mypy
    assert engine.name == "cartesia" and engine.sample_rate == 16_000


async def test_token_stream_with_managed_buffering_waits_for_whole_words() -> None:
    texts = ["Hello wor", "ld, how a", "re you?"]
    async with (
        serve_fake_cartesia() as fake,
        CartesiaTTS(
            fake.api_key, fake.url, max_buffer_delay_ms=None, phrase_chunks=False
        ).connect() as conn,
    ):
        events = await speak(conn, "c", texts, stream_after_first_audio=True)
    assert fake.requests["c"][0].max_buffer_delay_ms is None
    assert pcm_of(events) == render_pcm("Hello world, how are you?", RATE)  # no split words
    assert words_of(events) == ["Hello", "world,", "how", "are", "you?"]


async def test_first_audio_latency_and_faster_than_real_time(autojump_clock: object) -> None:
    config = FakeCartesiaConfig(first_chunk_latency=0.12, realtime_factor=5.0)
    text = "A sentence of exactly forty characters.."
    async with (
        serve_fake_cartesia(config) as fake,
        CartesiaTTS(fake.api_key, fake.url).connect() as conn,
    ):
        start = trio.current_time()
        events = await speak(conn, "c", [text])
        elapsed = trio.current_time() - start
    assert len(text) == 40 and pcm_of(events)
    audio = expected_duration(text)  # 2.4 s of audio
    assert 0.12 + audio / 5.0 - 0.05 <= elapsed <= 0.12 + audio / 5.0 + 0.05


async def test_sequential_and_concurrent_contexts_share_one_connection() -> None:
    async with (
        serve_fake_cartesia() as fake,
        CartesiaTTS(fake.api_key, fake.url).connect() as conn,
    ):
        first = await speak(conn, "a", ["One answer."])
        second = await speak(conn, "b", ["Another answer."])
        results: dict[str, list[TTSEvent]] = {}

        async def run(cid: str, text: str) -> None:
            results[cid] = await speak(conn, cid, [text])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "c", "Third, at the same time.")
            nursery.start_soon(run, "d", "Fourth voice overlapping.")
    assert fake.connections == 1
    assert pcm_of(first) == render_pcm("One answer.", RATE)
    assert pcm_of(second) == render_pcm("Another answer.", RATE)
    assert pcm_of(results["c"]) == render_pcm("Third, at the same time.", RATE)
    assert pcm_of(results["d"]) == render_pcm("Fourth voice overlapping.", RATE)
    assert sorted(fake.completed) == ["a", "b", "c", "d"]


async def test_cancel_mid_stream_tells_provider_and_drops_the_rest() -> None:
    long_text = "This answer is long enough to be interrupted by the caller. " * 4
    async with (
        serve_fake_cartesia(FakeCartesiaConfig(realtime_factor=2.0)) as fake,
        CartesiaTTS(fake.api_key, fake.url).connect() as conn,
    ):
        text_tx, text_rx = trio.open_memory_channel[str](8)
        out_tx, out_rx = trio.open_memory_channel[TTSEvent](64)
        await text_tx.send(long_text)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.synthesize, "barged", text_rx, out_tx)
                event = await out_rx.receive()  # audio is flowing: barge in
                assert isinstance(event, TTSAudio)
                scope.cancel()
        assert scope.cancelled_caught
        # Messages on one socket stay in order: once a later context is done,
        # the fake has handled the cancel and nothing more of "barged" leaks in.
        after = await speak(conn, "next", ["Sure."])
    assert fake.cancels == ["barged"]
    assert "barged" not in fake.completed and fake.completed == ["next"]
    assert fake.audio_seconds["barged"] < expected_duration(long_text) / 2
    assert pcm_of(after) == render_pcm("Sure.", RATE)


async def test_provider_error_raises_and_connection_stays_usable() -> None:
    async with serve_fake_cartesia() as fake:
        fake.fail_next_context("voice not found", status_code=404)
        async with CartesiaTTS(fake.api_key, fake.url).connect() as conn:
            with pytest.raises(TTSError, match="voice not found"):
                await speak(conn, "bad", ["Hello. ", "More text."])
            events = await speak(conn, "good", ["Hello."])
    assert pcm_of(events) == render_pcm("Hello.", RATE)
    assert fake.connections == 1 and fake.completed == ["good"]


async def test_structured_errors_of_newer_api_versions() -> None:
    async with serve_fake_cartesia() as fake:
        fake.fail_next_context("quota exceeded", status_code=429)
        tts = CartesiaTTS(fake.api_key, fake.url, version="2026-03-01")
        async with tts.connect() as conn:
            with pytest.raises(TTSError, match=r"^Too Many Requests: quota exceeded$"):
                await speak(conn, "x", ["Hi."])
    assert fake.errors_sent[0].error_code == "http_429"


@pytest.mark.parametrize("how", ["bad key", "reject 401"])
async def test_refused_handshake_raises_tts_error(how: str) -> None:
    async with serve_fake_cartesia() as fake:
        key = "wrong" if how == "bad key" else fake.api_key
        if how == "reject 401":
            fake.reject_next(401)
        with pytest.raises(TTSError, match="401"):
            async with CartesiaTTS(key, fake.url).connect():
                pass
    assert fake.rejected == [401] and fake.connections == 0


async def test_unreachable_server_raises_tts_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    port = listener.getsockname()[1]
    with pytest.raises(TTSError, match="cannot connect"):
        async with CartesiaTTS("k", f"ws://127.0.0.1:{port}/tts/websocket").connect():
            pass
    listener.close()


async def test_dropped_connection_fails_context_then_reconnects_lazily() -> None:
    async with serve_fake_cartesia() as fake:
        fake.drop_next_connection_after(chunks=2)
        async with CartesiaTTS(fake.api_key, fake.url).connect() as conn:
            with pytest.raises(TTSError, match="lost"):
                await speak(conn, "dropped", ["A sentence long enough for several chunks."])
            events = await speak(conn, "again", ["Back again."])
            assert conn.connects == 2
    assert pcm_of(events) == render_pcm("Back again.", RATE)
    assert fake.connections == 2 and fake.completed == ["again"]


async def test_empty_answer_sends_nothing() -> None:
    async with (
        serve_fake_cartesia() as fake,
        CartesiaTTS(fake.api_key, fake.url).connect() as conn,
    ):
        assert await speak(conn, "silent", ["", ""]) == []
    assert fake.requests == {}


# ------------------------------------------------------- fake on the raw wire


async def raw_exchange(fake: FakeCartesia, *messages: str, errors: int) -> list[dict[str, object]]:
    """Send raw frames with header auth; collect replies up to ``errors`` errors and a done."""
    headers = [(b"X-API-Key", fake.api_key.encode()), (b"Cartesia-Version", b"2025-04-16")]
    replies: list[dict[str, object]] = []
    with trio.fail_after(5):
        async with open_websocket_url(fake.url, extra_headers=headers) as ws:
            for message in messages:
                await ws.send_message(message)
            while sum(r["type"] == "error" for r in replies) < errors or (
                replies[-1]["type"] != "done"
            ):
                replies.append(json.loads(await ws.get_message()))
    return replies


def request(context_id: str, transcript: str, more: bool, **changes: object) -> str:
    obj = json.loads(
        cm.encode_request(
            cm.GenerationRequest(context_id, transcript, "sonic-2", "v", continue_=more)
        )
    )
    return json.dumps(obj | changes)


async def test_fake_reports_bad_messages_and_keeps_the_connection() -> None:
    async with serve_fake_cartesia() as fake:
        replies = await raw_exchange(
            fake,
            "{not json",
            json.dumps({"context_id": "c", "transcript": "hi"}),
            request("e", "", more=False),
            request("s", "Hi ", more=True),
            request("s", "there.", more=False, model_id="other"),
            request("s", "there.", more=False),
            errors=4,
        )
    errors = [r for r in replies if r["type"] == "error"]
    assert {r["type"] for r in replies} == {"error", "chunk", "done"}
    assert [e.get("context_id") for e in errors] == [None, None, "e", "s"]
    assert all(e["status_code"] == 400 and e["done"] is True for e in errors)
    assert replies[-1] == {"type": "done", "done": True, "status_code": 200, "context_id": "s"}
    assert fake.completed == ["s"]


async def test_fake_requires_version_and_right_path() -> None:
    async with serve_fake_cartesia() as fake:
        for url in (f"{fake.url}?api_key={fake.api_key}", fake.url.replace("/tts/", "/x/")):
            with pytest.raises(ConnectionRejected):
                async with open_websocket_url(url):
                    pass
    assert fake.rejected == [400, 404]


def test_cartesia_language_is_the_primary_subtag_it_speaks() -> None:
    from vantum.providers.tts_cartesia import cartesia_language

    assert cartesia_language("es-ES", "en") == "es"
    assert cartesia_language("PT-br", "en") == "pt"
    assert cartesia_language("xx-YY", "en") == "en"  # not one Cartesia speaks
    assert cartesia_language(None, "de") == "de"
