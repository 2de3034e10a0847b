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

Semantic end of turn (``CallSettings.semantic_turns``): at a pause of
``semantic_pause_ms`` inside speech the last 8 s of audio go to the call's
end-of-turn judge (``end_of_turn.py``, a child task here, running the model in a
thread); when it calls the turn over and the caller is still silent, the segment
ends there and then (``VoiceEnd.early_ms`` says how much sooner than the silence),
else the silence ends it as before. Its verdict is collected after each chunk of
audio (the caller's audio keeps flowing through a pause, so that is at most one
chunk late); the turn manager then checks the transcript's last word.

Settings arrive in band (:class:`CallSettings` on the audio channel, after the
audio of the previous settings): the rate picks the resampler, the turn mode and
``silence_ms`` the VAD's end of turn, and a new language is passed on to the STT
supervisor in the same order.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque

import trio

from ..audio import denoise
from ..audio.log_mel import SAMPLES as SEMANTIC_SAMPLES
from ..audio.resample import StreamResampler, Upsampler2x, open_resampler
from ..audio.smart_turn import load_smart_turn
from ..audio.vad import (
    WEBRTC_HANGOVER_MS,
    FrameClassifier,
    SileroClassifier,
    VadSegmenter,
    VoiceEnded,
    VoiceStarted,
    WebRtcClassifier,
    default_vad_engine,
    open_classifier,
)
from ..providers.base import STT_SAMPLE_RATE, Finalize
from .end_of_turn import PauseCheck, Verdict, run_judge
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

log = logging.getLogger("vantum.pipeline.audio_path")

FRAME_MS_MIN = 40
"""The shortest silence the segmenter is given after the hangover correction."""

STT_BATCH_MS = 100
"""Audio handed to the STT engine per message (Deepgram takes 20-250 ms frames)."""

_semantic_warned = False
_denoise_warned = False


async def _load_denoiser(atten_db: int, ready: trio.MemorySendChannel[denoise.DeepFilter]) -> None:
    """Create the call's suppressor in a thread (seconds of CPU) and hand it over; the
    VAD works on the raw audio meanwhile. Logs once per process when unavailable."""
    global _denoise_warned
    async with ready:
        try:
            suppressor = await trio.to_thread.run_sync(
                denoise.DeepFilter, atten_db, limiter=denoise.LIMITER
            )
        except Exception as exc:
            if not _denoise_warned:
                _denoise_warned = True
                log.warning("noise reduction unavailable (%s): the VAD hears raw audio", exc)
            return
        try:
            ready.send_nowait(suppressor)
        except trio.BrokenResourceError:  # the call ended while it loaded
            suppressor.close()


class RecentAudio:
    """The last 8 s of 16 kHz PCM16 (what the end-of-turn model judges), as chunks."""

    def __init__(self, limit: int = SEMANTIC_SAMPLES * 2) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit

    def extend(self, pcm: bytes) -> None:
        self._chunks.append(pcm)
        self._size += len(pcm)
        while self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.popleft())

    def snapshot(self) -> bytes:
        return b"".join(self._chunks)[-self._limit :]


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
    async with trio.open_nursery() as nursery:
        await _audio_path(audio_in, stt_out, inbox, settings, batch_ms, nursery)


