"""The talk-to-it page (``GET /``) in real headless Chromium against the server on fakes.

Chromium's fake media flags play a generated WAV as the microphone, so the page's
whole path runs for real: AudioWorklet capture at the device rate, PCM16 chunks
in msgpack frames, the server's resampler, STT, LLM and TTS fakes, and gapless
playback on the page's AudioContext. Assertions read ``window.vantumState``.

Needs Debian's ``chromium`` and the ``playwright`` Python package (used only as a
CDP driver for /usr/bin/chromium; its own browser download is never used); see
scripts/install-browser.sh. Without them the test is skipped. The screenshot goes
to ``test-artifacts/browser-page.png``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

from vantum.server.auth import issue_token, load_secret, new_secret
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.fake_cartesia import FakeCartesiaConfig, expected_duration
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.stack import open_stack

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path(os.environ.get("VANTUM_CHROMIUM", "/usr/bin/chromium"))
pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} not installed (scripts/install-browser.sh installs it)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="playwright not installed (scripts/install-browser.sh installs it)",
    ),
]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACT = ROOT / "test-artifacts" / "browser-page.png"
MIC_RATE = 48_000
STORY = (
    "Once upon a time a small robot learned to listen. ||BREAK|| It heard the wind, "
    "the rain and the people in the town. ||BREAK|| Every evening it told them what it "
    "had heard, and everyone sat down to hear it."
)
SCRIPT = ("hello there", "what can you do", "stop and tell me the time")


def reply(messages: list[dict[str, Any]]) -> str:
    """Short answers keep the real-time paced audio quick; "story" asks for a long one."""
    text = str(messages[-1]["content"])
    return STORY if "story" in text.lower() else f"You said: {text}. ||BREAK|| Anything else?"


DEEPGRAM = FakeDeepgramConfig(script=SCRIPT, final_latency=0.05, interim_latency=0.02)
OPENAI = FakeOpenAIConfig(first_token_latency=0.05, tokens_per_second=400, responder=reply)
CARTESIA = FakeCartesiaConfig(first_chunk_latency=0.04, realtime_factor=20)

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def write_wav(path: Path, pcm: bytes) -> Path:
    """Chromium loops this file as the fake microphone."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIC_RATE)
        w.writeframes(pcm)
    return path


STATE = "window.vantumState"


@contextmanager
def connected_page(url: str, wav: Path, query: str = "") -> Iterator[tuple[Page, list[str]]]:
    """Chromium with ``wav`` as its microphone, the page open and connected."""
    with open_page(url, wav, query) as (page, page_errors):
        page.click("#connect-btn")
        page.wait_for_function(f"{STATE}.connected && !document.getElementById('ptt').disabled")
        yield page, page_errors


@contextmanager
def open_page(url: str, wav: Path, query: str = "") -> Iterator[tuple[Page, list[str]]]:
    """Chromium with ``wav`` as its microphone and the page at ``url/query`` open."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_FLAGS, f"--use-file-for-fake-audio-capture={wav}"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(15_000)
            page_errors: list[str] = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.on(
                "console",
                lambda msg: page_errors.append(msg.text) if msg.type == "error" else None,
            )
            page.goto(url + "/" + query)
            yield page, page_errors
        finally:
            browser.close()


def push_to_talk_session(url: str, wav: Path) -> dict[str, Any]:
    """Three turns (spoken, typed then barged in on, spoken); returns the page state."""
    with connected_page(url, wav) as (page, page_errors):
        # Turn 1: push-to-talk, held while ~1.5 s of microphone audio is streamed.
        box = page.locator("#ptt").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.wait_for_function(f"{STATE}.audioSecondsSent >= 1.5")
        page.mouse.up()
        page.wait_for_function(
            f"{STATE}.finals.length > 0 && {STATE}.responses.length === 1"
            f" && {STATE}.responses[0].complete && {STATE}.lastMetrics !== null"
            f" && !{STATE}.playing && {STATE}.sourcesEnded === {STATE}.sourcesStarted"
        )
        first = page.evaluate(STATE)

        # Turn 2: typed; its long answer is interrupted by pressing push-to-talk.
        page.fill("#text-input", "Tell me a story")
        page.press("#text-input", "Enter")
        page.wait_for_function(
            f"{STATE}.playing && {STATE}.responses.length === 2"
            f" && {STATE}.responses[1].audioSeconds > 1.0"
        )
        page.mouse.down()
        page.wait_for_function(f"{STATE}.cancels === 1")
        at_cancel = page.evaluate(f"({{playing: {STATE}.playing}})")
        sent = page.evaluate(f"{STATE}.audioSecondsSent")
        page.wait_for_function(f"{STATE}.audioSecondsSent >= {sent} + 1.0")
        page.mouse.up()
        page.wait_for_function(
            f"{STATE}.responses.length === 3 && {STATE}.responses[2].complete"
            f" && {STATE}.metrics.length === 3 && !{STATE}.playing"
        )
        bars = page.locator("#latency-chart rect.bar").count()
        rows = page.locator("#latency-chart g.chart-row").count()
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACT))
        final: dict[str, Any] = page.evaluate(STATE)
        final.update(
            first=first, at_cancel=at_cancel, bars=bars, rows=rows, page_errors=page_errors
        )
        return final


def hands_free_session(url: str, wav: Path, query: str = "") -> dict[str, Any]:
    """Hands-free on until the server's VAD ended a turn and it was answered, then off."""
    with connected_page(url, wav, query) as (page, page_errors):
        page.click("label.switch")
        page.wait_for_function(f"{STATE}.capturing && {STATE}.turnMode === 'auto'")
        page.wait_for_function(
            f"{STATE}.finals.length > 0 && {STATE}.responses.length > 0"
            f" && {STATE}.responses[0].text !== '' && {STATE}.audioChunksReceived > 0"
        )
        page.click("label.switch")
        page.wait_for_function(f"!{STATE}.capturing && {STATE}.turnMode === null")
        final: dict[str, Any] = page.evaluate(STATE)
        final.update(ptt_disabled_after=page.locator("#ptt").is_disabled(), page_errors=page_errors)
        return final


