"""The audio path between ingress and the STT engine.

One actor resamples the caller's audio to 16 kHz, runs the VAD on it in 20 ms
frames and hands the STT batches of up to ``batch_ms``; the STT supervisor keeps
a recogniser running for the whole call and turns a provider failure into an
error event instead of a dead session.

Why one actor and batches: every channel hop and every provider frame costs a
task switch, a lock and a socket write, and at 50 input frames a second per
call those per-message costs were most of the server's CPU. The VAD still sees
every 20 ms frame; batching only delays audio *to the STT*, and never at the
moments where latency counts: a batch is flushed before every Finalize, at the
VAD's start and end of speech, whenever it is ``batch_ms`` old, and frame by
frame while the caller talks over the bot (barge-in waits for STT words).
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
from .state import SessionState

log = logging.getLogger("vantum.audio")

AudioItem = bytes | Finalize | AudioFormat


STT_BATCH_MS = 100
"""Audio handed to the STT engine per message (Deepgram takes 20-250 ms frames)."""


async def run_audio_path(
    audio_in: trio.MemoryReceiveChannel[AudioItem],
    stt_out: trio.MemorySendChannel[STTInput],
    inbox: trio.MemorySendChannel[TurnInput],
    state: SessionState | None = None,
    *,
    batch_ms: int = STT_BATCH_MS,
) -> None:
    """Client-rate PCM16 in; 16 kHz batches and Finalize out to the STT, VAD events to
    the turn manager.

    The VAD sits in the audio path so the Finalize it sends at the end of a turn (auto
    mode) is ordered after exactly the audio that turn contained. ``state`` tells it
    when the bot is speaking (then speech is forwarded frame by frame).
    """
    resampler: StreamResampler | None = None
    classifier = WebRtcClassifier()
    segmenter = VadSegmenter()
    auto = False
    batch = bytearray()
    batch_bytes = max(1, STT_SAMPLE_RATE * batch_ms // 1000) * 2
    batch_due = 0.0
    max_wait = batch_ms / 1000

    async def flush() -> None:
        if batch:
            data = bytes(batch)
            batch.clear()
            await stt_out.send(data)

    async def feed(pcm: bytes) -> None:
        """VAD over ``pcm`` (16 kHz), then into the batch; sends what is due."""
        nonlocal batch_due
        ended: VoiceEnded | None = None
        started = False
        for is_speech in classifier.frames(pcm):
            for event in segmenter.feed(is_speech):
                if isinstance(event, VoiceStarted):
                    started = True
                    await inbox.send(VoiceStart(trio.current_time()))
                else:
                    ended = event
        if not batch:
            batch_due = trio.current_time() + max_wait
        batch.extend(pcm)
        if (
            started
            or ended is not None
            or len(batch) >= batch_bytes
            or (segmenter.in_speech and state is not None and state.speaking)
        ):
            await flush()
        if ended is not None:
            await inbox.send(VoiceEnd(trio.current_time(), ended.speech_ms, auto))
            if auto:
                await stt_out.send(Finalize())

    async def drain_resampler() -> None:
        if resampler is not None:
            tail = resampler.flush()
            if tail:
                await feed(tail)

    async with audio_in, stt_out, inbox:
        while True:
            try:
                if batch:
                    item: AudioItem | None = None
                    with trio.move_on_at(batch_due):
                        item = await audio_in.receive()
                    if item is None:  # no audio came for a while: do not sit on the batch
                        await flush()
                        continue
                else:
                    item = await audio_in.receive()
            except trio.EndOfChannel:
                break
            if isinstance(item, bytes):
                if resampler is not None:
                    pcm = resampler.process(item)
                    if pcm:
                        await feed(pcm)
            elif isinstance(item, AudioFormat):
                await drain_resampler()
                await flush()
                resampler = StreamResampler(item.rate, STT_SAMPLE_RATE)
                auto = item.turn_mode == "auto"
                segmenter = VadSegmenter(silence_ms=item.silence_ms)
            else:  # Finalize: the turn's audio, all of it, goes first
                await drain_resampler()
                await flush()
                await stt_out.send(item)
        await flush()


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
    """Run the engine once; None when the audio ended, else why the engine failed.

    The engine reads the session's audio channel directly (through a clone it may
    close), not through a pump: one task switch less per audio message.
    """
    feed = audio.clone()
    events_tx, events_rx = trio.open_memory_channel[STTEvent](64)
    failed: str | None = None

    async def pump_out() -> None:
        async with events_rx:
            async for event in events_rx:
                await inbox.send(event)

    async def engine_task() -> None:
        nonlocal failed
        try:
            await engine.run(feed, events_tx, language=language)
        except STTError as exc:
            failed = str(exc) or type(exc).__name__
            nursery.cancel_scope.cancel()
        finally:
            await feed.aclose()
            await events_tx.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump_out)
        nursery.start_soon(engine_task)
    return failed
