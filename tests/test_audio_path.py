"""The fused audio path: VAD at 20 ms, STT input batched, flushed where latency counts."""

from __future__ import annotations

import numpy as np
import trio
import trio.testing

from vantum.pipeline.audio_path import run_audio_path
from vantum.pipeline.events import OutputChunk, OutputStarted, ServerEvent
from vantum.pipeline.messages import (
    AudioItem,
    BotSpeaking,
    SttItem,
    TurnInput,
    VoiceEnd,
    VoiceStart,
    VoiceSustained,
)
from vantum.pipeline.player import Playback, play
from vantum.pipeline.settings import CallSettings, TurnMode
from vantum.providers.base import Finalize, TTSAudio, TTSEvent

FRAME = 640  # 20 ms at 16 kHz


def tone(frames: int) -> bytes:
    t = np.arange(frames * FRAME // 2) / 16_000
    return (np.sin(2 * np.pi * 220 * t) * 12_000).astype("<i2").tobytes()


def pcm16k(turn_mode: TurnMode = "manual", silence_ms: int = 500) -> CallSettings:
    return CallSettings(16_000, turn_mode=turn_mode, silence_ms=silence_ms)


async def _run(
    items: list[AudioItem | float],
) -> tuple[list[tuple[float, SttItem]], list[TurnInput]]:
    """Feed ``items`` (floats are pauses) through the audio path; collect both outputs."""
    audio_tx, audio_rx = trio.open_memory_channel[AudioItem](100)
    stt_tx, stt_rx = trio.open_memory_channel[SttItem](100)
    inbox_tx, inbox_rx = trio.open_memory_channel[TurnInput](100)
    stt: list[tuple[float, SttItem]] = []
    inbox: list[TurnInput] = []

    async def collect_stt() -> None:
        async for item in stt_rx:
            stt.append((trio.current_time(), item))

    async def collect_inbox() -> None:
        async for item in inbox_rx:
            inbox.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_stt)
        nursery.start_soon(collect_inbox)
        nursery.start_soon(run_audio_path, audio_rx, stt_tx, inbox_tx)
        async with audio_tx:
            for item in items:
                if isinstance(item, float):
                    await trio.sleep(item)
                else:
                    await audio_tx.send(item)
                    await trio.sleep(0.02)
    return stt, inbox


async def test_audio_is_batched_complete_and_flushed_before_finalize(
    autojump_clock: trio.testing.MockClock,
) -> None:
    speech = tone(13)
    frames = [speech[i : i + FRAME] for i in range(0, len(speech), FRAME)]
    stt, _ = await _run([pcm16k(), *frames, Finalize()])
    audio = [x for _, x in stt if isinstance(x, bytes)]
    assert b"".join(audio) == speech  # nothing lost, duplicated or reordered
    assert isinstance(stt[-1][1], Finalize)
    assert len(audio) < len(frames) // 2  # batched, not one message per frame


async def test_a_pause_in_the_audio_does_not_hold_back_the_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stt, _ = await _run([pcm16k(), bytes(FRAME), 5.0])
    (at, data), *_ = [(at, x) for at, x in stt if isinstance(x, bytes)]
    assert data == bytes(FRAME)
    assert at <= 0.02 + 0.1 + 1e-9  # within one batch interval of arriving


