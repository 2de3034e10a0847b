"""Model files that wheels carry in parts: assembled once, checked against pinned hashes.

Why: a PyPI file is capped at ~100 MB, so the models Vantum runs offline come split
over several wheels (the offline LLM's GGUF in six, Whisper base's ``model.bin`` in
two), under package names that say nothing about their content. What we trust is the
sha256 of each assembled file, pinned here by the engine that uses it, not the names.

- :meth:`PackagedModel.assemble` concatenates each file's parts, in order, into the
  cache directory (``VANTUM_CACHE_DIR``, else ``~/.cache/vantum``), hashing as it
  writes to a temporary name and renaming only a file whose hash matches (so a torn or
  concurrent write is never seen by a loader, and several worker processes may
  assemble at once). A mismatch is refused with a clear error, nothing is left behind.
- An existing copy is hashed again at every load (0.3 s for Whisper base's 145 MB,
  1-3 s for the LLM's 491 MB): a copy that does not match is rebuilt from the packages.
- Nothing is downloaded: the parts are files inside installed wheels; when a package
  is missing the error names the extra that installs it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import attrs

from ..errors import VantumError

log = logging.getLogger("vantum.providers.packaged_model")


class ModelPackageError(VantumError):
    """A packaged model is not installed, or does not match its pinned hash."""


def cache_dir() -> Path:
    """Where assembled models live (``VANTUM_CACHE_DIR``, else ``~/.cache/vantum``)."""
    return Path(os.environ.get("VANTUM_CACHE_DIR") or Path.home() / ".cache" / "vantum")


@attrs.frozen
class Part:
    """One piece of a model file: ``path`` inside the installed package ``package``."""

    package: str
    path: str

    def locate(self) -> Path:
        """The part's file (without importing the package: no package code runs)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(self.package)
        return Path(next(iter(spec.submodule_search_locations))) / self.path


@attrs.frozen
class PinnedFile:
    """A model file: its name once assembled, its parts in order, its pinned hash."""

    name: str
    parts: tuple[Part, ...]
    sha256: str
    size: int


@attrs.frozen
class PackagedModel:
    """A model made of :class:`PinnedFile` s, all assembled into one directory."""

    what: str
    """What the model is, for errors and logs ("Whisper base")."""
    extra: str
    """The pip extra that installs its packages (named in the error when missing)."""
    files: tuple[PinnedFile, ...]

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.package for f in self.files for p in f.parts))

    def installed(self) -> bool:
        """Whether every package holding a part is installed."""
        return all(importlib.util.find_spec(m) is not None for m in self.packages)

    def assemble(self, directory: Path | None = None) -> Path:
        """The directory holding every file, assembled and hash-checked (blocking)."""
        directory = directory or cache_dir()
        built = [self._ensure(pinned, directory / pinned.name) for pinned in self.files]
        if any(built):
            log.info("%s: assembled into %s from its packages", self.what, directory)
        return directory

    def _ensure(self, pinned: PinnedFile, dest: Path) -> bool:
        """Check ``dest`` against its pin, (re)building it if needed: True if built."""
        if dest.exists():
            if dest.stat().st_size == pinned.size and sha256_of(dest) == pinned.sha256:
                return False
            log.warning("%s does not match its pinned sha256: rebuilding it", dest)
            dest.unlink()  # a torn or tampered copy: rebuild it from the packages
        try:
            parts = [p.locate() for p in pinned.parts]
        except ModuleNotFoundError as exc:
            raise ModelPackageError(
                f"{self.what} is not installed ({exc.name} is missing): "
                f"pip install 'vantum[{self.extra}]'"
            ) from exc
        if missing := [str(p) for p in parts if not p.is_file()]:
            raise ModelPackageError(
                f"{self.what}: {', '.join(missing)} missing from its package; "
                f"reinstall vantum[{self.extra}]"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
        h = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for part in parts:
                    with part.open("rb") as f:
                        while block := f.read(1 << 20):
                            h.update(block)
                            out.write(block)
            if h.hexdigest() != pinned.sha256:
                raise ModelPackageError(
                    f"{self.what}: {pinned.name} does not match its pinned sha256 "
                    f"({h.hexdigest()} != {pinned.sha256}); refusing to load it — "
                    f"reinstall vantum[{self.extra}]"
                )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return True


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
