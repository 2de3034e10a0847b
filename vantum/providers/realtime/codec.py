"""Sans-I/O codec for OpenAI's Realtime API, GA dialect: typed events ⇄ JSON text.

The official SDK's realtime client is asyncio-only, so Vantum speaks the protocol
itself over trio-websocket; its wire form exists only here. Every event is a frozen
attrs value carrying what Vantum (or the fake server in :mod:`vantum.testing`) needs;
``encode_*`` writes the complete GA shape (``tests/test_realtime_codec.py`` checks
each against the SDK's pydantic models, ``openai.types.realtime``), ``decode_*``
reads it back and raises :class:`InvalidEvent` for text that is not one.

Both directions are here, for both ends: the connection encodes client events and
decodes server events; the fake decodes client events (with the server's own
validation errors) and encodes server events. Audio is base64 PCM16 on the wire and
``bytes`` everywhere else.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from ..base import ToolSchema

PCM_RATE = 24_000
"""GA ``audio/pcm`` is PCM16LE mono at 24 kHz (the only rate the API accepts)."""


class InvalidEvent(ValueError):
    """Text that is not a valid event; ``code``/``param`` as the server reports them."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


# ----------------------------------------------------------------------------- session


@attrs.frozen
class ServerVad:
    """``turn_detection: {"type": "server_vad", ...}``: the server ends turns on energy."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True


@attrs.frozen
class SessionConfig:
    """What ``session.update`` sets (Vantum always sends all of it)."""

    model: str = "gpt-realtime"
    instructions: str = ""
    voice: str = "marin"
    turn_detection: ServerVad | None = None
    """None: manual turns (the client commits and asks for each response)."""
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    """Transcribe the caller's audio items (the model itself needs no transcript)."""
    tools: tuple[ToolSchema, ...] = ()


# ----------------------------------------------------------------------------- client


@attrs.frozen
class TextItem:
    """A ``message`` item of text (``input_text`` for user/system, ``output_text`` for
    the assistant): typed turns and replayed history."""

    role: Literal["user", "assistant", "system"]
    text: str


@attrs.frozen
class FunctionCallItem:
    call_id: str
    name: str
    arguments: str


@attrs.frozen
class FunctionOutputItem:
    call_id: str
    output: str


Item = TextItem | FunctionCallItem | FunctionOutputItem


@attrs.frozen
class SessionUpdate:
    session: SessionConfig


@attrs.frozen
class AudioAppend:
    pcm: bytes


@attrs.frozen
class AudioCommit:
    pass


@attrs.frozen
class AudioClear:
    pass


@attrs.frozen
class ItemCreate:
    item: Item
    item_id: str | None = None


@attrs.frozen
class ItemTruncate:
    item_id: str
    audio_end_ms: int
    content_index: int = 0


@attrs.frozen
class ItemDelete:
    item_id: str


@attrs.frozen
class ResponseCreate:
    pass


@attrs.frozen
class ResponseCancel:
    response_id: str | None = None


ClientEvent = (
    SessionUpdate
    | AudioAppend
    | AudioCommit
    | AudioClear
    | ItemCreate
    | ItemTruncate
    | ItemDelete
    | ResponseCreate
    | ResponseCancel
)


def _session_json(s: SessionConfig) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": PCM_RATE}
    audio_in: dict[str, Any] = {"format": pcm}
    if s.turn_detection is None:
        audio_in["turn_detection"] = None
    else:
        vad = s.turn_detection
        audio_in["turn_detection"] = {
            "type": "server_vad",
            "threshold": vad.threshold,
            "prefix_padding_ms": vad.prefix_padding_ms,
            "silence_duration_ms": vad.silence_duration_ms,
            "create_response": vad.create_response,
            "interrupt_response": vad.interrupt_response,
        }
    audio_in["transcription"] = (
        None if s.transcription_model is None else {"model": s.transcription_model}
    )
    return {
        "type": "realtime",
        "model": s.model,
        "instructions": s.instructions,
        "output_modalities": ["audio"],
        "audio": {"input": audio_in, "output": {"format": pcm, "voice": s.voice}},
        "tools": [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            }
            for t in s.tools
        ],
        "tool_choice": "auto",
    }


