"""Deepgram live-transcription wire format, with no sockets (sans-I/O).

Both sides of the protocol live here so the client (:mod:`.stt_deepgram`) and the
fake server (:mod:`vantum.testing.fake_deepgram`) cannot drift apart: the client
builds the listen URL and control messages and parses server messages; the fake
parses the URL and control messages and builds server messages. Hypothesis drives
the round trips directly.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..errors import STTError
from .base import SpeechStarted, TranscriptEvent, UtteranceEnd

BYTES_PER_SECOND = 32_000
"""16 kHz x 16-bit mono: how the protocol's seconds map to bytes sent."""


class MalformedMessage(STTError):
    """The server sent something that is not a Deepgram message we can read."""


# --------------------------------------------------------------- client -> server


@attrs.frozen
class ListenOptions:
    """The query parameters of one live stream (None disables a feature)."""

    model: str = "nova-3"
    language: str = "en-US"
    encoding: str = "linear16"
    sample_rate: int = 16_000
    channels: int = 1
    interim_results: bool = True
    punctuate: bool = True
    smart_format: bool = True
    endpointing_ms: int | None = 300
    utterance_end_ms: int | None = 1000
    vad_events: bool = True

    def to_query(self) -> dict[str, str]:
        def flag(value: bool) -> str:
            return "true" if value else "false"

        query = {
            "model": self.model,
            "encoding": self.encoding,
            "sample_rate": str(self.sample_rate),
            "channels": str(self.channels),
            "language": self.language,
            "interim_results": flag(self.interim_results),
            "punctuate": flag(self.punctuate),
            "smart_format": flag(self.smart_format),
            "endpointing": "false" if self.endpointing_ms is None else str(self.endpointing_ms),
            "vad_events": flag(self.vad_events),
        }
        if self.utterance_end_ms is not None:
            query["utterance_end_ms"] = str(self.utterance_end_ms)
        return query


def listen_url(base_url: str, options: ListenOptions) -> str:
    """``base_url`` with the stream's query parameters (existing ones are kept)."""
    parts = urllib.parse.urlsplit(base_url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(options.to_query())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def auth_headers(api_key: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Token {api_key}".encode())]


def _parse_bool(params: Mapping[str, str], name: str, default: bool) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if raw.lower() not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, not {raw!r}")
    return raw.lower() == "true"


def _parse_int(params: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    if raw.lower() == "false":
        return None
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number of milliseconds, not {raw!r}")
    return int(raw)


def parse_listen_query(params: Mapping[str, str]) -> ListenOptions:
    """Server side of :meth:`ListenOptions.to_query`; ValueError means HTTP 400."""
    for required in ("encoding", "sample_rate"):
        if required not in params:
            raise ValueError(f"raw audio needs the {required} parameter")
    sample_rate = _parse_int(params, "sample_rate", None)
    channels = _parse_int(params, "channels", 1)
    if sample_rate is None or channels is None:
        raise ValueError("sample_rate and channels must be numbers")
    interim = _parse_bool(params, "interim_results", False)
    utterance_end = _parse_int(params, "utterance_end_ms", None)
    if utterance_end is not None and not interim:
        raise ValueError("utterance_end_ms requires interim_results=true")
    return ListenOptions(
        model=params.get("model", "base"),
        language=params.get("language", "en"),
        encoding=params["encoding"],
        sample_rate=sample_rate,
        channels=channels,
        interim_results=interim,
        punctuate=_parse_bool(params, "punctuate", False),
        smart_format=_parse_bool(params, "smart_format", False),
        endpointing_ms=_parse_int(params, "endpointing", 10),
        utterance_end_ms=utterance_end,
        vad_events=_parse_bool(params, "vad_events", False),
    )


KEEPALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})
CONTROL_TYPES = frozenset({"KeepAlive", "Finalize", "CloseStream"})


def parse_control(text: str) -> str:
    """The ``type`` of a client control message; ValueError if it is not one."""
    try:
        msg = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("control message is not JSON") from None
    kind = msg.get("type") if isinstance(msg, dict) else None
    if kind not in CONTROL_TYPES:
        raise ValueError(f"unknown control message type {kind!r}")
    return str(kind)


# --------------------------------------------------------------- server -> client


@attrs.frozen
class Word:
    word: str
    punctuated_word: str
    start: float
    end: float
    confidence: float = 0.99


@attrs.frozen
class StreamMetadata:
    """The ``Metadata`` message the server sends just before closing normally."""

    request_id: str
    duration: float


@attrs.frozen
class UnknownMessage:
    """A well-formed message of a type this client does not use (kept, not fatal)."""

    type: str


ServerMessage = TranscriptEvent | SpeechStarted | UtteranceEnd | StreamMetadata | UnknownMessage

MODEL_INFO = {"name": "2-general-nova", "version": "2024-01-18.26916", "arch": "nova-3"}


def results_message(
    words: Sequence[Word],
    *,
    start: float,
    duration: float,
    is_final: bool,
    speech_final: bool = False,
    from_finalize: bool = False,
    request_id: str = "",
    model_uuid: str = "",
    punctuated: bool = True,
) -> dict[str, Any]:
    confidence = min((w.confidence for w in words), default=0.0)
    text = " ".join(w.punctuated_word if punctuated else w.word for w in words)
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": duration,
        "start": start,
        "is_final": is_final,
        "speech_final": speech_final,
        "from_finalize": from_finalize,
        "channel": {
            "alternatives": [
                {
                    "transcript": text,
                    "confidence": confidence,
                    "words": [attrs.asdict(w) for w in words],
                }
            ]
        },
        "metadata": {"request_id": request_id, "model_uuid": model_uuid, "model_info": MODEL_INFO},
    }


