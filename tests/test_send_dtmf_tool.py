"""The ``send_dtmf`` built-in: which way the keys go (carrier, tones, or a clear error),
what it refuses, and the Telnyx request it makes against the fake Call Control API."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from vantum.agent_spec import AgentSpec, BuiltinTool
from vantum.protocol.telnyx.call_control import send_dtmf_body
from vantum.providers.base import ToolCall
from vantum.testing.fake_telnyx import serve_fake_telnyx_rest
from vantum.tools.base import DtmfControl, ToolContext, ToolFailure
from vantum.tools.toolbox import ToolBox
from vantum.transports.telnyx_control import TelnyxCallControl
from vantum.transports.telnyx_rest import TelnyxREST
from vantum.transports.twilio_control import TwilioCallControl
from vantum.transports.twilio_rest import TwilioREST

BOX = ToolBox.for_agent(AgentSpec("a", "x", tools=(BuiltinTool("send_dtmf"),)), b"k")


@attrs.define
class Carrier:
    """A call control that presses keys out of band (as Telnyx's does)."""

    pressed: list[str] = attrs.Factory(list)
    refuse: bool = False

    async def hang_up(self) -> None:
        raise AssertionError("not asked")

    async def transfer(self, target: str) -> None:
        raise AssertionError("not asked")

    async def send_dtmf(self, digits: str) -> None:
        if self.refuse:
            raise ToolFailure("pressing failed: the call has ended")
        self.pressed.append(digits)


async def press(digits: Any, ctx: ToolContext) -> Any:
    call = ToolCall("c1", "send_dtmf", json.dumps({"digits": digits}))
    return await BOX.run(call, ctx)


async def test_tones_carrier_or_a_clear_error() -> None:
    played: list[str] = []

    async def play(digits: str) -> None:
        played.append(digits)

    result = await press("1-2,a#", ToolContext("CA1", play_dtmf=play))
    assert result.ok and result.value == {"pressed": "12wA#", "via": "tones", "ms": 1300}
    assert played == ["12wA#"]

    carrier = Carrier()
    assert isinstance(carrier, DtmfControl)
    result = await press("12#", ToolContext("v3:1", control=carrier, play_dtmf=play))
    assert result.ok and result.value == {"pressed": "12#", "via": "carrier"}
    assert carrier.pressed == ["12#"] and played == ["12wA#"]  # no tones as well

    refused = await press("1", ToolContext("v3:1", control=Carrier(refuse=True)))
    assert not refused.ok and "the call has ended" in refused.error

    browser = await press("1", ToolContext("session"))
    assert browser.error == "send_dtmf needs a phone call; this conversation is not one"


@pytest.mark.parametrize(
    ("digits", "why"),
    [
        ("12x", "'x' is not a DTMF key"),
        ("ww", "no key to press"),
        (12, "needs 'digits', a string"),
        ("9" * 65, "at most 64"),
    ],
)
async def test_bad_digits_are_refused_with_the_reason(digits: Any, why: str) -> None:
    played: list[str] = []

    async def play(d: str) -> None:
        played.append(d)

    result = await press(digits, ToolContext("CA1", play_dtmf=play))
    assert not result.ok and why in result.error and played == []


def test_twilio_control_has_no_out_of_band_dtmf() -> None:
    # A call update with <Play digits> would replace the TwiML and end the stream.
    control = TwilioCallControl(TwilioREST("AC" + "0" * 32, "token"), "CA1")
    assert not isinstance(control, DtmfControl)


async def test_telnyx_request_and_the_fakes_checks() -> None:
    with pytest.raises(ValueError, match="100-500"):
        send_dtmf_body("1", duration_millis=50)
    async with serve_fake_telnyx_rest() as rest:
        rest.add_call("v3:abc")
        rest.calls["v3:abc"] = "active"
        rest_client = TelnyxREST(rest.api_key, rest.base_url)
        control = TelnyxCallControl(rest_client, "v3:abc")
        assert isinstance(control, DtmfControl)
        await control.send_dtmf("1wW#")
        for body in ({"digits": "1x"}, {"digits": "1", "duration_ms": 250}, {}):
            with pytest.raises(Exception, match="10032"):
                await rest_client.action("v3:abc", "send_dtmf", body)
        rest.calls["v3:abc"] = "ended"
        with pytest.raises(ToolFailure, match="90018"):
            await control.send_dtmf("1")
    ok = rest.done("send_dtmf")
    assert [(a.call_control_id, dict(a.body)) for a in ok] == [
        ("v3:abc", {"digits": "1wW#", "duration_millis": 250})
    ]
    assert rest.calls["v3:abc"] == "ended"
