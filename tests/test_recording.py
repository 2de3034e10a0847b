"""Call recording: the stereo timeline (pure), the incremental WAV, and a real call
with a barge-in recorded and served over the calls API with HTTP ranges (issue 16)."""

from __future__ import annotations

import struct
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import hypothesis.strategies as st
import numpy as np
import pytest
import trio
from e2e_helpers import FAST_CA
from hypothesis import given

from vantum.protocol import events as ev
from vantum.recording.timeline import StereoTimeline
from vantum.recording.upload import RecordingUploader, S3Target, UploadReport
from vantum.recording.wavfile import HEADER_BYTES, WavAppender, repair
from vantum.records import open_store
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.stack import open_stack

RATE = 8000
KEY = "recording-test-key-0123"


def tone(seconds: float, value: int = 1000) -> bytes:
    return np.full(round(seconds * RATE), value, dtype="<i2").tobytes()


def channels(stereo: bytes) -> tuple[np.ndarray, np.ndarray]:
    frames = np.frombuffer(stereo, dtype="<i2").reshape(-1, 2)
    return frames[:, 0], frames[:, 1]


# --- the timeline (pure) ----------------------------------------------------------------


@given(st.lists(st.integers(1, 400), min_size=1, max_size=30))
def test_caller_audio_in_real_time_lands_where_it_was_said(sizes: list[int]) -> None:
    """However the caller's audio is chunked, it is placed at its own time."""
    samples = np.arange(1, sum(sizes) + 1, dtype="<i2")
    timeline = StereoTimeline(RATE)
    out = b""
    pos = 0
    for n in sizes:
        pos += n
        timeline.caller(samples[pos - n : pos].tobytes(), at=pos / RATE)
        out += timeline.take(pos / RATE)
    out += timeline.finish(pos / RATE)
    left, right = channels(out)
    assert left.tolist() == samples.tolist()
    assert not right.any()


def test_a_cut_silences_the_agent_audio_sent_ahead() -> None:
    timeline = StereoTimeline(RATE, hold_s=0.5)
    timeline.agent(tone(0.2), at=1.0)  # sent 0.2 s ahead of playback, as the player does
    timeline.agent(tone(0.2), at=1.0)
    timeline.agent(tone(0.2), at=1.2)  # plays at 1.4
    timeline.cut(at=1.3)
    timeline.agent(tone(0.1, 2000), at=2.0)  # the next answer
    _, right = channels(timeline.finish(3.0))
    assert len(right) == 3 * RATE
    assert not right[:RATE].any()
    assert (right[RATE : round(1.3 * RATE)] == 1000).all()
    assert not right[round(1.3 * RATE) : 2 * RATE].any()
    assert (right[2 * RATE : round(2.1 * RATE)] == 2000).all()
    assert not right[round(2.1 * RATE) :].any()


def test_bunched_caller_audio_keeps_its_pace() -> None:
    """A network hiccup delivers 0.4 s of audio at once: it stays where it was said."""
    timeline = StereoTimeline(RATE)
    for i in range(1, 11):
        timeline.caller(tone(0.1, i), at=0.1 * i if not 3 <= i <= 6 else 0.7)
    left, _ = channels(timeline.finish(1.0))
    assert len(left) == RATE
    assert [int(left[round(0.1 * RATE) * i]) for i in range(10)] == list(range(1, 11))


def test_gaps_become_silence_and_memory_stays_bounded() -> None:
    timeline = StereoTimeline(RATE, hold_s=0.5)
    out = b""
    for second in range(1, 600):  # ten minutes, a 20 ms chunk every second
        timeline.caller(tone(0.02), at=float(second))
        out += timeline.take(float(second))
        assert len(timeline._left) <= 2 * RATE  # the hold and a chunk, at most doubled
    out += timeline.finish(600.0)
    left, _ = channels(out)
    assert len(left) == 600 * RATE
    assert int(np.count_nonzero(left)) == 599 * round(0.02 * RATE)


