"""The turn manager's pure core: what the caller said, when the turn ends, and
whether speech over the bot interrupts it.

``TurnState`` returns actions and does no I/O, so every ordering of transcripts,
VAD and control events can be driven directly by property tests; the actor around
it is :func:`vantum.pipeline.turns.run_turn_manager`. docs/turn-taking.md has the
state diagram.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from ..protocol import events as ev
from ..protocol.client_events import PlaybackProgress
from ..providers.base import FinalizeDone, SpeechStarted, TranscriptEvent, UtteranceEnd
from .endpoint import ends_incomplete
from .events import ErrorEvent, ServerEvent, TranscriptFinal, TranscriptInterim
from .messages import (
    AnswerAudible,
    CallOver,
    HoldExpired,
    IdleTimeout,
    InputEnded,
    InputStarted,
    Interrupt,
    Pause,
    ResponseFinished,
    Resume,
    SpeculationGate,
    TextTurn,
    TurnCeiling,
    TurnInput,
    TurnRequest,
    TurnTimings,
    VoiceEnd,
    VoiceStart,
    VoiceSustained,
)
from .settings import CallSettings, TurnPolicy

UNANSWERED_TURN = (
    "speech recognition did not finish this turn in time (the provider never answered "
    "its end); nothing was heard to answer: please say it again"
)
"""The ``stt.error.provider`` message for a turn whose Finalize the recogniser never
acknowledged and that closed with no words: without it the caller waits for an
answer that will not come."""


@attrs.frozen
class Emit:
    event: ServerEvent


@attrs.frozen
class Respond:
    request: TurnRequest


@attrs.frozen
class EndCall:
    """Hang up: the caller has been silent through every idle prompt."""

    reason: str


@attrs.frozen
class Held:
    """The floor state *paused*: caller speech stopped the answer's audio at ``since``;
    unless a barge-in is confirmed first, it resumes at ``until``.

    With no ``Held`` the answer (if any) plays. The transitions, all in
    :class:`TurnState`::

        playing --VoiceStart over an answer in flight--> held      [Pause]
        held    --barge-in confirmed (words + speech,
                  long speech, typed turn, input start)--> none     [Interrupt]
        held    --HoldExpired at ``until``-------------> playing   [Resume]
        held    --ResponseFinished (the answer ended)---> none
    """

    since: float
    until: float


Action = Emit | Respond | Interrupt | Pause | Resume | EndCall


def _wall_ms() -> int:
    return int(time.time() * 1000)


@attrs.define
class TurnState:
    """What the caller has said in the current turn, and how the turn ends.

    Manual mode: ``audio.input.end`` asks the STT to finalize; the turn closes when
    that Finalize is acknowledged (``FinalizeDone``), so no trailing words are lost.
    Auto mode: the local VAD's end of speech does the same (the VAD actor sends the
    Finalize in-band); the provider's endpointing (``speech_final``/``UtteranceEnd``)
    closes the turn too, whichever comes first.
    """

    settings: CallSettings = attrs.Factory(CallSettings)
    """The call's settings (turn mode, language, turn policy); replaced on
    ``audio.input.start``."""
    finals: list[str] = attrs.Factory(list)
    pending_ends: int = 0
    """Finalizes sent and not yet answered by FinalizeDone (they pair one to one)."""
    timings: TurnTimings = attrs.Factory(TurnTimings)
    wall_ms: Callable[[], int] = _wall_ms
    voice_since: float | None = None
    """When the caller's current stretch of speech began (VAD), if they are speaking."""
    overlap_words: int = 0
    """Words heard from the caller while the bot was speaking (this answer)."""
    overlap_speech_ms: int = 0
    """The longest stretch of caller speech the VAD measured during this answer (from
    its frames: a sustained segment counts as the threshold, an ended one exactly)."""
    turn_speech_ms: int = 0
    """The same, for the caller's current turn."""
    idle_prompts_sent: int = 0
    overlapped: bool = False
    """Some of this turn was said while the bot was talking."""
    interrupted: bool = False
    """This turn already interrupted the bot (so it is a real turn, not a backchannel)."""
    last_interim: str = ""
    speculation: tuple[str, SpeculationGate] | None = None
    greeted: bool = False
    """The agent's greeting has been asked for (or the call needs none)."""
    hold: Held | None = None
    """The answer in flight is paused while the caller's speech is judged."""
    held_open_until: float | None = None
    """Semantic end of turn: the model ended the turn early but its transcript stops
    mid-phrase ("a table for"), so the turn stays open until this instant (the
    configured silence), unless the caller goes on or the final text ends well."""

    @property
    def policy(self) -> TurnPolicy:
        return self.settings.turn

    @property
    def turn_mode(self) -> str:
        return self.settings.turn_mode

    @property
    def ceiling_deadline(self) -> float:
        """When a turn held open by its transcript ends anyway (inf when none is)."""
        return float("inf") if self.held_open_until is None else self.held_open_until

    @property
    def hold_deadline(self) -> float:
        """When the paused answer resumes unless confirmed (inf when none is paused)."""
        return float("inf") if self.hold is None else self.hold.until

    def handle(
        self,
        item: TurnInput,
        now: float,
        bot_speaking: bool = False,
        answering: bool | None = None,
    ) -> list[Action]:
        """Apply one input. ``bot_speaking``: the answer in flight is audible;
        ``answering``: an answer is in flight at all (thinking or speaking; defaults
        to ``bot_speaking``), which caller speech pauses."""
        if answering is None:
            answering = bot_speaking
        if isinstance(item, TranscriptEvent):
            return self._on_transcript(item, now, bot_speaking or self.hold is not None)
        if isinstance(item, InputEnded):
            self.pending_ends += 1
            self.timings.end_of_speech = item.at
            self.idle_prompts_sent = 0
            return []
        if isinstance(item, FinalizeDone):
            if not self.pending_ends:
                return []
            self.pending_ends -= 1
            if self.held_open_until is not None:
                if self._text_incomplete(" ".join(self.finals)):
                    return []  # still mid-phrase: the ceiling or more speech decides
                self.held_open_until = None  # the final text ends well after all
            lost = item.unanswered and not self.finals
            closed = self._close_turn(now)
            if lost and not closed:
                return [Emit(ErrorEvent(ev.ERR_STT, UNANSWERED_TURN, ev.INPUT_END))]
            return closed
        if isinstance(item, TurnCeiling):
            if self.held_open_until is None or item.at < self.held_open_until:
                return []
            self.held_open_until = None
            # The silence ran out: the turn ends as it would have without the model
            # (on its FinalizeDone if that is still to come).
            return [] if self.pending_ends else self._close_turn(now)
        if isinstance(item, VoiceStart):
            self.held_open_until = None  # the caller went on: the same turn continues
            self.voice_since = item.at
            self.idle_prompts_sent = 0
            if answering and self.hold is None and self._pauses():
                confirm_ms = self.policy.barge_in_confirm_ms or 0
                self.hold = Held(now, now + confirm_ms / 1000)
                return [Pause()]
            return []
        if isinstance(item, HoldExpired):
            if self.hold is None or item.at < self.hold.until:
                return []
            self.hold = None
            return [Resume()]
        if isinstance(item, VoiceSustained):
            self._heard_speech(item.speech_ms)
            return []
        if isinstance(item, VoiceEnd):
            self.voice_since = None
            self._heard_speech(item.speech_ms)
            if item.auto_end and self.turn_mode == "auto":
                self.pending_ends += 1
                self.timings.end_of_speech = item.at
                said = " ".join([*self.finals, self.last_interim])
                if item.early_ms > 0 and self._text_incomplete(said):
                    # The model heard an end, the words did not: wait for the silence.
                    self.held_open_until = item.at + item.early_ms / 1000
                    return []
                return self._speculate(bot_speaking)
            return []
        if isinstance(item, UtteranceEnd):
            if self.turn_mode == "auto" and self.finals:
                if self.timings.end_of_speech is None:
                    self.timings.end_of_speech = now
                return self._close_turn(now)
            return []
        if isinstance(item, TextTurn):
            self.idle_prompts_sent = 0
            timings = TurnTimings(end_of_speech=item.at, transcript_final=item.at)
            # A typed turn before any audio.input.start still hears the greeting first.
            actions: list[Action] = self._greet()
            if bot_speaking or self.hold is not None:
                actions.extend(self.interrupt("text_input"))
            actions.append(Respond(TurnRequest(item.text, timings)))
            return actions
        if isinstance(item, InputStarted):
            self.settings = item.settings
            # A new audio.input.start over the answer: the caller is taking the floor.
            # The first one starts the agent's greeting: the caller's rate is known now.
            if bot_speaking or self.hold is not None:
                return self.interrupt("input_start")
            return self._greet()
        if isinstance(item, ResponseFinished):
            self.overlap_words = self.overlap_speech_ms = 0
            self.hold = None
            return []
        if isinstance(item, IdleTimeout):
            return self._on_idle(now)
        if isinstance(item, AnswerAudible):
            # Only what is said over this answer counts towards interrupting it (and
            # speech that paused it before its first audio is over it too).
            if self.hold is None:
                self.overlap_words = self.overlap_speech_ms = 0
            return []
        if isinstance(item, SpeechStarted | PlaybackProgress | CallOver):
            return []
        raise TypeError(f"unexpected turn input {item!r}")

    def _greet(self) -> list[Action]:
        """The agent's greeting, once per call: spoken as given (no LLM), before anything."""
        if self.greeted:
            return []
        self.greeted = True
        text = self.settings.greeting
        if not text:
            return []
        request = TurnRequest(
            text, TurnTimings(), canned=True, interruptible=self.settings.greeting_interruptible
        )
        return [Respond(request)]

    def idle_deadline(self, last_activity: float, busy: bool) -> float:
        """When to prompt a silent caller (inf when idle prompting is off or not due)."""
        if self.policy.idle_prompt_s is None or busy or self.voice_since is not None:
            return float("inf")
        if self.pending_ends or self.finals:
            return float("inf")
        return last_activity + self.policy.idle_prompt_s

    def _on_idle(self, now: float) -> list[Action]:
        p = self.policy
        if self.idle_prompts_sent >= p.max_idle_prompts:
            return [Respond(TurnRequest(p.goodbye, TurnTimings(), canned=True)), EndCall("idle")]
        text = p.idle_prompts[min(self.idle_prompts_sent, len(p.idle_prompts) - 1)]
        self.idle_prompts_sent += 1
        return [Respond(TurnRequest(text, TurnTimings(), canned=True))]

    def _on_transcript(self, t: TranscriptEvent, now: float, bot_speaking: bool) -> list[Action]:
        if not t.text and not t.is_final:
            return []
        self.idle_prompts_sent = 0
        language = t.language or self.settings.language
        actions: list[Action] = []
        if bot_speaking and t.text:
            self.overlapped = True
            if self._confirms_barge_in(t, now):
                self.interrupted = True
                actions.extend(self.interrupt("barge_in"))
        if not t.is_final:
            self.last_interim = t.text
            interim = TranscriptInterim(t.text, t.confidence, self.wall_ms(), language)
            actions.append(Emit(interim))
            return actions
        self.last_interim = ""
        if t.text:
            self.finals.append(t.text)
            actions.append(Emit(TranscriptFinal(t.text, t.confidence, self.wall_ms(), language)))
        if self.turn_mode == "auto" and t.speech_final and self.finals:
            if self.timings.end_of_speech is None:
                self.timings.end_of_speech = now
            actions.extend(self._close_turn(now))
        return actions

    def interrupt(self, reason: str) -> list[Action]:
        """Cut the answer in flight: it is no longer paused, and a speculative guess
        it may have been is void (the turn it guessed is answered from its text)."""
        self.hold = None
        if self.speculation is not None:
            self.speculation[1].reject()
            self.speculation = None
        return [Interrupt(reason)]

    def _text_incomplete(self, text: str) -> bool:
        return ends_incomplete(text, self.settings.language)

    def _pauses(self) -> bool:
        """Whether caller speech pauses the answer (auto mode, barge-in on, a window)."""
        p = self.policy
        return p.barge_in and self.turn_mode == "auto" and p.barge_in_confirm_ms is not None

    def _heard_speech(self, speech_ms: int) -> None:
        self.overlap_speech_ms = max(self.overlap_speech_ms, speech_ms)
        self.turn_speech_ms = max(self.turn_speech_ms, speech_ms)

    def _confirms_barge_in(self, t: TranscriptEvent, now: float) -> bool:
        """Caller words over the bot: enough of them, and enough speech, to mean it.

        The speech is what the VAD measured from its frames, not the wall time from
        the voice's start to the transcript's arrival: a 150 ms noise burst stays
        150 ms however late its transcript comes, and words the VAD never heard as
        speech (a click) confirm nothing.
        """
        p = self.policy
        if not p.barge_in or self.turn_mode != "auto":
            return False
        words = len(t.text.split())
        self.overlap_words = max(self.overlap_words, words)
        spoken_ms = 0.0 if self.voice_since is None else (now - self.voice_since) * 1000
        if spoken_ms >= p.barge_in_long_speech_ms and words >= 1:
            return True
        return (
            self.overlap_words >= p.barge_in_min_words
            and self.overlap_speech_ms >= p.barge_in_min_speech_ms
        )

    def long_speech_interrupts(self, now: float, bot_speaking_since: float | None) -> bool:
        """VAD-only barge-in: the caller has talked over the bot for a long time.

        Only speech *over* the bot counts: a caller still finishing a sentence when an
        early answer starts has not talked over it for the time before it started.
        """
        p = self.policy
        voice = self.voice_since
        if bot_speaking_since is None or voice is None:
            return False
        if not (p.barge_in and self.turn_mode == "auto"):
            return False
        return (now - max(voice, bot_speaking_since)) * 1000 >= p.barge_in_long_speech_ms

    def _close_turn(self, now: float) -> list[Action]:
        text = " ".join(self.finals).strip()
        timings = self.timings
        timings.transcript_final = now
        p = self.policy
        # Said over the bot without interrupting it: "mm-hm" (too few words), or noise
        # the recogniser made words of (too little VAD speech), is not a turn.
        unheard_noise = (
            p.barge_in
            and self.turn_mode == "auto"
            and self.turn_speech_ms < p.barge_in_min_speech_ms
        )
        backchannel = (
            self.overlapped
            and not self.interrupted
            and (len(text.split()) < p.barge_in_min_words or unheard_noise)
        )
        self.turn_speech_ms = 0
        self.held_open_until = None
        self.finals = []
        self.last_interim = ""
        self.timings = TurnTimings()
        self.overlapped = self.interrupted = False
        speculation, self.speculation = self.speculation, None
        if not text or backchannel:
            if speculation is not None:
                speculation[1].reject()
            return []
        if speculation is not None:
            guessed, gate = speculation
            if _normalise(guessed) == _normalise(text):
                gate.accept()
                return []
            gate.reject()
            # The dropped guess may have stamped these; the redo starts afresh.
            timings = attrs.evolve(timings, llm_first_token=None, speculative=False)
        return [Respond(TurnRequest(text, timings))]

    def _speculate(self, bot_speaking: bool) -> list[Action]:
        """At end of speech, start answering what the caller has said so far."""
        if not self.policy.speculate or bot_speaking or self.overlapped:
            return []
        guess = " ".join([*self.finals, self.last_interim]).strip()
        if not guess or self.speculation is not None:
            return []
        gate = SpeculationGate()
        self.speculation = (guess, gate)
        self.timings.speculative = True
        return [Respond(TurnRequest(guess, self.timings, gate=gate))]


def _normalise(text: str) -> str:
    """Compare transcripts the way a listener would: case and punctuation aside."""
    kept = "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text)
    return " ".join(kept.split())


__all__ = ["Action", "Emit", "EndCall", "Held", "Respond", "TurnState"]
