"""One error hierarchy for the whole server.

Every error we raise on purpose derives from :class:`VantumError`, so the session
boundary can tell "a known failure we report to the client" from "a bug".
"""

from __future__ import annotations

import enum


class VantumError(Exception):
    """Root of every error Vantum raises deliberately."""


class ProtocolError(VantumError):
    """A client frame broke the wire protocol.

    ``event_type`` is the error event sent back (``<domain>.error.<kind>``) and
    ``request_type`` the eventType of the offending frame, when it could be read;
    ``event_id`` and ``session_id`` are that frame's, when it could be read (the
    error echoes them).
    """

    def __init__(
        self,
        event_type: str,
        message: str,
        request_type: str = "unknown",
        *,
        event_id: str | None = None,
        session_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.event_type = event_type
        self.message = message
        self.request_type = request_type
        self.event_id = event_id
        self.session_id = session_id

    def of_request(self, event_id: str, session_id: str) -> ProtocolError:
        """This error, echoing the ids of the frame that caused it."""
        return ProtocolError(
            self.event_type,
            self.message,
            self.request_type,
            event_id=event_id,
            session_id=session_id,
        )


class ProviderError(VantumError):
    """A speech or language provider failed."""


class STTError(ProviderError):
    """Speech-to-text failed for good (after any reconnect attempts)."""


class LLMErrorKind(enum.Enum):
    """Error classes that decide retry policy and the spoken fallback."""

    AUTH = "auth"
    RATE_LIMIT = "rate_limit"
    NETWORK = "network"
    FATAL = "fatal"

    @property
    def retryable(self) -> bool:
        return self in (LLMErrorKind.RATE_LIMIT, LLMErrorKind.NETWORK)


class LLMError(ProviderError):
    """The language model request failed; ``kind`` says whether a retry may help."""

    def __init__(self, kind: LLMErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


class TTSError(ProviderError):
    """Speech synthesis failed for one context (the connection may still be usable)."""


class ConfigError(VantumError):
    """Configuration is missing or contradictory."""
