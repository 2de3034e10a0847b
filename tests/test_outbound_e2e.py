"""Outbound calls and answering-machine detection, end to end against the fake Twilio:
the dialer's ``Calls.json`` request, Twilio fetching ``Url`` and streaming back, the
AMD and status callbacks, the records, and the dialer's rate limit and cap."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA

from vantum.agents.loader import AgentsFileError, parse_agents
from vantum.config import Config
from vantum.errors import ConfigError
from vantum.protocol.twilio.dialing import DialRequest, Verdict, amd_timeout_for, verdict
from vantum.records import CallRecord, CallStore, open_store
from vantum.testing.fake_twilio import (
    FakeTwilioConfig,
    FakeTwilioRest,
    FakeTwilioRestConfig,
    answer_outbound,
    end_outbound,
    serve_fake_twilio_rest,
)
from vantum.testing.stack import Stack, open_stack
from vantum.transports.twilio_dial import DialRefused

TOKEN = "twilio-auth-token-for-tests"
REST = FakeTwilioRestConfig(auth_token=TOKEN)
TO, FROM = "+14155550100", "+14155550199"
AGENTS = """\
default = "reminder"

[agents.reminder]
instructions = "Remind {name} of the appointment."
greeting = "Hi {name}, this is your reminder."
required_variables = ["name"]
on_machine = "leave_message"
machine_message = "Sorry we missed you, please call us back."
amd_wait_ms = 5000

