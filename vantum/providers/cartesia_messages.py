"""Cartesia TTS WebSocket messages, both directions, with no I/O.

The engine (:mod:`vantum.providers.tts_cartesia`) and the fake server
(:mod:`vantum.testing.fake_cartesia`) share these codecs, so a field renamed on
one side cannot silently drift from the other, and hypothesis can drive the
parsers directly. Parsing is strict and total: text either becomes a typed
object or raises :class:`CartesiaMessageError` whose message is fit to be sent
back to the peer.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from ..errors import VantumError

DEFAULT_URL = "wss://api.cartesia.ai/tts/websocket"
DEFAULT_VERSION = "2025-04-16"
STRUCTURED_ERRORS_SINCE = "2026-03-01"
"""API versions from this date on get JSON error objects with title/error_code."""


_T = TypeVar("_T")


class CartesiaMessageError(VantumError, ValueError):
    """A message did not follow the Cartesia wire format."""


# ----------------------------------------------------------------- handshake


def build_url(base: str, api_key: str, version: str) -> str:
    """Add the auth query parameters, keeping any the base URL already carries."""
    parts = urlsplit(base)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("api_key", "cartesia_version")]
    query += [("api_key", api_key), ("cartesia_version", version)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def handshake_credentials(
    target: str, headers: Iterable[tuple[bytes, bytes]]
) -> tuple[str | None, str | None]:
    """``(api_key, version)`` from a handshake; query parameters win over headers."""
    query = dict(parse_qsl(urlsplit(target).query))
    lowered = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
    api_key = query.get("api_key") or lowered.get("x-api-key")
    version = query.get("cartesia_version") or lowered.get("cartesia-version")
    return api_key, version


# ------------------------------------------------------------------ requests

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
"""Rates Cartesia produces ``pcm_s16le`` at."""


@attrs.frozen
class OutputFormat:
    container: str = "raw"
    encoding: str = "pcm_s16le"
    sample_rate: int = 24_000


@attrs.frozen
class GenerationRequest:
    """One transcript piece; pieces sharing ``context_id`` form one utterance."""

    context_id: str | None
    transcript: str
    model_id: str
    voice_id: str
    output_format: OutputFormat = OutputFormat()
    language: str | None = "en"
    continue_: bool = False
    add_timestamps: bool = False
    max_buffer_delay_ms: int | None = None
    flush: bool = False

    def settings(self) -> tuple[object, ...]:
        """Fields Cartesia requires to stay identical across a context's requests."""
        return (self.model_id, self.voice_id, self.output_format, self.language)


@attrs.frozen
class CancelRequest:
    context_id: str


Request = GenerationRequest | CancelRequest


def encode_request(request: Request) -> str:
    if isinstance(request, CancelRequest):
        return json.dumps({"context_id": request.context_id, "cancel": True})
    fmt = request.output_format
    obj: dict[str, Any] = {
        "model_id": request.model_id,
        "transcript": request.transcript,
        "voice": {"mode": "id", "id": request.voice_id},
        "output_format": {
            "container": fmt.container,
            "encoding": fmt.encoding,
            "sample_rate": fmt.sample_rate,
        },
        "continue": request.continue_,
        "add_timestamps": request.add_timestamps,
    }
    if request.context_id is not None:
        obj["context_id"] = request.context_id
    if request.language is not None:
        obj["language"] = request.language
    if request.max_buffer_delay_ms is not None:
        obj["max_buffer_delay_ms"] = request.max_buffer_delay_ms
    if request.flush:
        obj["flush"] = True
    return json.dumps(obj)


def parse_request(text: str | bytes) -> Request:
    obj = _load_object(text)
    if obj.get("cancel") is True:
        return CancelRequest(_field(obj, "context_id", str))
    voice = _field(obj, "voice", dict)
    if voice.get("mode", "id") != "id":
        raise CartesiaMessageError(f"unsupported voice mode {voice.get('mode')!r}")
    fmt = _field(obj, "output_format", dict)
    max_delay = obj.get("max_buffer_delay_ms")
    if max_delay is not None and (not _is_int(max_delay) or not 0 <= max_delay <= 5000):
        raise CartesiaMessageError("max_buffer_delay_ms must be an integer in 0..5000")
    context_id = obj.get("context_id")
    if context_id is not None and not isinstance(context_id, str):
        raise CartesiaMessageError("context_id must be a string")
    language = obj.get("language")
    if language is not None and not isinstance(language, str):
        raise CartesiaMessageError("language must be a string")
    return GenerationRequest(
        context_id=context_id,
        transcript=_field(obj, "transcript", str),
        model_id=_field(obj, "model_id", str),
        voice_id=_field(voice, "id", str),
        output_format=OutputFormat(
            container=_field(fmt, "container", str),
            encoding=_field(fmt, "encoding", str),
            sample_rate=_field(fmt, "sample_rate", int),
        ),
        language=language,
        continue_=_optional_bool(obj, "continue"),
        add_timestamps=_optional_bool(obj, "add_timestamps"),
        max_buffer_delay_ms=max_delay,
        flush=_optional_bool(obj, "flush"),
    )


# ----------------------------------------------------------------- responses


@attrs.frozen
class AudioChunk:
    context_id: str
    pcm: bytes
    """Already base64-decoded."""
    step_time: float = 0.0


