"""Provider failures counted where they happen, including those a retry hides.

A 429 that the LLM client retried, or a Deepgram socket that dropped and was
reopened, never reaches the caller as an error event, so an observer of the
session's events cannot count it; yet it is exactly what an operator watching a
provider's health needs. Provider clients call :func:`report`; the server binds a
sink per session with :func:`reporting_to`. The sink travels in a context
variable, which trio copies into every task a session starts, so the clients need
no reference to the server and stay usable on their own (then nothing is counted).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Protocol

log = logging.getLogger("vantum.providers")


class ProviderErrorSink(Protocol):
    def provider_error(self, provider: str, kind: str) -> None: ...


_sink: contextvars.ContextVar[ProviderErrorSink | None] = contextvars.ContextVar(
    "vantum_provider_error_sink", default=None
)


def report(provider: str, kind: str) -> None:
    """Count one failure of ``provider`` (``deepgram``, ``openai``, ``cartesia``...)."""
    sink = _sink.get()
    if sink is None:
        return
    try:
        sink.provider_error(provider, kind)
    except Exception:  # a broken metrics sink must never break a call
        log.exception("provider error sink failed")


@contextlib.contextmanager
def reporting_to(sink: ProviderErrorSink) -> Iterator[None]:
    """Send :func:`report` calls made in this context (and tasks started in it) to ``sink``."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