async def _audio_path(
    audio_in: trio.MemoryReceiveChannel[AudioItem],
    stt_out: trio.MemorySendChannel[SttItem],
    inbox: trio.MemorySendChannel[TurnInput],
    settings: CallSettings | None,
    batch_ms: int,
    nursery: trio.Nursery,
) -> None:
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
    # Semantic end of turn (off until the settings ask for it and the model loads).
    semantic = False
    pause_ms = 100
    threshold = 0.5
    recent = RecentAudio()
    checks: trio.MemorySendChannel[PauseCheck] | None = None
    verdicts: trio.MemoryReceiveChannel[Verdict] | None = None
    offered: float | None = None  # the pause already handed to the judge
    # Noise reduction for the VAD's copy (loaded in the background, then used).
    suppressor: denoise.DeepFilter | None = None
    suppressor_ready: trio.MemoryReceiveChannel[denoise.DeepFilter] | None = None
    denoising = False

    async def flush() -> None:
        if batch:
            data = bytes(batch)
            batch.clear()
            await stt_out.send(data)

    async def feed(pcm: bytes) -> None:
        """VAD over ``pcm`` (16 kHz), then into the batch; sends what is due."""
        nonlocal batch_due, sustained_sent, offered, suppressor
        assert classifier is not None  # set by apply() before any audio can arrive
        ended: VoiceEnded | None = None
        started = False
        heard = pcm  # what the VAD classifies: the denoised copy when asked for
        if denoising and suppressor is None and suppressor_ready is not None:
            with contextlib.suppress(trio.WouldBlock, trio.EndOfChannel):
                suppressor = suppressor_ready.receive_nowait()
        if denoising and suppressor is not None:
            heard = await trio.to_thread.run_sync(suppressor.process, pcm, limiter=denoise.LIMITER)
        for is_speech in classifier.frames(heard):
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
        early_ms = 0
        if semantic and checks is not None and verdicts is not None:
            recent.extend(pcm)
            if ended is None and segmenter.in_speech:
                pause = segmenter.last_speech_end
                if segmenter.gap_ms >= pause_ms and offered != pause:
                    try:
                        checks.send_nowait(PauseCheck(pause, recent.snapshot()))
                        offered = pause
                    except trio.WouldBlock:
                        pass  # the judge is busy: offered again with the next chunk
            try:
                verdict: Verdict | None = verdicts.receive_nowait()
            except trio.WouldBlock:
                verdict = None
            if (
                verdict is not None
                and ended is None
                and auto
                and segmenter.in_speech
                and verdict.pause == segmenter.last_speech_end
                and verdict.probability >= threshold
            ):
                # Still the pause it judged (no speech since): the turn ends here.
                early_ms = max(0, segmenter.silence_ms - segmenter.gap_ms)
                ended = segmenter.force_end()
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
            await inbox.send(VoiceEnd(trio.current_time(), said_ms, auto, early_ms))
            if auto:
                await stt_out.send(Finalize())

    async def drain_resampler() -> None:
        if resampler is not None:
            tail = resampler.flush()
            if tail:
                await feed(tail)

    async def start_judge() -> bool:
        """The call's end-of-turn judge, started once (the model loads in a thread);
        False, logged once per process, when the model is not installed."""
        global _semantic_warned
        nonlocal checks, verdicts
        if checks is not None:
            return True
        try:
            model = await trio.to_thread.run_sync(load_smart_turn)
        except Exception as exc:  # not installed / unloadable: silence ends turns
            if not _semantic_warned:
                _semantic_warned = True
                log.warning("semantic end of turn unavailable (%s): using silence", exc)
            return False
        checks_tx, checks_rx = trio.open_memory_channel[PauseCheck](0)
        verdicts_tx, verdicts_rx = trio.open_memory_channel[Verdict](1)
        nursery.start_soon(run_judge, model, checks_rx, verdicts_tx)
        checks, verdicts = checks_tx, verdicts_rx
        return True

    async def apply(new: CallSettings) -> None:
        nonlocal resampler, rate, language, auto, sustained_ms, classifier
        nonlocal semantic, pause_ms, threshold, denoising, suppressor_ready
        policy = new.turn
        denoising = policy.noise_reduction
        if denoising and suppressor_ready is None:
            ready_tx, suppressor_ready = trio.open_memory_channel[denoise.DeepFilter](1)
            nursery.start_soon(_load_denoiser, policy.noise_atten_db, ready_tx)
        sustained_ms = policy.barge_in_min_speech_ms
        engine = new.vad or default_vad_engine()
        if classifier is None or classifier.engine != engine:
            await drain_resampler()
            # WebRTC's needs no model: built here, with no await in the way.
            if engine == "webrtc":
                classifier = WebRtcClassifier()
            else:
                classifier = await open_classifier(
                    engine, policy.vad_threshold, policy.vad_neg_threshold
                )
        if isinstance(classifier, SileroClassifier):
            classifier.threshold = policy.vad_threshold
            classifier.neg_threshold = policy.vad_neg_threshold
        segmenter.start_ms = policy.vad_start_ms
        semantic = new.semantic_turns and await start_judge()
        pause_ms = policy.semantic_pause_ms
        threshold = policy.semantic_threshold
        if new.sample_rate != rate:
            await drain_resampler()
            rate = new.sample_rate
            resampler = None if rate is None else open_resampler(rate, STT_SAMPLE_RATE)
        auto = new.turn_mode == "auto"
        # A VAD that holds "speech" longer than WebRTC's after the voice stops gets
        # that extra hangover back from the silence: ``silenceMs`` then means the same
        # wait after the last word (and the same pause tolerance) with either engine.
        extra = max(0, classifier.HANGOVER_MS - WEBRTC_HANGOVER_MS)
        segmenter.silence_ms = max(FRAME_MS_MIN, new.end_silence_ms - extra)
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
        # The judge finishes its inference (if any) and returns; a suppressor still
        # loading is closed by its loader, which finds nobody to take it.
        if checks is not None and verdicts is not None:
            await checks.aclose()
            await verdicts.aclose()
        if suppressor_ready is not None:
            await suppressor_ready.aclose()
        if suppressor is not None:
            suppressor.close()
