"""The audio path actors between ingress and the STT engine.

The resampler brings every caller's audio to 16 kHz; the STT supervisor keeps a
recogniser running for the whole call and turns a provider failure into an
error event instead of a dead session.
"""

from __future__ import annotations

import logging

import trio

from ..audio.resample import StreamResampler
from ..audio.vad import VadSegmenter, VoiceEnded, VoiceStarted, WebRtcClassifier
from ..errors import STTError
from ..protocol import events as ev
from ..providers.base import STT_SAMPLE_RATE, Finalize, STTEngine, STTEvent, STTInput
from .messages import AudioFormat, ServerEvent, TurnInput, VoiceEnd, VoiceStart

log = logging.getLogger("vantum.audio")

AudioItem = bytes | Finalize | AudioFormat


async def run_resampler(
    audio_in: trio.MemoryReceiveChannel[AudioItem],
    audio_out: trio.MemorySendChannel[AudioItem],
) -> None:
    """Client-rate PCM16 in, 16 kHz PCM16 out, one filter state per stream."""
    resampler: StreamResampler | None = None
    async with audio_in, audio_out:
        async for item in audio_in:
            if isinstance(item, AudioFormat):
                if resampler is not None:
                    tail = resampler.flush()
                    if tail:
                        await audio_out.send(tail)
                resampler = StreamResampler(item.rate, STT_SAMPLE_RATE)
                await audio_out.send(item)
            elif isinstance(item, Finalize):
                if resampler is not None:
                    tail = resampler.flush()
                    if tail:
                        await audio_out.send(tail)
                await audio_out.send(item)
            elif resampler is not None:
                pcm = resampler.process(item)
                if pcm:
                    await audio_out.send(pcm)


async def run_vad(
    audio_in: trio.MemoryReceiveChannel[AudioItem],
    audio_out: trio.MemorySendChannel[STTInput],
    inbox: trio.MemorySendChannel[TurnInput],
) -> None:
    """Watch the 16 kHz stream for speech; in auto mode, end turns on silence.

    It sits in the audio path so the Finalize it sends at the end of a turn is
    ordered after exactly the audio that turn contained.
    """
    classifier = WebRtcClassifier()
    segmenter = VadSegmenter()
    auto = False
    async with audio_in, audio_out, inbox:
        async for item in audio_in:
            if isinstance(item, AudioFormat):
                auto = item.turn_mode == "auto"
                segmenter = VadSegmenter(silence_ms=item.silence_ms)
                continue
            if isinstance(item, bytes):
                ended: VoiceEnded | None = None
                for is_speech in classifier.frames(item):
                    for event in segmenter.feed(is_speech):
                        if isinstance(event, VoiceStarted):
                            await inbox.send(VoiceStart(trio.current_time()))
                        else:
                            ended = event
                await audio_out.send(item)
                if ended is not None:
                    await inbox.send(VoiceEnd(trio.current_time(), ended.speech_ms, auto))
                    if auto:
                        await audio_out.send(Finalize())
                continue
            await audio_out.send(item)


async def run_stt(
    engine: STTEngine,
    audio: trio.MemoryReceiveChannel[STTInput],
    inbox: trio.MemorySendChannel[TurnInput],
    out: trio.MemorySendChannel[ServerEvent],
    *,
    language: str = "en-US",
    restart_delay: float = 1.0,
) -> None:
    """Keep ``engine`` recognising ``audio`` until it closes, restarting after failures.

    Each attempt gets its own channels, so an engine that dies mid-stream cannot
    take the session's channels down with it. Audio that arrives while no engine
    runs is dropped *with* an error event, never silently.
    """
    async with audio, inbox:
        while True:
            outcome = await _stt_attempt(engine, audio, inbox, language)
            if outcome is None:
                return
            log.warning("STT engine %s failed: %s", engine.name, outcome)
            await out.send(
                ServerEvent(
                    ev.ERR_STT,
                    {"message": f"speech recognition failed: {outcome}"},
                    request_type=ev.INPUT_CHUNK,
                )
            )
            await trio.sleep(restart_delay)


async def _stt_attempt(
    engine: STTEngine,
    audio: trio.MemoryReceiveChannel[STTInput],
    inbox: trio.MemorySendChannel[TurnInput],
    language: str,
) -> str | None:
    """Run the engine once; None when the audio ended, else why the engine failed."""
    feed_tx, feed_rx = trio.open_memory_channel[STTInput](64)
    events_tx, events_rx = trio.open_memory_channel[STTEvent](64)
    failed: str | None = None

    async def pump_in() -> None:
        async with feed_tx:
            async for item in audio:
                try:
                    await feed_tx.send(item)
                except trio.BrokenResourceError:
                    return

    async def pump_out() -> None:
        async with events_rx:
            async for event in events_rx:
                await inbox.send(event)

    async def engine_task() -> None:
        nonlocal failed
        try:
            await engine.run(feed_rx, events_tx, language=language)
        except STTError as exc:
            failed = str(exc) or type(exc).__name__
            nursery.cancel_scope.cancel()
        finally:
            await feed_rx.aclose()
            await events_tx.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump_out)
        nursery.start_soon(engine_task)
        nursery.start_soon(pump_in)
    return failed
