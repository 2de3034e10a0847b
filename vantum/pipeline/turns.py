"""The turn manager: decides when the caller's turn is over and what they said.

``TurnState`` is pure (it returns actions, it does no I/O) so every ordering of
transcripts and control events can be driven directly by property tests;
``run_turn_manager`` is the thin actor around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import trio

from ..protocol import events as ev
from ..providers.base import FinalizeDone, SpeechStarted, TranscriptEvent, UtteranceEnd
from .messages import (
    InputEnded,
    ModeChanged,
    ServerEvent,
    TextTurn,
    TurnInput,
    TurnRequest,
    TurnTimings,
)


@attrs.frozen
class Emit:
    event: ServerEvent


@attrs.frozen
class Respond:
    request: TurnRequest


Action = Emit | Respond


def _wall_ms() -> int:
    return int(time.time() * 1000)


@attrs.define
class TurnState:
    """What the caller has said in the current turn, and how the turn ends.

    Manual mode: ``audio.input.end`` asks the STT to finalize; the turn closes
    when that Finalize is acknowledged (``FinalizeDone``), so no trailing words
    are lost. Auto mode: the provider's endpointing (``speech_final`` or
    ``UtteranceEnd``) closes the turn.
    """

    turn_mode: str = "manual"
    language: str = "en-US"
    finals: list[str] = attrs.Factory(list)
    pending_end: bool = False
    timings: TurnTimings = attrs.Factory(TurnTimings)
    wall_ms: Callable[[], int] = _wall_ms

    def handle(self, item: TurnInput, now: float) -> list[Action]:
        if isinstance(item, TranscriptEvent):
            return self._on_transcript(item, now)
        if isinstance(item, InputEnded):
            self.pending_end = True
            self.timings.end_of_speech = item.at
            return []
        if isinstance(item, FinalizeDone):
            if not self.pending_end:
                return []
            self.pending_end = False
            return self._close_turn(now)
        if isinstance(item, UtteranceEnd):
            if self.turn_mode == "auto" and self.finals:
                if self.timings.end_of_speech is None:
                    self.timings.end_of_speech = now
                return self._close_turn(now)
            return []
        if isinstance(item, TextTurn):
            timings = TurnTimings(end_of_speech=item.at, transcript_final=item.at)
            return [Respond(TurnRequest(item.text, timings))]
        if isinstance(item, ModeChanged):
            self.turn_mode = item.turn_mode
            self.language = item.language
            return []
        if isinstance(item, SpeechStarted):
            return []
        raise TypeError(f"unexpected turn input {item!r}")

    def _on_transcript(self, t: TranscriptEvent, now: float) -> list[Action]:
        if not t.text and not t.is_final:
            return []
        payload = {
            "transcript": t.text,
            "confidence": t.confidence,
            "timestamp": self.wall_ms(),
            "language": t.language or self.language,
        }
        if not t.is_final:
            return [Emit(ServerEvent(ev.TRANSCRIPT_INTERIM, payload))]
        actions: list[Action] = []
        if t.text:
            self.finals.append(t.text)
            actions.append(Emit(ServerEvent(ev.TRANSCRIPT_FINAL, payload)))
        if self.turn_mode == "auto" and t.speech_final and self.finals:
            if self.timings.end_of_speech is None:
                self.timings.end_of_speech = now
            actions.extend(self._close_turn(now))
        return actions

    def _close_turn(self, now: float) -> list[Action]:
        text = " ".join(self.finals).strip()
        timings = self.timings
        timings.transcript_final = now
        self.finals = []
        self.timings = TurnTimings()
        if not text:
            return []
        return [Respond(TurnRequest(text, timings))]


async def run_turn_manager(
    inbox: trio.MemoryReceiveChannel[TurnInput],
    out: trio.MemorySendChannel[ServerEvent],
    requests: trio.MemorySendChannel[TurnRequest],
) -> None:
    """Apply ``TurnState`` to the merged stream of STT results and control events."""
    state = TurnState()
    async with inbox, requests:
        async for item in inbox:
            for action in state.handle(item, trio.current_time()):
                if isinstance(action, Emit):
                    await out.send(action.event)
                    continue
                try:
                    requests.send_nowait(action.request)
                except trio.WouldBlock:
                    await out.send(
                        ServerEvent(
                            ev.ERR_QUEUE_FULL,
                            {"message": "too many answers pending; this turn was dropped"},
                            request_type=ev.INPUT_END,
                        )
                    )
