"""The audio path between ingress and the STT engine.

One actor resamples the caller's audio to 16 kHz (a phone's 8 kHz by a half-band
interpolator in numpy, other rates by libsamplerate), runs the VAD on it in 20 ms
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

Settings arrive in band (:class:`CallSettings` on the audio channel, after the
audio of the previous settings): the rate picks the resampler, the turn mode and
``silence_ms`` the VAD's end of turn, and a new language is passed on to the STT
supervisor in the same order.
"""

from __future__ import annotations

import trio

from ..audio.resample import StreamResampler, Upsampler2x, open_resampler
from ..audio.vad import (
    WEBRTC_HANGOVER_MS,
    FrameClassifier,
    VadSegmenter,
    VoiceEnded,
    VoiceStarted,
    WebRtcClassifier,
    default_vad_engine,
    open_classifier,
)
from ..providers.base import STT_SAMPLE_RATE, Finalize
from .messages import (
    AudioItem,
    BotSpeaking,
    SttItem,
    TurnInput,
    VoiceEnd,
    VoiceStart,
    VoiceSustained,
)
from .settings import CallSettings

FRAME_MS_MIN = 40
"""The shortest silence the segmenter is given after the hangover correction."""

STT_BATCH_MS = 100
"""Audio handed to the STT engine per message (Deepgram takes 20-250 ms frames)."""


async def run_audio_path(
    audio_in: trio.MemoryReceiveChannel[AudioItem],
    stt_out: trio.MemorySendChannel[SttItem],
    inbox: trio.MemorySendChannel[TurnInput],
    settings: CallSettings | None = None,
    *,
    batch_ms: int = STT_BATCH_MS,
) -> None:
    """Client-rate PCM16 in; 16 kHz batches and Finalize out to the STT, VAD events to
    the turn manager. Returns (closing both outputs) when ``audio_in`` is closed.

    The VAD sits in the audio path so the Finalize it sends at the end of a turn (auto
    mode) is ordered after exactly the audio that turn contained. ``BotSpeaking``
    markers say when the bot is speaking (then speech is forwarded frame by frame).
    """
    resampler: StreamResampler | Upsampler2x | None = None
    rate: int | None = None
    language: str | None = None
    classifier: FrameClassifier | None = None  # chosen by the first settings
    segmenter = VadSegmenter()
    auto = False
    bot_speaking = False
    sustained_ms = 200  # the barge-in guard's speech length (the settings say)
    sustained_sent = False
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
        nonlocal batch_due, sustained_sent
        assert classifier is not None  # set by apply() before any audio can arrive
        ended: VoiceEnded | None = None
        started = False
        for is_speech in classifier.frames(pcm):
            for event in segmenter.feed(is_speech):
                if isinstance(event, VoiceStarted):
                    started = True
                    sustained_sent = False
                    await inbox.send(VoiceStart(trio.current_time()))
                else:
                    ended = event
            if segmenter.in_speech and not sustained_sent:
                # Said, not measured: a burst's VAD hangover must not make it long.
                speech_ms = segmenter.speech_ms - classifier.HANGOVER_MS
                if speech_ms >= sustained_ms:
                    sustained_sent = True
                    await inbox.send(VoiceSustained(trio.current_time(), speech_ms))
        if not batch:
            batch_due = trio.current_time() + max_wait
        batch.extend(pcm)
        if (
            started
            or ended is not None
            or len(batch) >= batch_bytes
            or (segmenter.in_speech and bot_speaking)
        ):
            await flush()
        if ended is not None:
            said_ms = max(0, ended.speech_ms - classifier.HANGOVER_MS)
            await inbox.send(VoiceEnd(trio.current_time(), said_ms, auto))
            if auto:
                await stt_out.send(Finalize())

    async def drain_resampler() -> None:
        if resampler is not None:
            tail = resampler.flush()
            if tail:
                await feed(tail)

    async def apply(new: CallSettings) -> None:
        nonlocal resampler, rate, language, auto, sustained_ms, classifier
        sustained_ms = new.turn.barge_in_min_speech_ms
        engine = new.vad or default_vad_engine()
        if classifier is None or classifier.engine != engine:
            await drain_resampler()
            # WebRTC's needs no model: built here, with no await in the way.
            if engine == "webrtc":
                classifier = WebRtcClassifier()
            else:
                classifier = await open_classifier(engine)
        if new.sample_rate != rate:
            await drain_resampler()
            rate = new.sample_rate
            resampler = None if rate is None else open_resampler(rate, STT_SAMPLE_RATE)
        auto = new.turn_mode == "auto"
        # A VAD that holds "speech" longer than WebRTC's after the voice stops gets
        # that extra hangover back from the silence: ``silenceMs`` then means the same
        # wait after the last word (and the same pause tolerance) with either engine.
        extra = max(0, classifier.HANGOVER_MS - WEBRTC_HANGOVER_MS)
        segmenter.silence_ms = max(FRAME_MS_MIN, new.silence_ms - extra)
        if new.language != language:
            await flush()  # audio heard in the old language goes to the old recogniser
            language = new.language
            await stt_out.send(new)

    async with audio_in, stt_out, inbox:
        if settings is not None:
            language = settings.language  # the STT supervisor starts with it
            await apply(settings)
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
            elif isinstance(item, BotSpeaking):
                bot_speaking = item.speaking
                if bot_speaking and segmenter.in_speech:
                    await flush()
            elif isinstance(item, CallSettings):
                await apply(item)
            else:  # Finalize: the turn's audio, all of it, goes first
                await drain_resampler()
                await flush()
                await stt_out.send(item)
        await flush()
