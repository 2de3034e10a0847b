"""Log ids and turn spans through a real server: the wiring of issue 8."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import trio
from e2e_helpers import FAST_CA
from test_twilio_e2e import DG, SHORT_OA, answered, utterance, wait_idle

from vantum.logs import BoundFieldsFilter, JsonFormatter
from vantum.server.tracing import Tracing
from vantum.testing.fake_twilio import FakeTwilioConfig, place_call
from vantum.testing.stack import open_stack


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(BoundFieldsFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield buf
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_phone_call_logs_carry_ids_and_turns_become_spans(json_logs: io.StringIO) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with open_stack(deepgram=DG, openai=SHORT_OA, cartesia=FAST_CA) as stack:
        stack.app.tracing = Tracing(provider.get_tracer("test"), provider.shutdown)
        cfg = FakeTwilioConfig(speed=4.0)
        async with place_call(stack.url, cfg) as call:
            await call.say(utterance())
            await answered(stack, call, 1)
            with trio.fail_after(3):
                await call.wait_until(lambda: len(exporter.get_finished_spans()) >= 5)
        await wait_idle(stack)
    (sid,) = {
        s.attributes["vantum.session_id"]
        for s in exporter.get_finished_spans()
        if s.attributes is not None
    }
    turn = next(s for s in exporter.get_finished_spans() if s.name == "vantum.turn")
    assert turn.attributes is not None and turn.attributes["vantum.transport"] == "twilio"
    records = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    started = next(r for r in records if "stream" in r["msg"] and "started" in r["msg"])
    assert (started["session_id"], started["transport"]) == (sid, "twilio")
    assert started["call_sid"] == cfg.call_sid
    # Later records of the call, from other loggers and actors, carry the call id too.
    later = records[records.index(started) + 1 :]
    assert any(r["call_sid"] == cfg.call_sid and r["logger"] != "vantum.twilio" for r in later), [
        (r["logger"], r["msg"]) for r in later
    ]