def _item_json(item: Item, item_id: str | None) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(item, TextItem):
        kind = "output_text" if item.role == "assistant" else "input_text"
        out = {
            "type": "message",
            "role": item.role,
            "content": [{"type": kind, "text": item.text}],
        }
    elif isinstance(item, FunctionCallItem):
        out = {
            "type": "function_call",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
        }
    else:
        out = {"type": "function_call_output", "call_id": item.call_id, "output": item.output}
    if item_id is not None:
        out["id"] = item_id
    return out


def encode_client(event: ClientEvent, event_id: str | None = None) -> str:
    """The JSON text of one client event (``event_id`` ties a later error to it)."""
    msg: dict[str, Any]
    if isinstance(event, SessionUpdate):
        msg = {"type": "session.update", "session": _session_json(event.session)}
    elif isinstance(event, AudioAppend):
        msg = {"type": "input_audio_buffer.append", "audio": _b64(event.pcm)}
    elif isinstance(event, AudioCommit):
        msg = {"type": "input_audio_buffer.commit"}
    elif isinstance(event, AudioClear):
        msg = {"type": "input_audio_buffer.clear"}
    elif isinstance(event, ItemCreate):
        msg = {"type": "conversation.item.create", "item": _item_json(event.item, event.item_id)}
    elif isinstance(event, ItemTruncate):
        msg = {
            "type": "conversation.item.truncate",
            "item_id": event.item_id,
            "content_index": event.content_index,
            "audio_end_ms": event.audio_end_ms,
        }
    elif isinstance(event, ItemDelete):
        msg = {"type": "conversation.item.delete", "item_id": event.item_id}
    elif isinstance(event, ResponseCreate):
        msg = {"type": "response.create"}
    else:
        msg = {"type": "response.cancel"}
        if event.response_id is not None:
            msg["response_id"] = event.response_id
    if event_id is not None:
        msg["event_id"] = event_id
    return json.dumps(msg, separators=(",", ":"))


def _b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode("ascii")


