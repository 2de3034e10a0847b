"""The STT supervisor: one recogniser running for the whole call, whatever happens.

It reads the audio path's output (16 kHz batches, ``Finalize`` markers and the
call's settings, in band) and feeds one *attempt* of the engine at a time:

- the first attempt starts with the first item, at the language the settings say
  then (a caller who opens with ``language=es`` never gets an English recogniser);
- a new language closes the current attempt's audio — the engine delivers what it
  heard and returns — and starts the next at the new language;
- an engine that fails (``STTError``) becomes an ``stt.error.provider`` event and,
  after ``restart_delay``, a new attempt: one provider outage never ends the call.

The engine is fed through an unbuffered channel, so an item is either taken by the
engine or still held here when it dies; a held ``Finalize`` is given to the next
attempt, so the turn waiting for its ``FinalizeDone`` is never stranded.
"""

from __future__ import annotations

import contextlib
import logging

import attrs
import trio

from ..errors import STTError
from ..protocol import events as ev
from ..providers.base import STTEngine, STTEvent, STTInput
from .events import ErrorEvent, ServerEvent
from .messages import SttItem, TurnInput
from .settings import CallSettings

log = logging.getLogger("vantum.audio")

RESTART_DRAIN_S = 5.0
"""How long an attempt closed for a language change may take to deliver its last
results before it is cancelled."""


@attrs.frozen
class _InputEnded:
    """The audio ended: the call is over."""


@attrs.frozen
class _Failed:
    why: str


@attrs.frozen
class _Relanguage:
    language: str


_Outcome = _InputEnded | _Failed | _Relanguage


async def run_stt(
    engine: STTEngine,
    items: trio.MemoryReceiveChannel[SttItem],
    inbox: trio.MemorySendChannel[TurnInput],
    out: trio.MemorySendChannel[ServerEvent],
    *,
    language: str = "en-US",
    restart_delay: float = 1.0,
) -> None:
    """Keep ``engine`` recognising ``items`` until they end; closes every channel it
    was given on the way out."""
    held: STTInput | None = None
    async with items, inbox, out:
        # No recogniser until there is something to recognise: a text-only call never
        # opens one, and a caller who starts with another language gets it at once.
        while held is None:
            try:
                item = await items.receive()
            except trio.EndOfChannel:
                return
            if isinstance(item, CallSettings):
                language = item.language
            else:
                held = item
        while True:
            attempt = _Attempt(engine, language, held)
            outcome = await attempt.run(items, inbox)
            held = attempt.held
            if isinstance(outcome, _InputEnded):
                return
            if isinstance(outcome, _Relanguage):
                log.info(
                    "STT language %s -> %s: restarting the recogniser", language, outcome.language
                )
                language = outcome.language
                continue
            log.warning("STT engine %s failed: %s", engine.name, outcome.why)
            message = f"speech recognition failed: {outcome.why}"
            await out.send(ErrorEvent(ev.ERR_STT, message, ev.INPUT_CHUNK))
            await trio.sleep(restart_delay)


@attrs.define
class _Attempt:
    """One run of the engine at one language."""

    engine: STTEngine
    language: str
    held: STTInput | None
    """An item read but not yet taken by the engine (given to the next attempt)."""
    _failure: str | None = None

    async def run(
        self, items: trio.MemoryReceiveChannel[SttItem], inbox: trio.MemorySendChannel[TurnInput]
    ) -> _Outcome:
        feed_tx, feed_rx = trio.open_memory_channel[STTInput](0)
        outcome: _Outcome = _InputEnded()
        async with trio.open_nursery() as nursery:
            # The engine's results go straight into the turn manager's inbox, through a
            # clone it may close when it returns (the inbox stays open for the next one):
            # no relay task, no extra hop between a final transcript and the turn.
            nursery.start_soon(self._engine, feed_rx, inbox.clone(), nursery.cancel_scope)
            # BrokenResourceError: the engine died holding nothing of ours (its task
            # reports why and cancels this attempt).
            async with feed_tx:
                with contextlib.suppress(trio.BrokenResourceError):
                    outcome = await self._pump(items, feed_tx)
            if isinstance(outcome, _Relanguage):
                # The engine finishes the audio it has, within a bound.
                nursery.cancel_scope.deadline = trio.current_time() + RESTART_DRAIN_S
        if self._failure is not None:
            return _Failed(self._failure)
        return outcome

    async def _pump(
        self, items: trio.MemoryReceiveChannel[SttItem], feed: trio.MemorySendChannel[STTInput]
    ) -> _Outcome:
        while True:
            if self.held is not None:
                await feed.send(self.held)
                self.held = None
            try:
                item = await items.receive()
            except trio.EndOfChannel:
                return _InputEnded()
            if isinstance(item, CallSettings):
                if item.language != self.language:
                    return _Relanguage(item.language)
                continue
            self.held = item

    async def _engine(
        self,
        feed: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        attempt_scope: trio.CancelScope,
    ) -> None:
        try:
            await self.engine.run(feed, events, language=self.language)
        except STTError as exc:
            self._failure = str(exc) or type(exc).__name__
            attempt_scope.cancel()
        finally:
            await feed.aclose()
            await events.aclose()


__all__ = ["run_stt"]