async def test_vad_events_keep_frame_resolution_and_auto_finalize_follows_the_speech(
    autojump_clock: trio.testing.MockClock,
) -> None:
    silence = [bytes(FRAME)] * 5
    speech = [tone(1)] * 20
    items: list[AudioItem | float] = [pcm16k("auto", 200), *silence, *speech]
    trailing = [bytes(FRAME)] * 30
    stt, inbox = await _run([*items, *trailing])
    kinds = [type(x) for x in inbox]
    assert kinds == [VoiceStart, VoiceSustained, VoiceEnd]
    start, sustained, end = inbox
    assert isinstance(start, VoiceStart) and isinstance(end, VoiceEnd)
    # Speech starts at frame 5; the VAD needs 3 frames (60 ms) to call it, at 20 ms steps.
    assert abs(start.at - (5 + 3) * 0.02) < 0.021
    # The barge-in guard's 200 ms of speech are counted in VAD frames (less the
    # VAD's 100 ms hangover, which only a stretch that has ended carries).
    assert isinstance(sustained, VoiceSustained) and sustained.speech_ms == 200
    assert abs(sustained.at - (5 + 15) * 0.02) < 0.021
    finalize_at = next(i for i, (_, x) in enumerate(stt) if isinstance(x, Finalize))
    before = b"".join(x for _, x in stt[:finalize_at] if isinstance(x, bytes))
    # The Finalize comes right after the silence that ended the turn, and after all of it.
    sent = b"".join([*silence, *speech, *trailing])
    assert before == sent[: len(before)]
    assert len(b"".join([*silence, *speech])) + 200 * 32 <= len(before) < len(sent)


async def test_speech_over_the_bot_goes_to_the_stt_frame_by_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    speech = [tone(1)] * 20
    stt, _ = await _run([pcm16k("auto"), BotSpeaking(True), *speech])
    sizes = [len(x) for _, x in stt if isinstance(x, bytes)]
    assert sizes[-10:] == [FRAME] * 10  # once the VAD hears speech, no batching


async def test_the_first_answer_chunk_leaves_without_waiting_for_a_whole_chunk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """24 kHz in, 16 kHz out: the resampler's filter delay must not hold back the start."""
    tts_tx, tts_rx = trio.open_memory_channel[TTSEvent](4)
    out_tx, out_rx = trio.open_memory_channel[ServerEvent](64)
    playback = Playback("u1", 16_000)
    async with tts_tx:
        await tts_tx.send(TTSAudio(bytes(2 * 960)))  # exactly 40 ms at 24 kHz
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: play(tts_rx, out_tx, playback, source_rate=24_000, lead=0.2, chunk_ms=40)
            )
            first = await out_rx.receive()
            chunk = await out_rx.receive()
            assert isinstance(first, OutputStarted)
            assert isinstance(chunk, OutputChunk)
            assert 0 < len(chunk.pcm) <= 2 * 640
            nursery.cancel_scope.cancel()


async def test_a_new_start_that_changes_only_silence_ms_moves_the_end_of_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The second ``audio.input.start`` of a call used to be ACKed and ignored when it
    changed only ``silenceMs``: the VAD kept the first value."""
    speech = [tone(1)] * 20
    pause = [bytes(FRAME)] * 40  # 800 ms of silence after each utterance
    _, inbox = await _run(
        [pcm16k("auto", 1000), *speech, *pause, pcm16k("auto", 300), *speech, *pause]
    )
    # With 1000 ms the first pause (800 ms) does not end the turn; with 300 ms the
    # second one does, 300 ms after the speech (which ends at 1.64 s: 20 ms a frame;
    # the resampler delays the VAD by a few frames).
    assert [type(x) for x in inbox] == [VoiceStart, VoiceSustained, VoiceEnd]
    end = inbox[2]
    assert isinstance(end, VoiceEnd) and 1.64 + 0.3 <= end.at <= 1.64 + 0.3 + 0.15


async def test_a_language_change_is_passed_on_to_the_stt_after_the_audio_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    speech = tone(3)
    spanish = CallSettings(16_000, language="es-ES")
    stt, _ = await _run([pcm16k(), speech, spanish, speech])
    items = [x for _, x in stt]
    languages = [x.language for x in items if isinstance(x, CallSettings)]
    assert languages == ["en-US", "es-ES"]
    switch = items.index(spanish)
    assert b"".join(x for x in items[:switch] if isinstance(x, bytes)) == speech
    assert b"".join(x for x in items[switch:] if isinstance(x, bytes)) == speech
