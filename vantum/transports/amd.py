"""Handing Twilio's asynchronous AMD verdict from its callback to the waiting stream.

The verdict arrives as an HTTP POST (``/twilio/amd``); the call's media stream waits
for it before greeting. Both may land on different workers of ``vantum serve
--workers N`` (they share the port), so the hand-off goes through the server's call
registry: in this process (:class:`AmdVerdicts`, one bounded dict and an event per
call) or through Redis (``server/redis_calls.py``). :class:`AmdHandoff` names the two
operations so the transports need nothing from the server above them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import trio

MAX_VERDICTS = 10_000
"""AMD verdicts kept for streams that have not asked yet (oldest forgotten first)."""


class AmdHandoff(Protocol):
    """Where AMD verdicts are handed over (the server's call registry)."""

    async def report_amd(self, call_sid: str, answered_by: str) -> None:
        """Twilio's ``AnsweredBy`` for ``call_sid``, for whichever stream waits for it
        (now or later). Never raises."""
        ...

    async def wait_amd(self, call_sid: str, timeout_s: float) -> str | None:
        """The verdict for ``call_sid`` (taken: one waiter gets it), waiting up to
        ``timeout_s``; None if none came."""
        ...


class AmdVerdicts:
    """``CallSid`` -> Twilio's ``AnsweredBy``, within one process."""

    def __init__(self, max_entries: int = MAX_VERDICTS) -> None:
        self.max_entries = max_entries
        self._answers: OrderedDict[str, str] = OrderedDict()
        self._events: dict[str, trio.Event] = {}

    def report(self, call_sid: str, answered_by: str) -> None:
        self._answers[call_sid] = answered_by
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)
        event = self._events.pop(call_sid, None)
        if event is not None:
            event.set()

    async def wait(self, call_sid: str, timeout_s: float) -> str | None:
        """The verdict for ``call_sid``, waiting up to ``timeout_s``; None if none came."""
        if call_sid not in self._answers:
            event = self._events.setdefault(call_sid, trio.Event())
            try:
                with trio.move_on_after(timeout_s):
                    await event.wait()
            finally:  # also when cancelled (the verdict came through Redis first)
                if self._events.get(call_sid) is event:
                    del self._events[call_sid]
        return self._answers.pop(call_sid, None)

    # AmdHandoff, for a process that is the whole cluster.
    async def report_amd(self, call_sid: str, answered_by: str) -> None:
        self.report(call_sid, answered_by)

    async def wait_amd(self, call_sid: str, timeout_s: float) -> str | None:
        return await self.wait(call_sid, timeout_s)
