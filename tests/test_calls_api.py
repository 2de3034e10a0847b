"""Call data out through a real server: the /v1 calls API, webhooks from real calls,
and Twilio status callbacks updating the record (issue 16)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA, speak_turn

from vantum.config import Config
from vantum.protocol import events as ev
from vantum.records import CallStore, open_store
from vantum.server.main import run_server
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_cartesia import serve_fake_cartesia
from vantum.testing.fake_deepgram import serve_fake_deepgram
from vantum.testing.fake_openai import serve_fake_openai
from vantum.testing.fake_twilio import (
    FakeTwilioConfig,
    dial_fake_twilio,
    fetch_twiml,
    webhook_params,
)
from vantum.testing.stack import Stack, open_stack
from vantum.testing.webhook_receiver import Received, WebhookReceiver, open_webhook_receiver
from vantum.webhooks.dispatcher import WebhookDispatcher

SECRET = "whsec-api-tests-0123456789"
FULL, READ_ONLY = "key-full-0123456789", "key-read-0123456789"


@attrs.frozen
class DataStack:
    stack: Stack
    store: CallStore
    receiver: WebhookReceiver
    http: httpx.AsyncClient

    async def api(
        self, method: str, path: str, key: str | None = FULL, **params: Any
    ) -> httpx.Response:
        headers = {} if key is None else {"authorization": f"Bearer {key}"}
        return await self.http.request(
            method, self.stack.url + path, headers=headers, params=params
        )

    async def events(self, n: int) -> list[Received]:
        return await self.events_from(self.receiver, n)

    @staticmethod
    async def events_from(receiver: WebhookReceiver, n: int) -> list[Received]:
        with trio.fail_after(10):
            return [await receiver.requests.receive() for _ in range(n)]


@asynccontextmanager
async def data_stack(tmp_path: Path, **config: Any) -> AsyncIterator[DataStack]:
    async with open_webhook_receiver(SECRET.encode()) as receiver:
        settings: dict[str, Any] = {
            "api_keys": (FULL, f"{READ_ONLY}:read"),
            "webhook_urls": (receiver.url,),
            "webhook_secret": SECRET,
        }
        settings.update(config)
        async with (
            open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA, **settings) as stack,
            open_store(str(tmp_path / "calls.db")) as store,
            httpx.AsyncClient(timeout=10) as http,
            trio.open_nursery() as nursery,
        ):
            dispatcher = WebhookDispatcher(store, SECRET.encode(), metrics=stack.app.metrics)
            await nursery.start(dispatcher.run)
            stack.app.store, stack.app.webhooks = store, dispatcher
            yield DataStack(stack, store, receiver, http)
            nursery.cancel_scope.cancel()


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


async def test_auth_401_403_404_are_distinct(tmp_path: Path) -> None:
    async with data_stack(tmp_path) as ds:
        missing = await ds.api("GET", "/v1/calls", key=None)
        assert (missing.status_code, error_code(missing)) == (401, "unauthorized")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await ds.api("GET", "/v1/calls", key="not-a-key")
        assert (wrong.status_code, error_code(wrong)) == (401, "unauthorized")
        assert (await ds.api("GET", "/v1/calls", key=READ_ONLY)).status_code == 200
        forbidden = await ds.api("POST", "/v1/calls/abc/hangup", key=READ_ONLY)
        assert (forbidden.status_code, error_code(forbidden)) == (403, "forbidden")
        unknown = await ds.api("GET", "/v1/calls/no-such-call")
        assert (unknown.status_code, error_code(unknown)) == (404, "call_not_found")
        gone = await ds.api("POST", "/v1/calls/no-such-call/hangup")
        assert (gone.status_code, error_code(gone)) == (404, "call_not_found")
        bad = await ds.api("DELETE", "/v1/calls")
        assert (bad.status_code, error_code(bad)) == (405, "method_not_allowed")
        # Unauthenticated requests learn nothing, not even whether a call exists.
        assert (await ds.api("GET", "/v1/calls/no-such-call", key=None)).status_code == 401


async def test_api_is_off_without_keys(tmp_path: Path) -> None:
    async with data_stack(tmp_path, api_keys=()) as ds:
        off = await ds.api("GET", "/v1/calls")
        assert (off.status_code, error_code(off)) == (404, "api_disabled")


async def test_pages_filters_and_limits(tmp_path: Path) -> None:
    async with data_stack(tmp_path) as ds:
        for i in range(7):
            agent = "sales" if i % 2 else "support"
            await ds.store.start_call(
                f"call-{i}",
                at=1000.0 + i // 2,  # pairs share a start time: the cursor must split them
                transport="twilio" if i < 3 else "browser",
                meta={"agent": agent},
            )
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = (await ds.api("GET", "/v1/calls", **params)).json()
            seen += [c["call_id"] for c in page["calls"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == ["call-6", "call-5", "call-4", "call-3", "call-2", "call-1", "call-0"]

        async def ids(**params: Any) -> list[str]:
            body = (await ds.api("GET", "/v1/calls", **params)).json()
            return [c["call_id"] for c in body["calls"]]

        assert await ids(transport="twilio") == ["call-2", "call-1", "call-0"]
        assert await ids(agent="sales") == ["call-5", "call-3", "call-1"]
        assert await ids(since=1001, until=1003) == ["call-5", "call-4", "call-3", "call-2"]
        assert await ids(since="1970-01-01T00:16:42Z") == ["call-6", "call-5", "call-4"]
        for bad in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"since": "yesterday"}):
            response = await ds.api("GET", "/v1/calls", **bad)
            assert (response.status_code, error_code(response)) == (400, "invalid_parameter")
        response = await ds.api("GET", "/v1/calls", cursor="!!")
        assert (response.status_code, error_code(response)) == (400, "invalid_cursor")


async def test_a_real_call_is_delivered_and_readable_then_hung_up(tmp_path: Path) -> None:
    async with data_stack(tmp_path) as ds:
        async with BrowserClient.connect(ds.stack.ws_url) as client:
            sid = client.session_id
            turn = await speak_turn(client, 16_000)
            assert turn.finals == ["hello there"]
            live = await ds.api("GET", f"/v1/calls/{sid}")
            assert live.status_code == 200 and live.json()["call"]["ended_at"] is None
            hung = await ds.api("POST", f"/v1/calls/{sid}/hangup")
            assert (hung.status_code, hung.json()["status"]) == (202, "hanging_up")
            with pytest.raises(trio.EndOfChannel):
                with trio.fail_after(5):
                    while True:
                        await client.next_event()
            assert client.close_code == ev.CLOSE_NORMAL
        with trio.fail_after(5):
            await ds.stack.app.wait_idle()
        got = {r.event_type: r for r in await ds.events(2)}
        assert set(got) == {"call.started", "call.ended"}
        assert all(r.signature_error is None for r in got.values())
        data = got["call.ended"].body["data"]
        assert data["call_id"] == sid and data["end_reason"] == "api_hangup"
        assert data["transport"] == "browser"
        assert data["transcript"][0] == {
            **data["transcript"][0],
            "speaker": "caller",
            "text": "hello there",
        }
        assert data["transcript"][1]["speaker"] == "agent"
        assert data["latency"]["turns"] == 1
        record = (await ds.api("GET", f"/v1/calls/{sid}")).json()
        assert record["call"]["end_reason"] == "api_hangup"
        assert "transcript.final" in {e["type"] for e in record["events"]}
        again = await ds.api("POST", f"/v1/calls/{sid}/hangup")
        assert (again.status_code, error_code(again)) == (409, "call_not_live")
        delivered = ds.stack.app.metrics.registry.get_sample_value(
            "vantum_webhook_deliveries_total", {"event": "call.ended", "result": "delivered"}
        )
        assert delivered == 1


async def test_twilio_status_callbacks_update_the_record(tmp_path: Path) -> None:
    async with data_stack(tmp_path) as ds:
        cfg = FakeTwilioConfig()
        answer = await fetch_twiml(ds.stack.url + "/twilio/voice", cfg)
        cfg = attrs.evolve(cfg, custom_parameters=answer.parameters)
        assert answer.stream_url is not None
        async with dial_fake_twilio(answer.stream_url, cfg) as call:
            await ds.stack.app.wait_open()
            (sid,) = ds.stack.app.sessions
            started = (await ds.events(1))[0].body["data"]
            assert (started["from"], started["to"]) == (cfg.from_number, cfg.to_number)
            assert started["carrier_call_id"] == cfg.call_sid
            await call.hang_up()
        with trio.fail_after(5):
            await ds.stack.app.wait_idle()
        status = ds.stack.url + "/twilio/status"
        done = {**webhook_params(cfg), "CallStatus": "completed", "CallDuration": "42"}
        assert (await fetch_twiml(status, cfg, params=done)).status == 204
        record = await ds.store.get_call(sid)
        assert record is not None
        assert record.summary.meta["carrier_status"] == "completed"
        assert record.summary.meta["carrier_duration_s"] == "42"
        statuses = [e.payload for e in record.events if e.kind == "carrier.status"]
        assert statuses == [
            {"CallStatus": "completed", "CallDuration": "42", "Direction": "inbound"}
        ]
        # A call that never reached a stream gets a record of its own and call.failed.
        busy_cfg = attrs.evolve(cfg, call_sid="CA" + "b" * 32)
        busy = {**webhook_params(busy_cfg), "CallStatus": "busy"}
        assert (await fetch_twiml(status, busy_cfg, params=busy)).status == 204
        kinds = {r.event_type: r.body["data"] for r in await ds.events(3)}
        assert kinds["call.failed"]["end_reason"] == "busy"
        assert kinds["call.failed"]["carrier_call_id"] == busy_cfg.call_sid
        assert kinds["call.ended"]["call_id"] == sid


class _Lines(logging.Handler):
    """Start-up log lines; ``listening`` is set once the server says where it is."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.listening = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if record.getMessage().startswith("Vantum listening on "):
            self.listening.set()