def refused_page(url: str, wav: Path) -> dict[str, Any]:
    """The page opened without a token against a server that wants one."""
    with open_page(url, wav) as (page, _):
        page.click("#connect-btn")
        page.wait_for_function(f"{STATE}.errors.length > 0 && {STATE}.closeCode !== null")
        first: dict[str, Any] = page.evaluate(f"{STATE}.errors[0]")
        first["closeCode"] = page.evaluate(f"{STATE}.closeCode")
        return first


async def test_push_to_talk_typing_and_barge_in(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "mic.wav", speech_like(6.0, MIC_RATE, level_dbfs=-14.0, seed=7))
    async with open_stack(deepgram=DEEPGRAM, openai=OPENAI, cartesia=CARTESIA) as stack:
        with trio.fail_after(55):
            s = await trio.to_thread.run_sync(push_to_talk_session, stack.url, wav)

    assert s["page_errors"] == []
    assert s["errors"] == []
    assert s["sessionId"] and s["sampleRate"] in range(8_000, 48_001)

    # Turn 1: the fake recogniser's script text, and the answer's text and audio.
    first = s["first"]
    assert first["finals"] == [SCRIPT[0]]
    assert first["interims"] and SCRIPT[0].startswith(first["interims"][0])
    assert first["responses"][0]["text"] == f"You said: {SCRIPT[0]}. Anything else?"
    assert first["audioChunksReceived"] > 10
    assert first["audioSecondsScheduled"] > 1.0
    assert first["sourcesStarted"] == first["audioChunksReceived"] == first["sourcesEnded"]
    assert first["lastMetrics"]["voiceToVoiceMs"] > 0

    # Turn 2: typed, answered, then cut off: playback stopped the moment cancel arrived.
    story = s["responses"][1]
    assert story["cancelled"]
    assert 1.0 < story["audioSeconds"] < expected_duration(STORY.replace("||BREAK|| ", "")) - 2
    assert s["at_cancel"] == {"playing": False}
    assert s["cancels"] == 1

    # Turn 3: the barge-in turn was heard and answered in full.
    assert s["finals"][-1] in SCRIPT[1:]
    assert s["responses"][2]["text"].startswith(f"You said: {s['finals'][-1]}")
    assert not s["responses"][2]["cancelled"]

    # The latency chart drew one row per turn, one bar per measured stage.
    assert len(s["metrics"]) == 3 and s["rows"] == 3 and s["bars"] >= 6
    assert ARTIFACT.stat().st_size > 10_000
    docs_shot = ROOT / "docs" / "browser-page.png"
    if os.environ.get("VANTUM_UPDATE_SCREENSHOT"):
        shutil.copyfile(ARTIFACT, docs_shot)


async def test_hands_free_mode_with_token_auth(tmp_path: Path) -> None:
    """As `vantum serve` runs by default: the page passes the URL's ``?token=`` on, and
    the browser's own Origin header passes the same-origin check."""
    speech = speech_like(1.5, MIC_RATE, level_dbfs=-14.0, seed=3)
    wav = write_wav(tmp_path / "mic.wav", speech + silence(1.5, MIC_RATE))
    secret = new_secret()
    token = issue_token(
        load_secret(secret), subject="page", audience="ws", ttl_s=300, now=time.time()
    )
    async with open_stack(
        deepgram=DEEPGRAM, openai=OPENAI, cartesia=CARTESIA, auth_secret=secret
    ) as stack:
        with trio.fail_after(55):
            s = await trio.to_thread.run_sync(hands_free_session, stack.url, wav, f"?token={token}")
        with trio.fail_after(30):
            shown = await trio.to_thread.run_sync(refused_page, stack.url, wav)
    # Without a token the page shows why it was refused instead of a bare close code.
    assert shown["eventType"] == "connection.error.auth"
    assert "token" in shown["message"] and "vantum token" in shown["message"]
    assert shown["closeCode"] == 1008
    assert s["page_errors"] == [] and s["errors"] == []
    # The server's VAD ended the turn on silence; no audio.input.end was needed.
    assert s["finals"][0] in SCRIPT
    assert s["responses"][0]["text"].startswith(f"You said: {s['finals'][0]}")
    assert s["audioSecondsScheduled"] > 0
    assert not s["ptt_disabled_after"]