def _unb64(text: Any, param: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidEvent(f"Invalid type for '{param}': expected a string.", param=param)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent(
            f"Invalid '{param}'. Expected base64-encoded audio.", param=param
        ) from None


def _obj(text: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise InvalidEvent(
            "We could not parse the JSON body of your request.", code="invalid_json"
        ) from None
    if not isinstance(msg, dict):
        raise InvalidEvent("Expected an object at the top level.", code="invalid_json")
    return msg


def _get(msg: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    param = f"{where}{key}"
    if key not in msg:
        raise InvalidEvent(
            f"Missing required parameter: '{param}'.",
            code="missing_required_parameter",
            param=param,
        )
    value = msg[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        raise InvalidEvent(f"Invalid type for '{param}'.", code="invalid_type", param=param)
    return value


def _opt(msg: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    if msg.get(key) is None:
        return default
    return _get(msg, key, kind)


CLIENT_TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
)


def decode_client(text: str | bytes) -> tuple[ClientEvent, str | None]:
    """A client event and its ``event_id``, validated as the server validates it."""
    msg = _obj(text)
    kind = _get(msg, "type", str)
    event_id = msg.get("event_id") if isinstance(msg.get("event_id"), str) else None
    if kind not in CLIENT_TYPES:
        supported = ", ".join(f"'{t}'" for t in CLIENT_TYPES)
        raise InvalidEvent(
            f"Invalid value: '{kind}'. Supported values are: {supported}.", param="type"
        )
    event: ClientEvent
    if kind == "session.update":
        event = SessionUpdate(_decode_session(_get(msg, "session", dict)))
    elif kind == "input_audio_buffer.append":
        event = AudioAppend(_unb64(msg.get("audio"), "audio"))
    elif kind == "input_audio_buffer.commit":
        event = AudioCommit()
    elif kind == "input_audio_buffer.clear":
        event = AudioClear()
    elif kind == "conversation.item.create":
        item = _get(msg, "item", dict)
        event = ItemCreate(_decode_item(item), item.get("id"))
    elif kind == "conversation.item.truncate":
        end = _get(msg, "audio_end_ms", int)
        if end < 0:
            raise InvalidEvent(
                f"Invalid 'audio_end_ms': integer below minimum value. Expected a value "
                f">= 0, but got {end} instead.",
                code="integer_below_min_value",
                param="audio_end_ms",
            )
        event = ItemTruncate(_get(msg, "item_id", str), end, _get(msg, "content_index", int))
    elif kind == "conversation.item.delete":
        event = ItemDelete(_get(msg, "item_id", str))
    elif kind == "response.create":
        event = ResponseCreate()
    else:
        event = ResponseCancel(_opt(msg, "response_id", str, None))
    return event, event_id


def _decode_session(s: Mapping[str, Any]) -> SessionConfig:
    if s.get("type") != "realtime":
        raise InvalidEvent(
            "Missing required parameter: 'session.type'.",
            code="missing_required_parameter",
            param="session.type",
        )
    audio = s.get("audio") or {}
    audio_in = audio.get("input") or {}
    audio_out = audio.get("output") or {}
    for where, part in (("input", audio_in), ("output", audio_out)):
        fmt = part.get("format")
        if fmt is not None and (fmt.get("type") != "audio/pcm" or fmt.get("rate") != PCM_RATE):
            raise InvalidEvent(
                f"Invalid 'session.audio.{where}.format': only audio/pcm at 24000 Hz is "
                "supported by this server.",
                param=f"session.audio.{where}.format",
            )
    vad: ServerVad | None = None
    td = audio_in.get("turn_detection")
    if td is not None:
        if td.get("type") != "server_vad":
            raise InvalidEvent(
                "Invalid 'session.audio.input.turn_detection.type': only server_vad is "
                "supported by this server.",
                param="session.audio.input.turn_detection.type",
            )
        threshold = float(td.get("threshold", 0.5))
        if not 0.0 <= threshold <= 1.0:
            raise InvalidEvent(
                "Invalid 'session.audio.input.turn_detection.threshold': expected a value "
                "between 0.0 and 1.0.",
                param="session.audio.input.turn_detection.threshold",
            )
        vad = ServerVad(
            threshold,
            int(td.get("prefix_padding_ms", 300)),
            int(td.get("silence_duration_ms", 500)),
            bool(td.get("create_response", True)),
            bool(td.get("interrupt_response", True)),
        )
    transcription = audio_in.get("transcription")
    tools = []
    for i, t in enumerate(s.get("tools") or ()):
        if not isinstance(t, dict) or t.get("type") != "function" or not t.get("name"):
            raise InvalidEvent(
                f"Invalid 'session.tools[{i}]': expected a function tool with a name.",
                param=f"session.tools[{i}]",
            )
        tools.append(ToolSchema(t["name"], t.get("description", ""), t.get("parameters") or {}))
    return SessionConfig(
        model=str(s.get("model", "gpt-realtime")),
        instructions=str(s.get("instructions", "")),
        voice=str(audio_out.get("voice", "marin")),
        turn_detection=vad,
        transcription_model=None if not transcription else str(transcription.get("model")),
        tools=tuple(tools),
    )


def _decode_item(item: Mapping[str, Any]) -> Item:
    kind = _get(item, "type", str, "item.")
    if kind == "message":
        role = _get(item, "role", str, "item.")
        if role not in ("user", "assistant", "system"):
            raise InvalidEvent(f"Invalid value: '{role}'.", param="item.role")
        content = _get(item, "content", list, "item.")
        texts = [c.get("text", "") for c in content if isinstance(c, dict)]
        return TextItem(role, "".join(str(t) for t in texts))
    if kind == "function_call":
        return FunctionCallItem(
            _get(item, "call_id", str, "item."),
            _get(item, "name", str, "item."),
            _get(item, "arguments", str, "item."),
        )
    if kind == "function_call_output":
        return FunctionOutputItem(
            _get(item, "call_id", str, "item."), _get(item, "output", str, "item.")
        )
    raise InvalidEvent(f"Invalid value: '{kind}'.", param="item.type")


# ----------------------------------------------------------------------------- server


@attrs.frozen
class SessionCreated:
    session_id: str
    model: str
    expires_at: int


@attrs.frozen
class SessionUpdated:
    session: SessionConfig


@attrs.frozen
class SpeechStarted:
    item_id: str
    audio_start_ms: int


@attrs.frozen
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@attrs.frozen
class InputCommitted:
    item_id: str
    previous_item_id: str | None = None


@attrs.frozen
class InputCleared:
    pass


ItemKind = Literal["message", "function_call", "function_call_output"]
Role = Literal["user", "assistant", "system"]


@attrs.frozen
class ItemAdded:
    """``conversation.item.added`` (``done=False``) or ``conversation.item.done``."""

    item_id: str
    kind: ItemKind
    role: Role | None = None
    previous_item_id: str | None = None
    done: bool = False


@attrs.frozen
class UserTranscriptDelta:
    item_id: str
    delta: str


@attrs.frozen
class UserTranscriptCompleted:
    item_id: str
    transcript: str


@attrs.frozen
class ResponseCreated:
    response_id: str


@attrs.frozen
class OutputItemAdded:
    """``response.output_item.added`` (``done=False``) or ``.done``."""

    response_id: str
    output_index: int
    item_id: str
    kind: ItemKind
    call_id: str | None = None
    name: str | None = None
    done: bool = False
    status: Literal["in_progress", "completed", "incomplete"] = "in_progress"


@attrs.frozen
class ContentPart:
    """``response.content_part.added`` / ``.done`` (an audio part and its transcript)."""

    response_id: str
    item_id: str
    output_index: int
    content_index: int
    transcript: str = ""
    done: bool = False


@attrs.frozen
class AudioDelta:
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    pcm: bytes


@attrs.frozen
class AudioDone:
    response_id: str
    item_id: str
    output_index: int
    content_index: int


@attrs.frozen
class TranscriptDelta:
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str


@attrs.frozen
class TranscriptDone:
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    transcript: str


@attrs.frozen
class ArgumentsDelta:
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


@attrs.frozen
class ArgumentsDone:
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


@attrs.frozen
class DoneItem:
    """One output item as ``response.done`` lists it (without audio)."""

    item_id: str
    kind: ItemKind
    status: str = "completed"
    transcript: str = ""
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None


ResponseStatus = Literal["completed", "cancelled", "failed", "incomplete", "in_progress"]


@attrs.frozen
class ResponseDone:
    response_id: str
    status: ResponseStatus
    reason: str | None = None
    """``turn_detected``/``client_cancelled`` (cancelled), ``max_output_tokens``..."""
    output: tuple[DoneItem, ...] = ()
    error_code: str | None = None
    error_message: str | None = None

    @property
    def calls(self) -> tuple[DoneItem, ...]:
        return tuple(i for i in self.output if i.kind == "function_call")


@attrs.frozen
class ItemTruncated:
    item_id: str
    content_index: int
    audio_end_ms: int


@attrs.frozen
class ItemDeleted:
    item_id: str


@attrs.frozen
class ErrorReport:
    """``error``: most are recoverable and the session stays open."""

    type: str
    message: str
    code: str | None = None
    param: str | None = None
    event_id: str | None = None
    """The client event that caused it, when the client gave one an id."""


@attrs.frozen
class Unknown:
    """An event type Vantum does not act on (``rate_limits.updated``...)."""

    type: str


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | InputCleared
    | ItemAdded
    | UserTranscriptDelta
    | UserTranscriptCompleted
    | ResponseCreated
    | OutputItemAdded
    | ContentPart
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | ArgumentsDelta
    | ArgumentsDone
    | ResponseDone
    | ItemTruncated
    | ItemDeleted
    | ErrorReport
    | Unknown
)


def _session_object(s: SessionConfig, session_id: str, expires_at: int) -> dict[str, Any]:
    out = _session_json(s)
    out.update(
        {
            "id": session_id,
            "object": "realtime.session",
            "expires_at": expires_at,
            "max_output_tokens": "inf",
            "tracing": None,
            "prompt": None,
            "include": None,
        }
    )
    return out


def _item_object(
    item_id: str,
    kind: ItemKind,
    *,
    role: Role | None = "assistant",
    status: str = "in_progress",
    transcript: str | None = None,
    call_id: str | None = None,
    name: str | None = None,
    arguments: str = "",
) -> dict[str, Any]:
    base: dict[str, Any] = {"id": item_id, "object": "realtime.item", "type": kind}
    if kind == "message":
        content: list[dict[str, Any]] = []
        if transcript is not None:
            part = "output_audio" if role == "assistant" else "input_audio"
            content.append({"type": part, "transcript": transcript})
        base.update({"status": status, "role": role, "content": content})
    elif kind == "function_call":
        base.update({"status": status, "call_id": call_id, "name": name, "arguments": arguments})
    else:
        base.update({"call_id": call_id, "output": arguments})
    return base


def _response_object(
    response_id: str,
    status: str,
    output: Sequence[DoneItem] = (),
    reason: str | None = None,
    error: tuple[str | None, str | None] | None = None,
) -> dict[str, Any]:
    details: dict[str, Any] | None = None
    if status in ("cancelled", "incomplete"):
        details = {"type": status, "reason": reason}
    elif status == "failed":
        code, message = error or (None, None)
        details = {
            "type": "failed",
            "error": {"type": "server_error", "code": code, "message": message},
        }
    return {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": details,
        "output": [
            _item_object(
                i.item_id,
                i.kind,
                status=i.status,
                transcript=i.transcript,
                call_id=i.call_id,
                name=i.name,
                arguments=i.arguments or "",
            )
            for i in output
        ],
        "conversation_id": "conv_vantum_fake",
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "voice": "marin"}},
        "usage": None,
        "metadata": None,
    }


def encode_server(event: ServerEvent, event_id: str) -> str:
    """The JSON text of one server event (used by the fake server)."""
    e = event
    msg: dict[str, Any]
    if isinstance(e, SessionCreated):
        session = _session_object(SessionConfig(model=e.model), e.session_id, e.expires_at)
        msg = {"type": "session.created", "session": session}
    elif isinstance(e, SessionUpdated):
        msg = {"type": "session.updated", "session": _session_object(e.session, "sess_fake", 0)}
    elif isinstance(e, SpeechStarted):
        msg = {
            "type": "input_audio_buffer.speech_started",
            "audio_start_ms": e.audio_start_ms,
            "item_id": e.item_id,
        }
    elif isinstance(e, SpeechStopped):
        msg = {
            "type": "input_audio_buffer.speech_stopped",
            "audio_end_ms": e.audio_end_ms,
            "item_id": e.item_id,
        }
    elif isinstance(e, InputCommitted):
        msg = {
            "type": "input_audio_buffer.committed",
            "previous_item_id": e.previous_item_id,
            "item_id": e.item_id,
        }
    elif isinstance(e, InputCleared):
        msg = {"type": "input_audio_buffer.cleared"}
    elif isinstance(e, ItemAdded):
        item = _item_object(
            e.item_id,
            e.kind,
            role=e.role,
            status="completed" if e.done else "in_progress",
            transcript=None if e.role != "user" else "",
        )
        kind = "conversation.item.done" if e.done else "conversation.item.added"
        msg = {"type": kind, "previous_item_id": e.previous_item_id, "item": item}
    elif isinstance(e, UserTranscriptDelta):
        msg = {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": e.item_id,
            "content_index": 0,
            "delta": e.delta,
        }
    elif isinstance(e, UserTranscriptCompleted):
        msg = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": e.item_id,
            "content_index": 0,
            "transcript": e.transcript,
            "usage": {"type": "duration", "seconds": 1.0},
        }
    elif isinstance(e, ResponseCreated):
        msg = {
            "type": "response.created",
            "response": _response_object(e.response_id, "in_progress"),
        }
    elif isinstance(e, OutputItemAdded):
        status = e.status if e.done else "in_progress"
        item = _item_object(
            e.item_id,
            e.kind,
            status=status,
            call_id=e.call_id,
            name=e.name,
            transcript=None,
        )
        kind = "response.output_item.done" if e.done else "response.output_item.added"
        msg = {
            "type": kind,
            "response_id": e.response_id,
            "output_index": e.output_index,
            "item": item,
        }
    elif isinstance(e, ContentPart):
        msg = {
            "type": "response.content_part.done" if e.done else "response.content_part.added",
            **_where(e),
            "part": {"type": "audio", "transcript": e.transcript},
        }
    elif isinstance(e, AudioDelta):
        msg = {"type": "response.output_audio.delta", **_where(e), "delta": _b64(e.pcm)}
    elif isinstance(e, AudioDone):
        msg = {"type": "response.output_audio.done", **_where(e)}
    elif isinstance(e, TranscriptDelta):
        msg = {"type": "response.output_audio_transcript.delta", **_where(e), "delta": e.delta}
    elif isinstance(e, TranscriptDone):
        msg = {
            "type": "response.output_audio_transcript.done",
            **_where(e),
            "transcript": e.transcript,
        }
    elif isinstance(e, ArgumentsDelta):
        msg = {
            "type": "response.function_call_arguments.delta",
            "response_id": e.response_id,
            "item_id": e.item_id,
            "output_index": e.output_index,
            "call_id": e.call_id,
            "delta": e.delta,
        }
    elif isinstance(e, ArgumentsDone):
        msg = {
            "type": "response.function_call_arguments.done",
            "response_id": e.response_id,
            "item_id": e.item_id,
            "output_index": e.output_index,
            "call_id": e.call_id,
            "name": e.name,
            "arguments": e.arguments,
        }
    elif isinstance(e, ResponseDone):
        error = (e.error_code, e.error_message)
        response = _response_object(e.response_id, e.status, e.output, e.reason, error)
        msg = {"type": "response.done", "response": response}
    elif isinstance(e, ItemTruncated):
        msg = {
            "type": "conversation.item.truncated",
            "item_id": e.item_id,
            "content_index": e.content_index,
            "audio_end_ms": e.audio_end_ms,
        }
    elif isinstance(e, ItemDeleted):
        msg = {"type": "conversation.item.deleted", "item_id": e.item_id}
    elif isinstance(e, ErrorReport):
        msg = {
            "type": "error",
            "error": {
                "type": e.type,
                "code": e.code,
                "message": e.message,
                "param": e.param,
                "event_id": e.event_id,
            },
        }
    else:
        msg = {"type": e.type}
    msg["event_id"] = event_id
    return json.dumps(msg, separators=(",", ":"))


