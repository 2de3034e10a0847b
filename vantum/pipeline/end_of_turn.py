"""The end-of-turn judge: one call's Smart Turn inferences, off the event loop.

The audio path (the VAD's owner) hands it the last 8 s of audio when the caller
pauses; it answers with the model's probability that the turn is over. Why an
actor of its own: the model needs ~25-100 ms of CPU, which must never run on the
event loop (inline it stalled the loop 55-95 ms, issue 23), and the audio path
must keep reading audio meanwhile.

Bounded everywhere: the judge takes one :class:`PauseCheck` at a time from an
unbuffered channel, so the audio path's ``send_nowait`` succeeds only while it
is idle (**at most one inference in flight per call**; a pause that finds it
busy is offered again on the next frame); its one :class:`Verdict` slot is
drained by the audio path without waiting; and every inference of the process
goes through one :data:`~vantum.audio.smart_turn.LIMITER`.
"""

from __future__ import annotations

import attrs
import trio

from ..audio.smart_turn import SmartTurnModel, predict_off_loop


@attrs.frozen
class PauseCheck:
    """Is the turn over at this pause? ``pause`` names it (the stream time its
    speech ended); ``audio`` is 16 kHz PCM16, the last 8 s up to now."""

    pause: float
    audio: bytes


@attrs.frozen
class Verdict:
    pause: float
    probability: float


async def run_judge(
    model: SmartTurnModel,
    checks: trio.MemoryReceiveChannel[PauseCheck],
    verdicts: trio.MemorySendChannel[Verdict],
) -> None:
    """Answer each check in turn until ``checks`` is closed; closes ``verdicts``."""
    async with checks, verdicts:
        async for check in checks:
            probability = await predict_off_loop(model, check.audio)
            try:
                await verdicts.send(Verdict(check.pause, probability))
            except trio.BrokenResourceError:
                return  # the call's audio ended: nobody wants the answer


__all__ = ["PauseCheck", "Verdict", "run_judge"]
