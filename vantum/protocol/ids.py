"""UUIDv7 identifiers: time-ordered, so logs and stored events sort by creation."""

from __future__ import annotations

import uuid6


def new_id() -> str:
    """A fresh UUIDv7 as its canonical 36-character string."""
    return str(uuid6.uuid7())


def is_uuid(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 36:
        return False
    try:
        import uuid

        uuid.UUID(value)
    except ValueError:
        return False
    return True