def _where(
    e: ContentPart | AudioDelta | AudioDone | TranscriptDelta | TranscriptDone,
) -> dict[str, Any]:
    return {
        "response_id": e.response_id,
        "item_id": e.item_id,
        "output_index": e.output_index,
        "content_index": e.content_index,
    }


def decode_server(text: str | bytes) -> ServerEvent:
    """One server event; raises :class:`InvalidEvent` for a frame that is not one."""
    msg = _obj(text)
    kind = _get(msg, "type", str)
    try:
        return _decode_server(kind, msg)
    except (KeyError, TypeError, AttributeError) as exc:
        raise InvalidEvent(f"malformed {kind} event: {exc!r}") from None


def _where_fields(msg: Mapping[str, Any]) -> tuple[str, str, int, int]:
    return (
        _get(msg, "response_id", str),
        _get(msg, "item_id", str),
        _get(msg, "output_index", int),
        _get(msg, "content_index", int),
    )


def _decode_server(kind: str, msg: Mapping[str, Any]) -> ServerEvent:
    if kind == "session.created":
        s = _get(msg, "session", dict)
        return SessionCreated(
            str(s.get("id", "")), str(s.get("model", "")), int(s.get("expires_at") or 0)
        )
    if kind == "session.updated":
        return SessionUpdated(_decode_session(_get(msg, "session", dict)))
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(_get(msg, "item_id", str), _get(msg, "audio_start_ms", int))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(_get(msg, "item_id", str), _get(msg, "audio_end_ms", int))
    if kind == "input_audio_buffer.committed":
        return InputCommitted(_get(msg, "item_id", str), msg.get("previous_item_id"))
    if kind == "input_audio_buffer.cleared":
        return InputCleared()
    if kind in ("conversation.item.added", "conversation.item.done"):
        item = _get(msg, "item", dict)
        return ItemAdded(
            _get(item, "id", str, "item."),
            _get(item, "type", str, "item."),
            item.get("role"),
            msg.get("previous_item_id"),
            done=kind.endswith(".done"),
        )
    if kind == "conversation.item.input_audio_transcription.delta":
        return UserTranscriptDelta(_get(msg, "item_id", str), _get(msg, "delta", str))
    if kind == "conversation.item.input_audio_transcription.completed":
        return UserTranscriptCompleted(_get(msg, "item_id", str), _get(msg, "transcript", str))
    if kind == "response.created":
        return ResponseCreated(_get(_get(msg, "response", dict), "id", str, "response."))
    if kind in ("response.output_item.added", "response.output_item.done"):
        item = _get(msg, "item", dict)
        return OutputItemAdded(
            _get(msg, "response_id", str),
            _get(msg, "output_index", int),
            _get(item, "id", str, "item."),
            _get(item, "type", str, "item."),
            item.get("call_id"),
            item.get("name"),
            done=kind.endswith(".done"),
            status=item.get("status") or "in_progress",
        )
    if kind in ("response.content_part.added", "response.content_part.done"):
        part = _get(msg, "part", dict)
        return ContentPart(
            *_where_fields(msg), str(part.get("transcript") or ""), done=kind.endswith(".done")
        )
    if kind == "response.output_audio.delta":
        return AudioDelta(*_where_fields(msg), _unb64(msg.get("delta"), "delta"))
    if kind == "response.output_audio.done":
        return AudioDone(*_where_fields(msg))
    if kind == "response.output_audio_transcript.delta":
        return TranscriptDelta(*_where_fields(msg), _get(msg, "delta", str))
    if kind == "response.output_audio_transcript.done":
        return TranscriptDone(*_where_fields(msg), _get(msg, "transcript", str))
    if kind == "response.function_call_arguments.delta":
        return ArgumentsDelta(
            _get(msg, "response_id", str),
            _get(msg, "item_id", str),
            _get(msg, "output_index", int),
            _get(msg, "call_id", str),
            _get(msg, "delta", str),
        )
    if kind == "response.function_call_arguments.done":
        return ArgumentsDone(
            _get(msg, "response_id", str),
            _get(msg, "item_id", str),
            _get(msg, "output_index", int),
            _get(msg, "call_id", str),
            _get(msg, "name", str),
            _get(msg, "arguments", str),
        )
    if kind == "response.done":
        r = _get(msg, "response", dict)
        details = r.get("status_details") or {}
        err = details.get("error") or {}
        return ResponseDone(
            _get(r, "id", str, "response."),
            _get(r, "status", str, "response."),
            details.get("reason"),
            tuple(_done_item(i) for i in r.get("output") or ()),
            err.get("code"),
            err.get("message"),
        )
    if kind == "conversation.item.truncated":
        return ItemTruncated(
            _get(msg, "item_id", str),
            _get(msg, "content_index", int),
            _get(msg, "audio_end_ms", int),
        )
    if kind == "conversation.item.deleted":
        return ItemDeleted(_get(msg, "item_id", str))
    if kind == "error":
        err = _get(msg, "error", dict)
        return ErrorReport(
            str(err.get("type", "")),
            str(err.get("message", "")),
            err.get("code"),
            err.get("param"),
            err.get("event_id"),
        )
    return Unknown(kind)