def test_caller_audio_far_ahead_of_the_clock_is_dropped_and_counted() -> None:
    timeline = StereoTimeline(RATE, max_ahead_s=1.0)
    timeline.caller(tone(0.8), at=0.0)
    timeline.caller(tone(0.8), at=0.0)  # would end 1.6 s ahead of the clock
    assert timeline.dropped_frames == round(0.8 * RATE)


# --- the WAV file -----------------------------------------------------------------------


def test_the_wav_is_valid_after_every_append_and_repairable(tmp_path: Path) -> None:
    path = tmp_path / "c.wav"
    wav = WavAppender(path, RATE)
    for i in range(1, 6):
        wav.append(tone(0.1) * 2)  # stereo frames: 0.1 s of both channels
        with wave.open(str(path)) as w:  # as a crash right now would leave it
            assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, RATE, 2)
            assert w.getnframes() == i * round(0.1 * RATE)
    wav.close()
    # A torn header write (sizes lost) is repaired from the file's length.
    with open(path, "r+b") as f:
        f.seek(40)
        f.write(struct.pack("<I", 0))
        f.seek(0, 2)
        f.write(b"\x01\x02\x03")  # and half a frame
    assert repair(path) == 5 * round(0.1 * RATE) * 4
    with wave.open(str(path)) as w:
        assert w.getnframes() == 5 * round(0.1 * RATE)
    assert path.stat().st_size == HEADER_BYTES + 5 * round(0.1 * RATE) * 4


# --- a real call ------------------------------------------------------------------------

DG = FakeDeepgramConfig(
    script=("tell me a long story", "no stop right there please"),
    final_latency=0.02,
    interim_latency=0.01,
)
STORY = " ".join(f"Sentence number {i} of a rather long story." for i in range(12))
LONG_OA = FakeOpenAIConfig(
    first_token_latency=0.01, tokens_per_second=2000, responder=lambda messages: STORY
)