[agents.strict]
instructions = "Only people."
greeting = "Hello there."
on_machine = "hangup"
amd_wait_ms = 5000
"""


@asynccontextmanager
async def dial_stack(
    tmp_path: Path, **kw: Any
) -> AsyncIterator[tuple[Stack, FakeTwilioRest, CallStore]]:
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS)
    async with serve_fake_twilio_rest(REST) as rest:
        async with open_stack(
            deepgram=FAST_DG,
            openai=FAST_OA,
            cartesia=FAST_CA,
            agents_file=str(agents),
            twilio_auth_token=TOKEN,
            twilio_account_sid=REST.account_sid,
            twilio_api_base=rest.base_url,
            **kw,
        ) as stack:
            async with open_store(f"sqlite:///{tmp_path / 'calls.db'}") as store:
                stack.app.store = store
                yield stack, rest, store


def spoken(stack: Stack) -> list[str]:
    """Everything the TTS was asked to say, one string per utterance."""
    return [
        "".join(r.transcript for r in reqs).strip() for reqs in stack.cartesia.requests.values()
    ]


async def record(store: CallStore, call_id: str) -> CallRecord:
    found = await store.get_call(call_id)
    assert found is not None
    return found


def kinds(rec: CallRecord, kind: str) -> list[dict[str, Any]]:
    return [dict(e.payload) for e in rec.events if e.kind == kind]


async def test_an_outbound_call_is_placed_answered_greeted_and_recorded(tmp_path: Path) -> None:
    async with dial_stack(tmp_path) as (stack, rest, store):
        request = DialRequest(TO, FROM, "reminder", {"name": "Ada"})
        result = await stack.app.dialer.dial(request, stack.url)
        (created,) = rest.created
        assert result.call_sid == created.sid and result.status == "queued"
        # The request Twilio got: who, and how the call comes back to us.
        assert (created.get("To"), created.get("From")) == (TO, FROM)
        url = urllib.parse.urlsplit(created.get("Url") or "")
        assert f"{url.scheme}://{url.netloc}{url.path}" == stack.url + "/twilio/voice"
        assert dict(urllib.parse.parse_qsl(url.query)) == {
            "vantumDial": result.dial_id,
            "agent": "reminder",
            "amd": "1",
            "var.name": "Ada",
        }
        assert created.get("MachineDetection") == "DetectMessageEnd"
        assert created.get("AsyncAmd") == "true"
        assert (created.get("AsyncAmdStatusCallback") or "").startswith(stack.url + "/twilio/amd?")
        assert (created.get("StatusCallback") or "").startswith(stack.url + "/twilio/status?")
        assert created.all("StatusCallbackEvent") == [
            "initiated",
            "ringing",
            "answered",
            "completed",
        ]
        cfg = FakeTwilioConfig(auth_token=TOKEN, account_sid=REST.account_sid, speed=4.0)
        async with answer_outbound(rest, created, cfg, answered_by="human", amd_after=0.2) as call:
            with trio.fail_after(10):
                await call.wait_until(lambda: any(m.endswith(":end") for m in call.marks_echoed))
            assert spoken(stack)[0] == "Hi Ada, this is your reminder."
            assert call.heard_seconds > 0.5
        with trio.fail_after(3):
            await stack.app.wait_idle()
        dial = await record(store, result.dial_id)
        assert dial.summary.outcome == "completed"
        assert dial.summary.meta == {
            "direction": "outbound",
            "to": TO,
            "from": FROM,
            "agent": "reminder",
            "carrier_sid": created.sid,
        }
        assert kinds(dial, "telephony.dial")[0]["variables"] == {"name": "Ada"}
        assert kinds(dial, "telephony.amd")[0]["verdict"] == "human"
        assert [s["CallStatus"] for s in kinds(dial, "telephony.status")] == [
            "in-progress",
            "completed",
        ]
        (session,) = [c for c in await store.list_calls() if c.call_id != result.dial_id]
        assert session.meta["dial"] == result.dial_id and session.meta["carrier_sid"] == created.sid
        assert stack.app.dialer.active == {}


async def test_a_machine_gets_the_message_not_the_greeting_and_the_call_ends(
    tmp_path: Path,
) -> None:
    async with dial_stack(tmp_path) as (stack, rest, store):
        result = await stack.app.dialer.dial(
            DialRequest(TO, FROM, "reminder", {"name": "Ada"}), stack.url
        )
        (created,) = rest.created
        cfg = FakeTwilioConfig(
            auth_token=TOKEN, account_sid=REST.account_sid, speed=1.0
        )  # a phone line's pace (4x floods a socket the server has closed)
        async with answer_outbound(
            rest, created, cfg, answered_by="machine_end_beep", amd_after=0.3
        ) as call:
            with trio.fail_after(10):
                await call.wait_until(lambda: call.closed)  # message said, then hung up
            assert spoken(stack) == ["Sorry we missed you, please call us back."]
            assert call.heard_seconds > 0.5
        with trio.fail_after(3):
            await stack.app.wait_idle()
        assert stack.openai.requests == []  # no conversation with a machine
        dial = await record(store, result.dial_id)
        amd = kinds(dial, "telephony.amd")[0]
        assert (amd["AnsweredBy"], amd["verdict"]) == ("machine_end_beep", "machine")


async def test_on_machine_hangup_hangs_up_through_the_rest_api(tmp_path: Path) -> None:
    async with dial_stack(tmp_path) as (stack, rest, _store):
        await stack.app.dialer.dial(DialRequest(TO, FROM, "strict"), stack.url)
        (created,) = rest.created
        cfg = FakeTwilioConfig(auth_token=TOKEN, account_sid=REST.account_sid, speed=4.0)
        async with answer_outbound(rest, created, cfg, answered_by="fax") as call:
            with trio.fail_after(10):
                await call.wait_until(lambda: call.closed)
        assert rest.hangups == [created.sid]
        assert spoken(stack) == []


async def test_the_greeting_waits_for_the_verdict_only_up_to_its_bound(tmp_path: Path) -> None:
    async with dial_stack(tmp_path) as (stack, rest, _store):
        await stack.app.dialer.dial(DialRequest(TO, FROM, "strict"), stack.url)
        (created,) = rest.created
        cfg = FakeTwilioConfig(auth_token=TOKEN, account_sid=REST.account_sid, speed=4.0)
        start = trio.current_time()
        async with answer_outbound(rest, created, cfg, answered_by=None) as call:
            with trio.fail_after(10):
                await call.wait_until(lambda: bool(stack.cartesia.requests))
            waited = trio.current_time() - start
            assert spoken(stack) == ["Hello there."]
        assert 5.0 <= waited < 6.5  # amd_wait_ms = 5000, then the greeting


async def test_busy_and_carrier_errors_are_outcomes_and_free_the_slot(tmp_path: Path) -> None:
    async with dial_stack(tmp_path, max_outbound_calls=1) as (stack, rest, store):
        dialer = stack.app.dialer
        first = await dialer.dial(DialRequest(TO, FROM, "strict"), stack.url)
        with pytest.raises(DialRefused) as info:
            await dialer.dial(DialRequest(TO, FROM, "strict"), stack.url)
        assert info.value.reason == "too_many_calls"
        cfg = FakeTwilioConfig(auth_token=TOKEN, account_sid=REST.account_sid)
        assert await end_outbound(rest, rest.created[0], "busy", cfg) == 204
        assert (await record(store, first.dial_id)).summary.outcome == "busy"
        rest.fail_next(400, 21211, "Invalid 'To' Phone Number")
        with pytest.raises(DialRefused) as info:
            await dialer.dial(DialRequest(TO, FROM, "strict"), stack.url)
        assert (info.value.reason, info.value.code) == ("carrier", 21211)
        (failed,) = [c for c in await store.list_calls() if c.outcome == "failed"]
        assert (
            kinds(await record(store, failed.call_id), "telephony.dial_error")[0]["code"] == 21211
        )
        assert dialer.active == {}


async def test_the_dialing_rate_is_limited(tmp_path: Path) -> None:
    async with dial_stack(tmp_path, outbound_rate_per_s=0.001, outbound_burst=2) as (
        stack,
        rest,
        _store,
    ):
        for _ in range(2):
            await stack.app.dialer.dial(DialRequest(TO, FROM, "strict"), stack.url)
        with pytest.raises(DialRefused) as info:
            await stack.app.dialer.dial(DialRequest(TO, FROM, "strict"), stack.url)
        assert info.value.reason == "rate_limited" and len(rest.created) == 2


async def test_unsigned_amd_and_status_callbacks_are_refused(tmp_path: Path) -> None:
    import httpx

    async with dial_stack(tmp_path) as (stack, _rest, store):
        async with httpx.AsyncClient() as client:
            for path in ("/twilio/amd?vantumDial=x", "/twilio/status?vantumDial=x"):
                form = {"CallSid": "CA" + "0" * 32, "AnsweredBy": "human", "CallStatus": "busy"}
                response = await client.post(stack.url + path, data=form)
                assert response.status_code == 403
        assert await store.list_calls() == []


def test_dial_requests_and_verdicts() -> None:
    with pytest.raises(ValueError, match=r"E\.164"):
        DialRequest("4155550100", FROM)
    with pytest.raises(ValueError, match="variable"):
        DialRequest(TO, FROM, variables={"bad name": "x"})
    assert verdict("machine_end_silence") is Verdict.MACHINE
    assert verdict("fax") is Verdict.MACHINE
    assert verdict("human") is Verdict.HUMAN and verdict("unknown") is Verdict.UNKNOWN
    assert (
        amd_timeout_for(5000) == 5 and amd_timeout_for(100) == 3 and amd_timeout_for(90_000) == 59
    )
    with pytest.raises(AgentsFileError, match="machine_message"):
        parse_agents('[agents.a]\ninstructions = "x"\non_machine = "leave_message"\n')
    with pytest.raises(AgentsFileError, match="on_machine"):
        parse_agents('[agents.a]\ninstructions = "x"\non_machine = "voicemail"\n')
    book = parse_agents(AGENTS)
    assert book.agents["strict"].on_machine == "hangup"
    assert book.agents["reminder"].amd_wait_ms == 5000


async def test_vantum_dial_needs_a_public_url() -> None:
    from vantum.dial import run_dial

    with pytest.raises(ConfigError, match="VANTUM_PUBLIC_URL"):
        await run_dial(Config(), TO, FROM, None, {})


async def test_post_v1_calls_places_a_call_through_the_api(tmp_path: Path) -> None:
    """``POST /v1/calls`` with a write key dials through the same dialer (rate, cap,
    records); a read key is 403, bad input 422, the cap 429, no public URL 503."""
    full, read_only = "k" * 32, "r" * 32
    keys = (full, f"{read_only}:read")
    async with dial_stack(tmp_path, api_keys=keys, max_outbound_calls=1) as (stack, rest, store):
        api = stack.url + "/v1/calls"

        async def post(key: str, body: dict[str, Any]) -> httpx.Response:
            async with httpx.AsyncClient() as http:
                return await http.post(api, json=body, headers={"authorization": f"Bearer {key}"})

        call = {"to": TO, "from": FROM, "agent": "reminder", "variables": {"name": "Ada"}}
        off = await post(full, call)  # no VANTUM_PUBLIC_URL yet: Twilio could not call back
        assert (off.status_code, off.json()["error"]["code"]) == (503, "dialing_not_configured")
        stack.app.config = attrs.evolve(stack.app.config, public_url=stack.url)
        assert (await post(read_only, call)).status_code == 403
        for bad, code in (
            ({**call, "to": "555"}, "invalid_request"),
            ({**call, "agent": "nobody"}, "unknown_agent"),
            ({**call, "colour": "red"}, "invalid_request"),
        ):
            refused = await post(full, bad)
            assert (refused.status_code, refused.json()["error"]["code"]) == (422, code)
        assert rest.created == []
        placed = await post(full, call)
        assert placed.status_code == 201, placed.text
        (created,) = rest.created
        assert placed.json()["call_sid"] == created.sid and created.get("To") == TO
        assert "var.name=Ada" in (created.get("Url") or "")
        dial = await record(store, placed.json()["dial_id"])
        assert dial.summary.meta["to"] == TO
        again = await post(full, call)  # the cap (1 in progress) holds for the API too
        assert (again.status_code, again.json()["error"]["code"]) == (429, "too_many_calls")
