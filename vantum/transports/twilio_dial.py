"""Outbound calls through Twilio: the dialer that places them, and the AMD verdicts.

:meth:`OutboundDialer.dial` is the one entry point for placing a call (the calls
API's ``POST /v1/calls`` is meant to call it; ``vantum dial`` uses the same request
builder from its own process). It enforces a rate limit and a cap on calls in
progress, posts ``Calls.json`` (``vantum.protocol.twilio.dialing``) and opens the
dial's record: ``call_id`` = the dial id, transport ``twilio-outbound``, ``meta``
with the direction, numbers, agent and Twilio's ``CallSid``. Twilio's status
callbacks append ``telephony.status`` events and end the record with the final
status as its outcome (``completed``, ``busy``, ``no-answer``, ``failed``,
``canceled``); the AMD callback appends ``telephony.amd``. The session of the
answered call is recorded under its own id with ``meta.dial`` pointing back here.

:meth:`OutboundDialer.on_amd` hands the asynchronous AMD verdict (an HTTP callback)
to the media stream waiting for it before the greeting, through ``amd`` (``amd.py``):
the server's call registry, so the verdict reaches a stream on another worker when
the workers share Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from ..config import Config
from ..errors import ConfigError, VantumError
from ..limits import RateLimiter
from ..protocol.ids import new_id
from ..protocol.twilio.dialing import FINAL_STATUSES, DialRequest, create_call_params, verdict
from .amd import AmdHandoff, AmdVerdicts
from .twilio_rest import TwilioAPIError, TwilioREST

log = logging.getLogger("vantum.twilio")


class DialRecords(Protocol):
    """What the dialer writes of a dial's record: the part of ``records.CallStore`` it
    uses, as a Protocol, so the carrier layer needs nothing from the store above it."""

    async def start_call(
        self,
        call_id: str,
        *,
        at: float,
        transport: str,
        meta: Mapping[str, str] | None = None,
        webhooks: Sequence[str] = (),
    ) -> None: ...

    async def add_event(
        self, call_id: str, kind: str, payload: Mapping[str, Any], at: float
    ) -> None: ...

    async def end_call(self, call_id: str, outcome: str, *, at: float) -> None: ...

    async def get_call(self, call_id: str) -> object: ...


class DialRefused(VantumError):
    """The call was not placed; ``reason``: ``rate_limited``, ``too_many_calls``,
    ``not_configured`` or ``carrier`` (Twilio refused: ``status``/``code`` set)."""

    def __init__(
        self, reason: str, message: str, status: int | None = None, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status
        self.code = code


@attrs.frozen
class DialResult:
    dial_id: str
    call_sid: str
    status: str
    """Twilio's status at creation (``queued``)."""


@attrs.define
class _Active:
    call_sid: str
    expires_at: float