def active(samples: np.ndarray, rate: int, window_s: float = 0.1) -> np.ndarray:
    """Per window: does it hold sound (any 20 ms frame above -40 dBFS)?"""
    frame = rate // 50
    n = len(samples) // frame
    rms = np.sqrt(np.mean(samples[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))
    loud = rms > 32768 * 0.01
    per = round(window_s * 50)
    return np.array([loud[i : i + per].any() for i in range(0, n, per)])


async def test_a_barge_in_is_recorded_as_heard(tmp_path: Path) -> None:
    rate = 16_000
    async with (
        open_stack(
            deepgram=DG,
            openai=LONG_OA,
            cartesia=FAST_CA,
            recordings_dir=str(tmp_path / "rec"),
            record_calls=True,
            api_keys=(KEY,),
        ) as stack,
        open_store(str(tmp_path / "calls.db")) as store,
    ):
        stack.app.store = store
        async with BrowserClient.connect(stack.ws_url) as client:
            sid = client.session_id
            await client.start(rate, turnMode="auto", silenceMs=400)
            await client.stream_audio(speech_like(1.0, rate, seed=2) + silence(0.6, rate), rate)
            start = await client.expect(ev.OUTPUT_START)
            uid = start["payload"]["utteranceId"]
            with trio.fail_after(15):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        client.stream_audio,
                        silence(1.0, rate) + speech_like(2.5, rate, seed=3) + silence(0.3, rate),
                        rate,
                    )
                    await client.expect(ev.OUTPUT_CANCEL)
        with trio.fail_after(10):
            await stack.app.wait_idle()
        record = await store.get_call(sid)
        assert record is not None and record.summary.ended_at is not None
        saved = [e.payload for e in record.events if e.kind == "recording.saved"]
        assert len(saved) == 1 and saved[0]["sample_rate"] == rate
        path = Path(saved[0]["path"])
        with wave.open(str(path)) as w:
            assert (w.getnchannels(), w.getframerate()) == (2, rate)
            left, right = channels(w.readframes(w.getnframes()))
        # Both channels span the call (one interleaved stream: equal by construction).
        call_s = record.summary.ended_at - record.summary.started_at
        assert len(left) / rate == pytest.approx(call_s, abs=0.3)
        assert saved[0]["duration_s"] == pytest.approx(len(left) / rate, abs=1 / 50)
        caller, agent = active(left, rate), active(right, rate)
        first = int(np.argmax(agent))  # the answer starts
        talk = first + 10 + int(np.argmax(caller[first + 10 :]))  # the caller talks over it
        stop = talk + int(np.argmin(agent[talk:]))  # the answer is cut
        assert agent[first:talk].all()  # it played until the caller spoke...
        # ...and until the barge-in was confirmed: words, or 1.5 s of speech over it
        # (docs/turn-taking.md), plus a window of rounding.
        assert 0 < stop - talk <= 16
        until = stop + int(np.argmin(caller[stop:]))  # the caller's last words
        assert until - stop >= 5
        assert not agent[stop:until].any()  # silent after the cut while the caller talks
        heard = (stop - first) / 10
        assert heard < stack.cartesia.audio_seconds[uid] - 0.5  # the rest was never heard
        # The calls API serves it, whole or by ranges.
        data = await trio.Path(path).read_bytes()
        size = len(data)
        url = f"{stack.url}/v1/calls/{sid}/recording"
        auth = {"authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(timeout=10) as http:
            detail = await http.get(f"{stack.url}/v1/calls/{sid}", headers=auth)
            assert detail.json()["call"]["recording"]["path"] == str(path)  # as call.ended
            whole = await http.get(url, headers=auth)
            assert whole.status_code == 200 and whole.content == data
            assert whole.headers["accept-ranges"] == "bytes"
            head = await http.get(url, headers={**auth, "range": "bytes=0-43"})
            assert head.status_code == 206 and head.content == data[:44]
            assert head.headers["content-range"] == f"bytes 0-43/{size}"
            tail = await http.get(url, headers={**auth, "range": "bytes=-100"})
            assert tail.status_code == 206 and tail.content == data[-100:]
            beyond = await http.get(url, headers={**auth, "range": f"bytes={size}-"})
            assert beyond.status_code == 416
            assert beyond.headers["content-range"] == f"bytes */{size}"
            assert beyond.json()["error"]["code"] == "range_not_satisfiable"


# --- upload to S3-compatible storage ----------------------------------------------------


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on a real socket, with a ``recordings`` bucket."""
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="recordings")
    try:
        yield endpoint
    finally:
        server.stop()


async def test_recordings_are_uploaded_after_the_call(tmp_path: Path, s3_endpoint: str) -> None:
    import boto3

    reports_tx, reports_rx = trio.open_memory_channel[UploadReport](4)
    async with (
        open_stack(
            deepgram=FakeDeepgramConfig(script=("hello there",), final_latency=0.02),
            openai=LONG_OA,
            cartesia=FAST_CA,
            recordings_dir=str(tmp_path / "rec"),
            record_calls=True,
        ) as stack,
        open_store(str(tmp_path / "calls.db")) as store,
        trio.open_nursery() as nursery,
    ):
        target = S3Target.parse("s3://recordings/calls/", s3_endpoint)
        uploader = RecordingUploader(target, store, reports=reports_tx)
        await nursery.start(uploader.run)
        stack.app.store, stack.app.uploader = store, uploader
        async with BrowserClient.connect(stack.ws_url) as client:
            sid = client.session_id
            await client.start(16_000)
            await client.stream_audio(speech_like(0.5, 16_000), 16_000)
        with trio.fail_after(30):
            report = await reports_rx.receive()
        assert report == UploadReport(sid, f"s3://recordings/calls/{sid}.wav")
        record = await store.get_call(sid)
        assert record is not None
        saved = next(e.payload for e in record.events if e.kind == "recording.saved")
        uploaded = next(e.payload for e in record.events if e.kind == "recording.uploaded")
        assert saved["url"] == uploaded["url"] == report.url  # named before the upload
        local = await trio.Path(saved["path"]).read_bytes()
        s3 = boto3.client("s3", endpoint_url=s3_endpoint)
        obj = await trio.to_thread.run_sync(
            lambda: s3.get_object(Bucket="recordings", Key=f"calls/{sid}.wav")
        )
        assert obj["ContentType"] == "audio/wav"
        assert obj["Body"].read() == local and uploaded["bytes"] == len(local) > 44
        nursery.cancel_scope.cancel()
