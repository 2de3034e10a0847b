"""Typed client events and their validation.

Validation happens once, here, at the boundary: the pipeline only ever sees
well-formed values, and every rejection carries the error event the client gets.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from ..errors import ProtocolError
from . import events as ev
from .envelope import Envelope

MIN_RATE = 8_000
MAX_RATE = 48_000
MAX_TEXT_CHARS = 4_000

TurnMode = Literal["manual", "auto"]


@attrs.frozen
class InputStart:
    event_id: str
    sampling_rate: int
    language: str | None = None
    """None: omitted, so the agent's language (or en-US) applies."""
    voice_id: str | None = None
    encoding: str = "pcm16"
    turn_mode: TurnMode = "manual"
    silence_ms: int = 500
    name: str = ev.INPUT_START
    """The eventType the client used (``voicechat.audio.start`` is an alias): its ACK echoes it."""
    semantic: bool = False
    """``turnMode: "semantic"``: auto turns, ended early when the end-of-turn model and
    the transcript agree (docs/turn-taking.md); ``turn_mode`` is then ``auto``."""


@attrs.frozen
class InputChunk:
    event_id: str
    audio: bytes
    is_muted: bool = False
    name: str = ev.INPUT_CHUNK
    """The eventType the client used: an error about this chunk names it."""


@attrs.frozen
class InputEnd:
    event_id: str
    name: str = ev.INPUT_END
    """The eventType the client used: its ACK echoes it."""


@attrs.frozen
class TextInput:
    event_id: str
    text: str


@attrs.frozen
class DtmfInput:
    """A keypad digit pressed by a phone caller (Twilio ``dtmf``); not a browser event."""

    event_id: str
    digit: str


@attrs.frozen
class PlaybackProgress:
    """The carrier confirmed how much of an answer the caller has really heard.

    Not a browser event: a transport whose carrier acknowledges playback (Twilio
    echoes a ``mark`` once the audio before it has played) reports it, so the
    history after a barge-in holds what was heard, not what the clock guessed.
    """

    utterance_id: str
    played_ms: int
    finished: bool = False
    """The whole answer played (its last mark came back, not cleared)."""


ClientEvent = InputStart | InputChunk | InputEnd | TextInput | DtmfInput | PlaybackProgress


def parse(envelope: Envelope, session_id: str) -> ClientEvent:
    """Turn a decoded envelope into a client event, or raise ProtocolError (which
    echoes the envelope's ``eventId`` and ``sessionId``)."""
    try:
        return _parse(envelope, session_id)
    except ProtocolError as exc:
        raise exc.of_request(envelope.event_id, envelope.session_id) from None


def _parse(envelope: Envelope, session_id: str) -> ClientEvent:
    event_type = ev.INPUT_ALIASES.get(envelope.event_type, envelope.event_type)
    rt = envelope.event_type
    if event_type not in ev.CLIENT_EVENTS:
        raise ProtocolError(ev.ERR_UNKNOWN_EVENT, f"unknown eventType {envelope.event_type!r}", rt)
    if envelope.session_id != session_id:
        raise ProtocolError(
            ev.ERR_SESSION_MISMATCH,
            f"sessionId {envelope.session_id!r} does not match this connection's session",
            rt,
        )
    p = envelope.payload
    if event_type == ev.INPUT_START:
        return _parse_start(envelope.event_id, p, rt)
    if event_type == ev.INPUT_CHUNK:
        return _parse_chunk(envelope.event_id, p, rt)
    if event_type == ev.INPUT_END:
        return InputEnd(envelope.event_id, rt)
    return _parse_text(envelope.event_id, p, rt)


def _parse_start(event_id: str, p: dict[str, Any], rt: str) -> InputStart:
    rate = p.get("samplingRate")
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ProtocolError(ev.ERR_INVALID_RATE, "samplingRate must be an integer (Hz)", rt)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError(
            ev.ERR_INVALID_RATE,
            f"samplingRate {rate} is outside the supported {MIN_RATE}..{MAX_RATE} Hz",
            rt,
        )
    language = p.get("language")
    if language is not None and (not isinstance(language, str) or not 2 <= len(language) <= 16):
        raise ProtocolError(ev.ERR_INVALID_FORMAT, "language must be a tag like 'en-US'", rt)
    voice_id = p.get("voiceId")
    if voice_id is not None and not isinstance(voice_id, str):
        raise ProtocolError(ev.ERR_INVALID_FORMAT, "voiceId must be a string", rt)
    encoding = p.get("encoding", "pcm16")
    if encoding != "pcm16":
        raise ProtocolError(
            ev.ERR_INVALID_FORMAT, f"encoding {encoding!r} is not supported (use 'pcm16')", rt
        )
    mode = p.get("turnMode", "manual")
    if mode not in ("manual", "auto", "semantic"):
        raise ProtocolError(
            ev.ERR_INVALID_FORMAT, "turnMode must be 'manual', 'auto' or 'semantic'", rt
        )
    semantic = mode == "semantic"
    if semantic:
        mode = "auto"
    silence_ms = p.get("silenceMs", 500)
    if isinstance(silence_ms, bool) or not isinstance(silence_ms, int):
        raise ProtocolError(ev.ERR_INVALID_FORMAT, "silenceMs must be an integer (ms)", rt)
    if not 100 <= silence_ms <= 5000:
        raise ProtocolError(ev.ERR_INVALID_FORMAT, "silenceMs must be within 100..5000", rt)
    return InputStart(
        event_id, rate, language, voice_id, encoding, mode, silence_ms, rt, semantic=semantic
    )


def _parse_chunk(event_id: str, p: dict[str, Any], rt: str) -> InputChunk:
    audio = p.get("audio")
    if not isinstance(audio, bytes):
        raise ProtocolError(
            ev.ERR_INVALID_FORMAT, "audio must be MessagePack binary (PCM16LE mono)", rt
        )
    if len(audio) % 2:
        raise ProtocolError(
            ev.ERR_INVALID_FORMAT, "audio has an odd byte count; PCM16 needs 2 bytes a sample", rt
        )
    muted = p.get("isMuted", False)
    if not isinstance(muted, bool):
        raise ProtocolError(ev.ERR_INVALID_FORMAT, "isMuted must be a boolean", rt)
    return InputChunk(event_id, audio, muted, rt)


def _parse_text(event_id: str, p: dict[str, Any], rt: str) -> TextInput:
    text = p.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ProtocolError(ev.ERR_TEXT_INVALID, "text must be a non-empty string", rt)
    if len(text) > MAX_TEXT_CHARS:
        raise ProtocolError(ev.ERR_TEXT_INVALID, f"text longer than {MAX_TEXT_CHARS} chars", rt)
    return TextInput(event_id, text.strip())
