"""Waiting for a fake's (or a recorder's) state to change, without polling or sleeps."""

from __future__ import annotations

from collections.abc import Callable

import trio


class ChangeSignal:
    """Wakes every waiter each time the owner says something changed.

    A fresh ``trio.Event`` per change: waiters re-check their condition after each
    change, so no change can be missed between a check and the wait.
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        """Return at the next change."""
        await self._event.wait()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checking it after every change."""
        while not predicate():
            await self._event.wait()
