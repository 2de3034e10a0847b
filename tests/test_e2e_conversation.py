"""A real server and real fake providers on 127.0.0.1, talked to through /ws."""

from __future__ import annotations

import pytest
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA, check_answer_events, speak_turn

from vantum.protocol import events as ev
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_cartesia import expected_duration
from vantum.testing.stack import open_stack


@pytest.mark.parametrize(
    ("rate", "tts_rate"), [(48_000, 48_000), (16_000, 16_000), (8_000, 8_000), (12_000, 24_000)]
)
async def test_multi_turn_conversation(rate: int, tts_rate: int) -> None:
    """Cartesia is asked for the caller's own rate when it has it (no resampling);
    otherwise for the configured 24 kHz, and the player resamples."""
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            assert len(client.session_id) == 36 and client.session_id[14] == "7"
            seen_uids: set[str] = set()
            for expected in ["hello there", "what time is it", "thanks a lot"]:
                turn = await speak_turn(client, rate)
                assert turn.errors == []
                assert " ".join(turn.finals) == expected
                check_answer_events(turn)
                assert turn.sample_rate == rate
                produced = stack.cartesia.audio_seconds[turn.utterance_ids[0]]
                asked = {
                    r.output_format.sample_rate
                    for r in stack.cartesia.requests[turn.utterance_ids[0]]
                }
                assert asked == {tts_rate}
                assert turn.audio_seconds == pytest.approx(produced, abs=0.002)
                assert produced >= sum(expected_duration(t) for t in turn.text)
                assert "You said" in " ".join(turn.text) and expected in " ".join(turn.text).lower()
                assert turn.utterance_ids[0] not in seen_uids
                seen_uids.add(turn.utterance_ids[0])
                assert turn.metrics["voiceToVoiceMs"] is not None
            # The LLM saw the whole conversation, system prompt first.
            messages = stack.openai.requests[-1]["messages"]
            assert messages[0]["role"] == "system"
            assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * 2 + ["user"]
    assert stack.deepgram.query_params[0]["sample_rate"] == "16000"


async def test_text_input_gets_spoken_answer() -> None:
    async with open_stack(openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.send(ev.TEXT_INPUT, {"text": "hi there"})
            turn = await client.collect_turn()
            assert turn.sample_rate == 16_000 and turn.audio_seconds > 0.5
            check_answer_events(turn)
