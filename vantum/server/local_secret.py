"""The auth secret a single-machine setup keeps on disk, so nobody has to make one.

``vantum serve`` without ``VANTUM_AUTH_SECRET`` creates a random secret in a file
only its user can read; ``vantum token`` and ``vantum call`` on the same machine
read it, so a local call works with no setup while ``/ws`` still demands a token.
A deployment sets ``VANTUM_AUTH_SECRET`` (shared with whatever mints tokens) instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from .auth import load_secret, new_secret


def read_or_create(path: str, *, create: bool) -> str | None:
    """The secret stored at ``path``; a new one when missing and ``create`` is set."""
    file = Path(path).expanduser()
    try:
        return _read(file)
    except FileNotFoundError:
        if not create:
            return None
    file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret = new_secret()
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _read(file)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def resolve(env_secret: str | None, path: str, *, create: bool) -> str | None:
    """``VANTUM_AUTH_SECRET`` if set, else the local secret file."""
    return env_secret or read_or_create(path, create=create)


def _read(file: Path) -> str:
    if os.name == "posix" and file.stat().st_mode & 0o077:
        raise ConfigError(f"{file} is readable by other users; run `chmod 600 {file}`")
    secret = file.read_text().strip()
    load_secret(secret)  # refuse a short secret with the usual message
    return secret
