"""Every caller setting reaches the place where it takes effect (real sockets, fakes).

``audio.input.start`` fields and Twilio's custom parameters become one
``CallSettings`` that the session hands in band to each actor; these tests follow
each field to what a provider or the caller observes: the recogniser's URL, the
synthesiser's request, the answer's audio. ``silenceMs`` is followed to the VAD in
tests/test_audio_path.py; ``encoding`` accepts only ``pcm16`` (tests/test_protocol.py).
"""

from __future__ import annotations

import attrs
import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA, speak_turn
from test_twilio_e2e import OA, TOKEN, answered, utterance

from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_twilio import FakeTwilioConfig, dial_fake_twilio, fetch_twiml
from vantum.testing.stack import Stack, open_stack


def tts_requests(stack: Stack, uid: str) -> set[tuple[str, int, str | None]]:
    """(voice, sample rate, language) of every synthesis request of one answer."""
    requests = stack.cartesia.requests[uid]
    return {(r.voice_id, r.output_format.sample_rate, r.language) for r in requests}


async def test_every_input_start_field_takes_effect_and_a_second_start_replaces_them() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            turn = await speak_turn(client, 24_000, language="es-ES", voiceId="voz-1")
            (uid,) = turn.utterance_ids
            # language: the recogniser was opened with it, and only with it (no English
            # stream first); transcripts carry it.
            assert [q["language"] for q in stack.deepgram.query_params] == ["es-ES"]
            final = next(e for e in turn.events if e["eventType"] == ev.TRANSCRIPT_FINAL)
            assert final["payload"]["language"] == "es-ES"
            # voiceId and samplingRate: the synthesiser's voice and rate, the answer's rate;
            # the language is the synthesiser's too.
            assert tts_requests(stack, uid) == {("voz-1", 24_000, "es")}
            assert turn.sample_rate == 24_000

            # A second start replaces every field: new language (the recogniser is
            # restarted with it), voice, rate, and auto turn-taking with its silence.
            await client.start(
                16_000, language="fr-FR", voiceId="voz-2", turnMode="auto", silenceMs=300
            )
            collected = []
            async with trio.open_nursery() as nursery:

                async def collect() -> None:
                    collected.append(await client.collect_turn())

                nursery.start_soon(collect)
                # No audio.input.end: in auto mode the silence ends the turn.
                speech = speech_like(1.0, 16_000) + silence(1.5, 16_000)
                await client.stream_audio(speech, 16_000)
            (auto_turn,) = collected
            (uid2,) = auto_turn.utterance_ids
            assert [q["language"] for q in stack.deepgram.query_params] == ["es-ES", "fr-FR"]
            assert tts_requests(stack, uid2) == {("voz-2", 16_000, "fr")}
            assert auto_turn.sample_rate == 16_000
            assert auto_turn.finals and auto_turn.errors == []


async def test_twilio_custom_parameters_take_effect() -> None:
    """``language`` and ``voiceId`` on the TwiML ``<Stream>`` reach the STT and the TTS."""
    async with open_stack(
        deepgram=FAST_DG, openai=OA, cartesia=FAST_CA, twilio_auth_token=TOKEN
    ) as stack:
        cfg = FakeTwilioConfig(auth_token=TOKEN)
        answer = await fetch_twiml(stack.url + "/twilio/voice?language=de-DE&voiceId=stimme", cfg)
        assert answer.parameters["language"] == "de-DE" and answer.parameters["voiceId"] == "stimme"
        cfg = attrs.evolve(cfg, custom_parameters=answer.parameters)
        assert answer.stream_url is not None
        async with dial_fake_twilio(answer.stream_url, cfg) as call:
            await call.say(utterance())
            uid = await answered(stack, call, 1)
        assert [q["language"] for q in stack.deepgram.query_params] == ["de-DE"]
        assert tts_requests(stack, uid) == {("stimme", 8_000, "de")}


async def test_a_text_only_call_never_opens_a_recogniser() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.send(ev.TEXT_INPUT, {"text": "hi there"})
            turn = await client.collect_turn()
            assert turn.audio_seconds > 0
    assert stack.deepgram.query_params == []
