"""Feeds one call's events into a :class:`CallStore` without ever slowing the call.

The session's egress calls ``on_event`` synchronously for every frame it sends, so
the recorder only filters and ``send_nowait``\\ s into a bounded channel; a writer
task drains it in batches (one transaction per batch). If the store falls behind
and the channel fills, events are dropped and *counted*: the count is exposed as
``dropped``, logged, and written into the record itself when the call ends.

Use :func:`record_call` around the session::

    async with record_call(store, session_id, transport="browser", also=metrics) as rec:
        await run_session(transport, engines, options, observer=rec)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio

from ..pipeline import events as e
from ..pipeline.session import EventObserver
from ..transports.browser_wire import to_wire
from .store import NewEvent, RecordWriter

log = logging.getLogger("vantum.records")

RECORDED: tuple[type[e.ServerEvent], ...] = (
    e.TranscriptFinal,
    e.ResponseStarted,
    e.ResponseText,
    e.ResponseComplete,
    e.OutputCancelled,
    e.OutputPaused,
    e.OutputResumed,
    e.TurnMetrics,
    e.DtmfReceived,
    e.ToolCalled,
    e.ToolFinished,
    e.TransferRequested,
    e.ErrorEvent,
)
"""What a call record keeps: what was said, how fast, and what went wrong. Interim
transcripts and audio are not kept (they are large and say nothing new). Records
hold each event in its documented browser form (docs/protocol.md), so a stored call
reads like the protocol and older records stay comparable."""

DROPPED_KIND = "records.dropped"
BATCH = 64


class OutboxWaker(Protocol):
    """The webhook dispatcher, as the recorder sees it: told when rows were queued."""

    def nudge(self) -> None: ...


def is_recorded(event: e.ServerEvent) -> bool:
    return isinstance(event, RECORDED)


class CallRecorder:
    """An ``EventObserver`` for one call; ``also`` is another observer to pass events to."""

    def __init__(
        self,
        call_id: str,
        *,
        queue_size: int = 256,
        also: EventObserver | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.call_id = call_id
        self.also = also
        self.dropped = 0
        self.written = 0
        self.outcome: str | None = None
        """Set by the server to say how the call ended; otherwise inferred on exit."""
        self._clock = wall_clock
        self._tx, self._rx = trio.open_memory_channel[NewEvent](queue_size)

    def on_event(self, event: e.ServerEvent) -> None:
        if self.also is not None:
            self.also.on_event(event)
        if not is_recorded(event):
            return
        wire = to_wire(event)
        payload: Mapping[str, Any] = wire.payload
        if wire.request_type is not None:
            payload = {**payload, "requestType": wire.request_type}
        item = NewEvent(self.call_id, wire.event_type, payload, self._clock())
        try:
            self._tx.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or math.log2(self.dropped).is_integer():
                log.warning(
                    "call %s: record store behind, %d event(s) dropped", self.call_id, self.dropped
                )
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped += 1  # the call is over, or the store failed: cannot be stored

    async def run_writer(self, store: RecordWriter) -> None:
        """Write batches until :meth:`finish` closes the channel and it is drained."""
        batch: list[NewEvent] = []
        try:
            async for first in self._rx:
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._rx.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await store.add_events(batch)
                self.written += len(batch)
                batch = []
        finally:
            self.dropped += len(batch)  # a failed or interrupted batch
            self.abandon()

    def finish(self) -> None:
        """No more events: the writer drains what is queued and returns."""
        self._tx.close()

    def abandon(self) -> None:
        """The store failed: count what is queued as dropped and refuse the rest."""
        self.dropped += self._rx.statistics().current_buffer_used
        self._rx.close()


@asynccontextmanager
async def record_call(
    store: RecordWriter,
    call_id: str,
    *,
    transport: str,
    meta: Mapping[str, str] | None = None,
    also: EventObserver | None = None,
    queue_size: int = 256,
    flush_timeout: float = 5.0,
    wall_clock: Callable[[], float] = time.time,
    webhooks: Sequence[str] = (),
    waker: OutboxWaker | None = None,
) -> AsyncIterator[CallRecorder]:
    """Record the call run inside the block; a store failure never fails the call.

    The writer is shielded so a server drain (which cancels sessions) still
    flushes what was said; ``flush_timeout`` bounds how long that may take.
    ``webhooks``: URLs the store queues ``call.started`` and the terminal event for,
    in the transactions that start and end the record; ``waker`` is told when it did.
    """
    recorder = CallRecorder(call_id, queue_size=queue_size, also=also, wall_clock=wall_clock)
    writer_scope = trio.CancelScope(shield=True)

    async def writer() -> None:
        with writer_scope:
            try:
                await store.start_call(
                    call_id, at=wall_clock(), transport=transport, meta=meta, webhooks=webhooks
                )
                if webhooks and waker is not None:
                    waker.nudge()
                await recorder.run_writer(store)
                if recorder.dropped:
                    kind, payload = DROPPED_KIND, {"count": recorder.dropped}
                    await store.add_event(call_id, kind, payload, wall_clock())
                await store.end_call(call_id, recorder.outcome or "completed", at=wall_clock())
                if webhooks and waker is not None:
                    waker.nudge()
            except Exception:
                log.exception("call %s: recording failed; the call goes on unrecorded", call_id)
                recorder.abandon()
        if writer_scope.cancelled_caught:
            log.warning(
                "call %s: record flush timed out after %.1f s; %d event(s) dropped",
                call_id,
                flush_timeout,
                recorder.dropped,
            )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        try:
            yield recorder
        except trio.Cancelled:
            recorder.outcome = recorder.outcome or "cancelled"
            raise
        except BaseException:
            recorder.outcome = recorder.outcome or "error"
            raise
        finally:
            recorder.finish()
            writer_scope.deadline = trio.current_time() + flush_timeout
