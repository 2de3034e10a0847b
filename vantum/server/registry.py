"""The open calls: one cancel scope each, an idle event, and the graceful drain.

Every carrier's session registers here for as long as it runs, so the server can
count calls (capacity, ``/health``), refuse new ones while shutting down, wait
until none is open, and cancel the stragglers of a drain, all without knowing
what kind of connection a call came in on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from ..protocol import events as ev

log = logging.getLogger("vantum.server")


class SessionRegistry:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.sessions: dict[str, trio.CancelScope] = {}
        """Open calls by session id; each runs inside its scope (cancelled by a drain)."""
        self.draining = False
        self._hung_up: set[str] = set()
        self._idle = trio.Event()
        self._idle.set()
        self._opened = trio.Event()

    def refusal(self) -> tuple[str, int, str] | None:
        """Why a new call must be turned away (event type, close code, message), or None."""
        if self.draining:
            return ev.ERR_SHUTDOWN, ev.CLOSE_GOING_AWAY, "server is shutting down"
        if len(self.sessions) >= self.max_sessions:
            return (
                ev.ERR_CAPACITY,
                ev.CLOSE_TRY_AGAIN,
                f"server at capacity ({self.max_sessions} sessions); try again later",
            )
        return None

    @contextmanager
    def open(self, sid: str) -> Iterator[trio.CancelScope]:
        """Register call ``sid`` for the block, which runs in the scope it yields.

        A drain cancels that scope; ``scope.cancelled_caught`` afterwards says so.
        """
        with trio.CancelScope() as scope:
            self.sessions[sid] = scope
            self._idle = trio.Event() if self._idle.is_set() else self._idle
            self._opened.set()
            self._opened = trio.Event()
            try:
                yield scope
            finally:
                del self.sessions[sid]
                self._hung_up.discard(sid)
                if not self.sessions:
                    self._idle.set()

    def hang_up(self, sid: str) -> bool:
        """End live call ``sid`` now (the calls API); False if it is not open here."""
        scope = self.sessions.get(sid)
        if scope is None:
            return False
        self._hung_up.add(sid)
        scope.cancel()
        return True

    def was_hung_up(self, sid: str) -> bool:
        """Whether open call ``sid`` is ending because :meth:`hang_up` asked."""
        return sid in self._hung_up

    async def wait_idle(self) -> None:
        """Return once no session is open (tests and the drain use it)."""
        await self._idle.wait()

    async def wait_open(self, count: int = 1) -> None:
        """Return once at least ``count`` sessions are open (tests use it: a phone
        stream's session starts only after its ``start`` was checked)."""
        while len(self.sessions) < count:
            await self._opened.wait()

    async def drain(self, timeout: float) -> None:
        """Refuse new calls, give open ones ``timeout`` s to end, then close them (1001)."""
        self.draining = True
        log.info("draining %d session(s), up to %.1f s", len(self.sessions), timeout)
        with trio.move_on_after(timeout):
            await self._idle.wait()
        for scope in list(self.sessions.values()):
            scope.cancel()
        with trio.move_on_after(5):
            await self._idle.wait()