class OutboundDialer:
    """Places Twilio calls within a rate and a concurrency cap, and records them."""

    def __init__(
        self,
        config: Config,
        store: Callable[[], DialRecords | None] = lambda: None,
        *,
        clock: Callable[[], float] = trio.current_time,
        amd: Callable[[], AmdHandoff] | None = None,
    ) -> None:
        self.config = config
        self._store = store
        local = AmdVerdicts()
        self.amd: Callable[[], AmdHandoff] = amd or (lambda: local)
        """Where AMD verdicts are handed over: the server's call registry (read at each
        use: it becomes Redis once connected), else this dialer's own memory."""
        self._clock = clock
        self.max_active = config.max_outbound_calls
        self.limiter = (
            RateLimiter(config.outbound_rate_per_s, config.outbound_burst)
            if config.outbound_rate_per_s > 0
            else None
        )
        self.active: dict[str, _Active] = {}
        """Dial id -> placed calls without a final status yet (each expires eventually,
        so a lost callback cannot hold a slot forever)."""

    def _purge(self, now: float) -> None:
        for dial_id in [d for d, a in self.active.items() if a.expires_at <= now]:
            log.warning("dial %s: no final status from Twilio; slot released", dial_id)
            del self.active[dial_id]

    async def dial(self, request: DialRequest, public_base: str) -> DialResult:
        """Place ``request``; raises :class:`DialRefused` when it is not placed.

        ``public_base``: ``https://host[/prefix]`` Twilio reaches this server at
        (``VANTUM_PUBLIC_URL``)."""
        now = self._clock()
        self._purge(now)
        if len(self.active) >= self.max_active:
            raise DialRefused(
                "too_many_calls", f"{len(self.active)} outbound calls already in progress"
            )
        if self.limiter is not None and not self.limiter.allow("dial", now):
            raise DialRefused("rate_limited", "outbound dialing rate exceeded; try again later")
        try:
            rest = TwilioREST.from_config(self.config)
        except ConfigError as exc:
            raise DialRefused("not_configured", str(exc)) from None
        dial_id = new_id()
        params = create_call_params(request, public_base.rstrip("/"), dial_id)
        meta = {"direction": "outbound", "to": request.to, "from": request.from_}
        if request.agent:
            meta["agent"] = request.agent
        # The slot is held while the request is in flight: concurrent dials count.
        self.active[dial_id] = _Active("", now + request.ring_timeout_s + 60 + self._max_call())
        try:
            created = await rest.create_call(params)
        except TwilioAPIError as exc:
            del self.active[dial_id]
            await self._record_failure(dial_id, meta, request, exc)
            raise DialRefused("carrier", exc.message, exc.status, exc.code) from None
        sid = str(created.get("sid", ""))
        self.active[dial_id].call_sid = sid
        log.info("dial %s: calling %s from %s (call %s)", dial_id, request.to, request.from_, sid)
        await self._start_record(dial_id, {**meta, "carrier_sid": sid}, request)
        return DialResult(dial_id, sid, str(created.get("status", "queued")))

    def _max_call(self) -> float:
        return float(self.config.max_call_s or 3600)

    async def on_status(self, dial_id: str, fields: Mapping[str, str]) -> None:
        """A status callback of dial ``dial_id``: recorded; a final one ends its record."""
        status = fields.get("CallStatus", "")
        store = self._store()
        payload = {
            k: fields[k]
            for k in ("CallSid", "CallStatus", "CallDuration", "SipResponseCode", "AnsweredBy")
            if fields.get(k)
        }
        if store is not None:
            try:
                if dial_id not in self.active and await store.get_call(dial_id) is None:
                    # Placed by another process (``vantum dial``): its record starts here.
                    meta = {
                        "direction": "outbound",
                        "to": fields.get("To", ""),
                        "from": fields.get("From", ""),
                        "carrier_sid": fields.get("CallSid", ""),
                    }
                    await store.start_call(
                        dial_id, at=time.time(), transport="twilio-outbound", meta=meta
                    )
                await store.add_event(dial_id, "telephony.status", payload, time.time())
                if status in FINAL_STATUSES:
                    await store.end_call(dial_id, status, at=time.time())
            except Exception:
                log.exception("dial %s: could not record status %s", dial_id, status)
        if status in FINAL_STATUSES:
            self.active.pop(dial_id, None)
            log.info("dial %s: %s", dial_id, status)

    async def on_amd(self, dial_id: str | None, fields: Mapping[str, str]) -> None:
        """Twilio's async AMD callback: hand the verdict to the stream, record it."""
        call_sid, answered_by = fields.get("CallSid", ""), fields.get("AnsweredBy", "unknown")
        await self.amd().report_amd(call_sid, answered_by)
        log.info("call %s answered by %s", call_sid, answered_by)
        store = self._store()
        if store is not None and dial_id:
            payload = {
                "CallSid": call_sid,
                "AnsweredBy": answered_by,
                "verdict": verdict(answered_by).value,
                "MachineDetectionDuration": fields.get("MachineDetectionDuration", ""),
            }
            try:
                await store.add_event(dial_id, "telephony.amd", payload, time.time())
            except Exception:
                log.exception("dial %s: could not record the AMD verdict", dial_id)

    async def _start_record(self, dial_id: str, meta: dict[str, str], request: DialRequest) -> None:
        store = self._store()
        if store is None:
            return
        payload = {
            "to": request.to,
            "from": request.from_,
            "agent": request.agent,
            "variables": dict(request.variables),
            "amd": request.amd,
        }
        try:
            await store.start_call(dial_id, at=time.time(), transport="twilio-outbound", meta=meta)
            await store.add_event(dial_id, "telephony.dial", payload, time.time())
        except Exception:
            log.exception("dial %s: could not record the outbound request", dial_id)

    async def _record_failure(
        self, dial_id: str, meta: dict[str, str], request: DialRequest, exc: TwilioAPIError
    ) -> None:
        await self._start_record(dial_id, meta, request)
        store = self._store()
        if store is None:
            return
        try:
            error = {"status": exc.status, "code": exc.code, "message": exc.message}
            await store.add_event(dial_id, "telephony.dial_error", error, time.time())
            await store.end_call(dial_id, "failed", at=time.time())
        except Exception:
            log.exception("dial %s: could not record the failure", dial_id)
