"""Structured logging: every record of a call carries that call's ids.

A call is many trio tasks (ingress, STT, turn manager, responder, egress...). Passing
ids to each log call would be noisy and easy to forget, so the ids live in a
``contextvars.ContextVar``: trio gives each child task a copy of its parent's context
when it is started, so everything started inside ``bind(...)`` logs with those fields,
and a sibling call's tasks (started from their own ``bind``) never see them::

    with bind(session_id=sid, transport="twilio"):
        await run_session(...)          # every actor's records carry both fields

The context var holds a small mutable *scope*, not the fields themselves, so an id
learned mid-call (Twilio's ``callSid`` arrives in the first frame, after the actors
started) can be added with :func:`annotate` and is seen by every task of the call.

:class:`BoundFieldsFilter` copies the fields onto each ``LogRecord`` when it is
emitted (on the handler, so records of every logger get them); :class:`JsonFormatter`
and :class:`TextFormatter` render them. :func:`configure_logging` wires it all onto
the root logger (``VANTUM_LOG_FORMAT=text|json``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Literal, TextIO

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

_RECORD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)
"""Attributes every LogRecord has; anything else on a record came from ``extra=``."""

_FIELDS_ATTR = "vantum_fields"
"""Where the filter leaves the bound fields, so formatters can tell them from extras."""


class _Scope:
    """One ``bind`` level. ``fields`` is replaced, never mutated, so a reader in
    another thread (``trio.to_thread``) always sees a complete mapping."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, object]) -> None:
        self.fields = fields


_EMPTY = _Scope({})
_current: ContextVar[_Scope] = ContextVar("vantum_log_fields", default=_EMPTY)


def _check_names(fields: Mapping[str, object]) -> None:
    clash = sorted((_RECORD_ATTRS | {_FIELDS_ATTR}) & fields.keys())
    if clash:
        # Copied onto LogRecords, these would overwrite logging's own attributes.
        raise ValueError(f"log field name(s) reserved by logging: {', '.join(clash)}")


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every record logged in this block and in tasks started in it.

    Nested binds add to (and may override) the outer fields; ``None`` values are
    skipped so optional ids can be passed unconditionally.
    """
    _check_names(fields)
    outer = _current.get().fields
    scope = _Scope({**outer, **{k: v for k, v in fields.items() if v is not None}})
    token = _current.set(scope)
    try:
        yield
    finally:
        _current.reset(token)


def annotate(**fields: object) -> None:
    """Add fields to the innermost ``bind``: every task that inherited it sees them.

    Outside any ``bind`` this does nothing (there is no call to attach them to).
    """
    _check_names(fields)
    scope = _current.get()
    if scope is _EMPTY:
        return
    scope.fields = {**scope.fields, **{k: v for k, v in fields.items() if v is not None}}


def current_fields() -> Mapping[str, object]:
    """The fields bound in the calling task (read-only view)."""
    return dict(_current.get().fields)


class BoundFieldsFilter(logging.Filter):
    """Copies bound fields onto each record (never drops one).

    Install it on a *handler*: filters on a logger only see records logged on that
    exact logger, not those propagated from ``vantum.session`` and friends.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _current.get().fields
        setattr(record, _FIELDS_ATTR, fields)
        for key, value in fields.items():
            if key not in record.__dict__:  # an explicit extra= wins
                record.__dict__[key] = value
        return True


def _bound(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, _FIELDS_ATTR, None)
    return fields if isinstance(fields, Mapping) else {}


def _extras(record: logging.LogRecord, bound: Mapping[str, object]) -> dict[str, object]:
    return {
        k: v
        for k, v in record.__dict__.items()
        if k not in _RECORD_ATTRS and k != _FIELDS_ATTR and k not in bound
    }


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad %-format in a log call must not lose the record
        return f"{_safe_repr(record.msg)} % {_safe_repr(record.args)} (bad log format)"


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _jsonable(value: object) -> object:
    try:
        json.dumps(value, allow_nan=False)
    except Exception:
        return _safe_repr(value)
    return value


_CORE_KEYS = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, bound fields, extras, exc.

    ``format`` never raises: values JSON cannot hold become their ``repr``, and an
    extra named like a core key is kept under ``_<name>``.
    """

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        out: dict[str, object] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": _message(record),
        }
        bound = _bound(record)
        # The filter copied bound fields onto the record unless an extra= had the name.
        fields = {k: record.__dict__.get(k, v) for k, v in bound.items()}
        for key, value in {**fields, **_extras(record, bound)}.items():
            out[f"_{key}" if key in _CORE_KEYS else key] = value
        if record.exc_info:
            try:
                out["exc"] = self.formatException(record.exc_info)
            except Exception:
                out["exc"] = _safe_repr(record.exc_info[1])
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        try:
            return json.dumps(out, ensure_ascii=False, allow_nan=False)
        except Exception:
            safe = {k: _jsonable(v) for k, v in out.items()}
            return json.dumps(safe, ensure_ascii=False)


_SHORT = {"session_id": "session", "call_sid": "call"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """The classic one-line format, plus `` [session=... call=...]`` when ids are bound."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        bound = _bound(record)
        if not bound:
            return line
        tags = " ".join(f"{_SHORT.get(k, k)}={record.__dict__.get(k, v)}" for k, v in bound.items())
        return f"{line} [{tags}]"


class _VantumHandler(logging.StreamHandler[TextIO]):
    """Marks the handler ``configure_logging`` owns, so a second call replaces it."""


def configure_logging(level: str, fmt: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Install Vantum's handler on the root logger; calling again replaces it.

    Handlers installed by others (pytest's capture, an embedding app) are left alone.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _VantumHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _VantumHandler(sys.stderr if stream is None else stream)
    handler.addFilter(BoundFieldsFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())


__all__ = [
    "LOG_FORMATS",
    "BoundFieldsFilter",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "annotate",
    "bind",
    "configure_logging",
    "current_fields",
]
