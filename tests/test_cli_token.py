"""``vantum token --ttl`` takes long durations, so a client that cannot send headers
(the original frontend's ``VITE_WS_URL``) can carry a long-lived token in its URL."""

from __future__ import annotations

import argparse
import time

import pytest

from vantum.cli import main, parse_duration
from vantum.server.auth import load_secret, new_secret, verify_token


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43_200),
        ("30d", 2_592_000),
        ("2W", 1_209_600),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "0", "0d", "-5", "1.5h", "30y", "ten"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_token_with_a_30_day_ttl(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = new_secret()
    month = 30 * 86_400
    monkeypatch.setenv("VANTUM_AUTH_SECRET", secret)
    monkeypatch.setenv("VANTUM_TOKEN_MAX_TTL_S", str(month))  # the server allows it
    assert main(["token", "--ttl", "30d", "--subject", "frontend"]) == 0
    token = capsys.readouterr().out.strip()
    claims = verify_token(
        load_secret(secret),
        token,
        now=time.time() + 29 * 86_400,
        audience="ws",
        max_ttl_s=month,
    )
    assert claims.subject == "frontend"
    assert claims.expires_at - time.time() == pytest.approx(30 * 86_400, abs=60)


def test_a_30_day_token_needs_the_server_to_allow_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VANTUM_AUTH_SECRET", new_secret())
    monkeypatch.delenv("VANTUM_TOKEN_MAX_TTL_S", raising=False)
    assert main(["token", "--ttl", "30d"]) != 0
    assert "VANTUM_TOKEN_MAX_TTL_S" in capsys.readouterr().err