@attrs.frozen
class Timestamps:
    """Word timings in seconds from the start of the context's audio."""

    context_id: str
    words: tuple[str, ...]
    start: tuple[float, ...]
    end: tuple[float, ...]


@attrs.frozen
class Done:
    context_id: str


@attrs.frozen
class FlushDone:
    context_id: str
    flush_id: int


@attrs.frozen
class ErrorResponse:
    """An error for one context (or the connection, when ``context_id`` is None).

    Legacy API versions send the text in ``error``; newer ones send
    ``title``/``message``/``error_code``. Both decode to this.
    """

    context_id: str | None
    message: str
    status_code: int = 500
    title: str | None = None
    error_code: str | None = None

    def describe(self) -> str:
        return f"{self.title}: {self.message}" if self.title else self.message


@attrs.frozen
class OtherResponse:
    """A response type we do not act on (e.g. ``phoneme_timestamps``)."""

    type: str
    context_id: str | None


Response = AudioChunk | Timestamps | Done | FlushDone | ErrorResponse | OtherResponse


def encode_response(response: Response) -> str:
    obj: dict[str, Any]
    if isinstance(response, AudioChunk):
        obj = {
            "type": "chunk",
            "data": base64.b64encode(response.pcm).decode("ascii"),
            "done": False,
            "status_code": 206,
            "step_time": response.step_time,
        }
    elif isinstance(response, Timestamps):
        words = {"words": list(response.words), "start": list(response.start)}
        words["end"] = list(response.end)
        obj = {"type": "timestamps", "done": False, "status_code": 206, "word_timestamps": words}
    elif isinstance(response, Done):
        obj = {"type": "done", "done": True, "status_code": 200}
    elif isinstance(response, FlushDone):
        obj = {"type": "flush_done", "done": False, "flush_done": True, "status_code": 206}
        obj["flush_id"] = response.flush_id
    elif isinstance(response, ErrorResponse):
        obj = {"type": "error", "done": True, "status_code": response.status_code}
        if response.title is None and response.error_code is None:
            obj["error"] = response.message
        else:
            obj |= {"title": response.title or "", "message": response.message}
            obj["error_code"] = response.error_code
    else:
        obj = {"type": response.type, "done": False, "status_code": 206}
    if response.context_id is not None:
        obj["context_id"] = response.context_id
    return json.dumps(obj)


def parse_response(text: str | bytes) -> Response:
    obj = _load_object(text)
    kind = _field(obj, "type", str)
    context_id = obj.get("context_id")
    if context_id is not None and not isinstance(context_id, str):
        raise CartesiaMessageError("context_id must be a string")
    if kind == "error":
        return _parse_error(obj, context_id)
    if context_id is None:
        if kind not in ("chunk", "timestamps", "done", "flush_done"):
            return OtherResponse(kind, None)
        raise CartesiaMessageError(f"{kind} response without context_id")
    if kind == "chunk":
        step = obj.get("step_time", 0.0)
        if not isinstance(step, int | float) or isinstance(step, bool):
            raise CartesiaMessageError("step_time must be a number")
        return AudioChunk(context_id, _b64(_field(obj, "data", str)), float(step))
    if kind == "timestamps":
        return _parse_timestamps(_field(obj, "word_timestamps", dict), context_id)
    if kind == "done":
        return Done(context_id)
    if kind == "flush_done":
        return FlushDone(context_id, _field(obj, "flush_id", int))
    return OtherResponse(kind, context_id)


def _parse_error(obj: Mapping[str, Any], context_id: str | None) -> ErrorResponse:
    status = obj.get("status_code", 500)
    if not _is_int(status):
        raise CartesiaMessageError("status_code must be an integer")
    if "message" in obj:
        title, code = obj.get("title"), obj.get("error_code")
        if not (title is None or isinstance(title, str)) or not (
            code is None or isinstance(code, str)
        ):
            raise CartesiaMessageError("title and error_code must be strings")
        return ErrorResponse(context_id, _field(obj, "message", str), status, title or None, code)
    return ErrorResponse(context_id, _field(obj, "error", str), status)


def _parse_timestamps(ts: Mapping[str, Any], context_id: str) -> Timestamps:
    words = _field(ts, "words", list)
    start = _field(ts, "start", list)
    end = _field(ts, "end", list)
    if not len(words) == len(start) == len(end):
        raise CartesiaMessageError("word_timestamps lists differ in length")
    if not all(isinstance(w, str) for w in words):
        raise CartesiaMessageError("word_timestamps.words must be strings")
    numbers = [*start, *end]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers):
        raise CartesiaMessageError("word_timestamps times must be numbers")
    return Timestamps(
        context_id, tuple(words), tuple(float(x) for x in start), tuple(float(x) for x in end)
    )


# ------------------------------------------------------------------- helpers


def _load_object(text: str | bytes) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CartesiaMessageError(f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CartesiaMessageError("message must be a JSON object")
    return obj


def _field(obj: Mapping[str, Any], name: str, kind: type[_T]) -> _T:
    if name not in obj:
        raise CartesiaMessageError(f"missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CartesiaMessageError(f"field {name!r} must be of type {kind.__name__}")
    return value


def _optional_bool(obj: Mapping[str, Any], name: str) -> bool:
    value = obj.get(name, False)
    if not isinstance(value, bool):
        raise CartesiaMessageError(f"field {name!r} must be a boolean")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise CartesiaMessageError("chunk data is not valid base64") from None
