"""Minting ``/ws`` tokens that choose a call's agent: for the user's own backend.

A browser page must not pick its own instructions or variables (anyone can edit a
page), so those travel only in a token signed with the server's secret. A backend
that shares ``VANTUM_AUTH_SECRET`` mints one per call::

    from vantum.server.call_tokens import call_token
    token = call_token(secret, agent="concierge", variables={"caller": "Ada"})
    # the page then opens wss://voice.example.com/ws?token=<token>

``vantum token --agent NAME --var k=v`` does the same from a shell.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ..agents.selection import check_overrides, check_variables
from .auth import DEFAULT_MAX_TTL_S, WS_AUDIENCE, issue_token, load_secret


def call_token(
    secret: str | bytes,
    *,
    agent: str | None = None,
    variables: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    subject: str = "backend",
    ttl_s: int = 300,
    now: float | None = None,
    max_ttl_s: int = DEFAULT_MAX_TTL_S,
) -> str:
    """A ``/ws`` token binding the call to ``agent`` with ``variables`` and ``overrides``
    (``instructions``, ``greeting``, ``voice``, ``language``).

    Raises ValueError for a short secret, bad variables or overrides, or a TTL the
    server would refuse. Whether ``agent`` exists is checked by the server on connect
    (``connection.error.agent``).
    """
    check_variables(dict(variables) if variables is not None else None, "variables")
    check_overrides(dict(overrides) if overrides is not None else None, "overrides")
    key = load_secret(secret)
    return issue_token(
        key,
        subject=subject,
        audience=WS_AUDIENCE,
        ttl_s=ttl_s,
        now=time.time() if now is None else now,
        max_ttl_s=max_ttl_s,
        agent=agent,
        variables=variables,
        overrides=overrides,
    )


__all__ = ["call_token"]
