"""The turn manager: decides when the caller's turn is over, what they said, and
when they are interrupting the bot.

``TurnState`` (``turn_state.py``) is pure (it returns actions, it does no I/O) so every ordering of
transcripts, VAD and control events can be driven directly by property tests;
``run_turn_manager`` is the thin actor around it. docs/turn-taking.md has the
state diagram.

The turn manager is the one owner of the call's floor: it alone decides a barge-in
(from transcripts, the VAD, a typed turn or a new ``audio.input.start``), it keeps
the queue of answers waiting to be spoken (:class:`~.answer_queue.AnswerQueue`) and
hands the responder one at a time, and it decides when an idle call hangs up. The
responder reports back what it did (``AnswerAudible``, ``ResponseFinished``); nothing
is shared between the two but the messages.
"""

from __future__ import annotations

import trio

from ..protocol import events as ev
from ..protocol.client_events import PlaybackProgress
from ..providers.base import SpeechStarted
from .answer_queue import AnswerQueue, QueueFull
from .events import ErrorEvent, ServerEvent
from .messages import (
    AnswerAudible,
    CallOver,
    EndCallRequested,
    HangUp,
    HoldExpired,
    IdleTimeout,
    InputStarted,
    Interrupt,
    Pause,
    ResponderCommand,
    ResponseFinished,
    Resume,
    TurnCeiling,
    TurnInput,
)
from .settings import CallSettings, TurnPolicy
from .turn_state import Action, Emit, EndCall, Respond, TurnState


async def run_turn_manager(
    inbox: trio.MemoryReceiveChannel[TurnInput],
    out: trio.MemorySendChannel[ServerEvent],
    commands: trio.MemorySendChannel[ResponderCommand],
    hangups: trio.MemorySendChannel[HangUp],
    settings: CallSettings | None = None,
) -> None:
    """Apply ``TurnState`` to the merged stream of STT, VAD and control events.

    Runs until every sender of ``inbox`` has closed it. A :class:`CallOver` from the
    session closes ``commands`` (after the goodbye, for a hang-up), so the responder
    finishes and closes its side; every channel given here is closed on return.
    """
    turns = TurnState(settings or CallSettings())
    answers = AnswerQueue(turns.settings.request_queue)
    call_over = False
    last_activity = trio.current_time()
    long_speech_checked: float | None = None  # the voice segment already checked

    async def act(action: Action, now: float) -> None:
        nonlocal last_activity
        if isinstance(action, Emit):
            await out.send(action.event)
        elif isinstance(action, Interrupt | Pause | Resume):
            # A greeting marked not interruptible is heard to its end (and never paused).
            if answers.in_flight and answers.interruptible and not call_over:
                await commands.send(action)
        elif isinstance(action, EndCall):
            answers.hang_up_after_queue(action.reason)
            last_activity = now
        elif call_over:
            if action.request.gate is not None:
                action.request.gate.reject()
        else:
            try:
                dispatch = answers.submit(action.request)
            except QueueFull:
                message = "too many answers pending; this turn was dropped"
                await out.send(ErrorEvent(ev.ERR_QUEUE_FULL, message, ev.INPUT_END))
                return
            if dispatch is not None:
                await commands.send(dispatch)

    async with inbox, out, commands, hangups:
        while True:
            policy = turns.policy
            deadline = turns.idle_deadline(last_activity, answers.busy or call_over)
            voice = turns.voice_since
            audible = answers.audible_since
            overlap: float | None = None  # when the caller's speech over the bot began
            if voice is not None and audible is not None and long_speech_checked != voice:
                overlap = max(voice, audible)
                # Re-check VAD-only barge-in once, when the long-speech window expires.
                deadline = min(deadline, overlap + policy.barge_in_long_speech_ms / 1000)
            # A paused answer resumes unless its barge-in is confirmed by then.
            deadline = min(deadline, turns.hold_deadline)
            # A turn held open by its transcript ends at the configured silence.
            deadline = min(deadline, turns.ceiling_deadline)
            item: TurnInput | None = None
            with trio.move_on_at(deadline):
                try:
                    item = await inbox.receive()
                except trio.EndOfChannel:
                    return
            now = trio.current_time()
            if item is None:
                long_due = (
                    overlap is not None and now >= overlap + policy.barge_in_long_speech_ms / 1000
                )
                if long_due:
                    long_speech_checked = voice
                    if turns.long_speech_interrupts(now, answers.audible_since):
                        for action in turns.interrupt("long_speech"):
                            await act(action, now)
                    continue
                if now >= turns.hold_deadline:
                    item = HoldExpired(now)
                elif now >= turns.ceiling_deadline:
                    item = TurnCeiling(now)
                elif now < turns.idle_deadline(last_activity, answers.busy):
                    continue
                else:
                    item = IdleTimeout(now)
            if isinstance(item, AnswerAudible):
                answers.audible(item.at)
            elif isinstance(item, ResponseFinished):
                following = answers.finished()
                if following is not None:
                    await commands.send(following)  # never after CallOver: none pending
                elif not call_over:
                    reason = answers.take_hangup()
                    if reason is not None:
                        hangups.send_nowait(HangUp(reason))
            elif isinstance(item, PlaybackProgress):
                if not call_over:
                    await commands.send(item)
                continue
            elif isinstance(item, EndCallRequested):
                # The agent's decision, after the answer that made it (and before its
                # ResponseFinished, on the same channel): hang up once it has played.
                answers.hang_up_after_queue(item.reason)
                continue
            elif isinstance(item, InputStarted) and not call_over:
                await commands.send(item.settings)
            elif isinstance(item, CallOver):
                # Nothing more is handed over: after a hang-up the goodbye in flight is
                # spoken to its end; otherwise it is cut too.
                call_over = True
                for dropped in answers.drop_pending():
                    if dropped.gate is not None:
                        dropped.gate.reject()
                if answers.in_flight and item.reason != "hangup":
                    await commands.send(Interrupt("call_ended"))
                await commands.aclose()
                continue
            quiet = IdleTimeout | HoldExpired | TurnCeiling | SpeechStarted | AnswerAudible
            if not isinstance(item, quiet):
                last_activity = now
            if call_over and not isinstance(item, ResponseFinished):
                continue
            for action in turns.handle(item, now, answers.speaking, answers.in_flight):
                await act(action, now)


__all__ = [
    "Action",
    "Emit",
    "EndCall",
    "Interrupt",
    "Respond",
    "TurnPolicy",
    "TurnState",
    "run_turn_manager",
]