def _done_item(item: Mapping[str, Any]) -> DoneItem:
    kind = item["type"]
    transcript = ""
    for part in item.get("content") or ():
        transcript += str(part.get("transcript") or part.get("text") or "")
    return DoneItem(
        str(item["id"]),
        kind,
        str(item.get("status") or "completed"),
        transcript,
        item.get("call_id"),
        item.get("name"),
        item.get("arguments"),
    )


__all__ = [
    "CLIENT_TYPES",
    "PCM_RATE",
    "ArgumentsDelta",
    "ArgumentsDone",
    "AudioAppend",
    "AudioClear",
    "AudioCommit",
    "AudioDelta",
    "AudioDone",
    "ClientEvent",
    "ContentPart",
    "DoneItem",
    "ErrorReport",
    "FunctionCallItem",
    "FunctionOutputItem",
    "InputCleared",
    "InputCommitted",
    "InvalidEvent",
    "Item",
    "ItemAdded",
    "ItemCreate",
    "ItemDelete",
    "ItemDeleted",
    "ItemTruncate",
    "ItemTruncated",
    "OutputItemAdded",
    "ResponseCancel",
    "ResponseCreate",
    "ResponseCreated",
    "ResponseDone",
    "ServerEvent",
    "ServerVad",
    "SessionConfig",
    "SessionCreated",
    "SessionUpdate",
    "SessionUpdated",
    "SpeechStarted",
    "SpeechStopped",
    "TextItem",
    "TranscriptDelta",
    "TranscriptDone",
    "Unknown",
    "UserTranscriptCompleted",
    "UserTranscriptDelta",
    "decode_client",
    "decode_server",
    "encode_client",
    "encode_server",
]