async def test_vantum_serve_runs_the_dispatcher_and_says_the_api_is_off(tmp_path: Path) -> None:
    """The whole start-up path (run_server): store, dispatcher, calls, webhooks out."""
    handler = _Lines()
    logger = logging.getLogger("vantum")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with (
            open_webhook_receiver(SECRET.encode()) as receiver,
            # Cloud engines (the fakes): with no keys run_server would load the
            # embedded models first, which is not what this test is about (and took
            # over its 30 s under load).
            serve_fake_deepgram(FAST_DG) as dg,
            serve_fake_openai(FAST_OA) as oa,
            serve_fake_cartesia(FAST_CA) as ca,
            trio.open_nursery() as nursery,
        ):
            config = Config(
                host="127.0.0.1",
                port=0,
                deepgram_api_key=dg.config.api_key,
                deepgram_url=dg.url,
                openai_api_key=oa.api_key,
                openai_base_url=oa.base_url,
                cartesia_api_key=ca.config.api_key,
                cartesia_url=ca.url,
                workers=1,  # this process: the test reads its log
                insecure_no_auth=True,
                graceful_timeout=1.0,
                records_url=f"sqlite:///{tmp_path / 'calls.db'}",
                webhook_urls=(receiver.url,),
                webhook_secret=SECRET,
            )
            nursery.start_soon(run_server, config)
            with trio.fail_after(30):
                await handler.listening.wait()
            line = next(x for x in handler.lines if x.startswith("Vantum listening on "))
            url = line.split()[3]
            async with BrowserClient.connect(url.replace("http://", "ws://") + "/ws") as client:
                sid = client.session_id
            got = {r.event_type: r for r in await DataStack.events_from(receiver, 2)}
            assert set(got) == {"call.started", "call.ended"}
            assert got["call.ended"].body["data"]["call_id"] == sid
            assert all(r.signature_error is None for r in got.values())
            assert "calls API (/v1) is OFF: set VANTUM_API_KEYS to enable it" in handler.lines
            assert f"webhooks: {receiver.url}" in handler.lines
            nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