def speech_started_message(timestamp: float) -> dict[str, Any]:
    return {"type": "SpeechStarted", "channel": [0], "timestamp": timestamp}


def utterance_end_message(last_word_end: float) -> dict[str, Any]:
    return {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end}


def metadata_message(
    *, request_id: str, duration: float, created: str, sha256: str, model_uuid: str
) -> dict[str, Any]:
    return {
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": request_id,
        "sha256": sha256,
        "created": created,
        "duration": duration,
        "channels": 1,
        "models": [model_uuid],
        "model_info": {model_uuid: MODEL_INFO},
    }


def _number(msg: Mapping[str, Any], key: str) -> float:
    value = msg.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedMessage(f"Deepgram {msg.get('type')} field {key!r} is not a number")
    return float(value)


def _parse_results(msg: Mapping[str, Any], language: str) -> TranscriptEvent:
    try:
        alt = msg["channel"]["alternatives"][0]
        text = alt["transcript"]
    except (KeyError, IndexError, TypeError):
        raise MalformedMessage("Deepgram Results without channel.alternatives[0]") from None
    if not isinstance(text, str):
        raise MalformedMessage("Deepgram Results transcript is not a string")
    return TranscriptEvent(
        text=text,
        is_final=bool(msg.get("is_final", False)),
        speech_final=bool(msg.get("speech_final", False)),
        from_finalize=bool(msg.get("from_finalize", False)),
        confidence=_number(alt, "confidence"),
        start=_number(msg, "start"),
        duration=_number(msg, "duration"),
        language=language,
    )


def parse_server_message(raw: str | bytes, *, language: str = "en-US") -> ServerMessage:
    """Turn one server text frame into an event; times are the connection's own."""
    try:
        msg = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MalformedMessage("Deepgram sent a frame that is not JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise MalformedMessage("Deepgram message without a type")
    kind = msg["type"]
    if kind == "Results":
        return _parse_results(msg, language)
    if kind == "SpeechStarted":
        return SpeechStarted(timestamp=_number(msg, "timestamp"))
    if kind == "UtteranceEnd":
        return UtteranceEnd(last_word_end=_number(msg, "last_word_end"))
    if kind == "Metadata":
        return StreamMetadata(
            request_id=str(msg.get("request_id", "")), duration=_number(msg, "duration")
        )
    return UnknownMessage(type=kind)


def encode(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))
