"""``/ws`` admission end to end: tokens, Origin allow-list, per-IP connection rate,
session cap and call duration, each against a real server on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA
from trio_websocket import ConnectionRejected, open_websocket_url

from vantum.cli import main as cli_main
from vantum.config import Config
from vantum.errors import ConfigError
from vantum.pipeline.session import Engines
from vantum.protocol import events as ev
from vantum.server import local_secret
from vantum.server.app import VantumApp
from vantum.server.auth import issue_token, load_secret, new_secret, verify_token
from vantum.testing.browser_client import BrowserClient, ServerRefused
from vantum.testing.memory import ScriptedLLM, ScriptedSTT, ScriptedTTS
from vantum.testing.stack import Stack, open_stack

SECRET = new_secret()
KEY = load_secret(SECRET)


def token(
    ttl_s: int = 60,
    *,
    now: float | None = None,
    key: bytes = KEY,
    audience: str = "ws",
    max_ttl_s: int = 4 * 3600,
) -> str:
    at = time.time() if now is None else now
    return issue_token(
        key, subject="test", audience=audience, ttl_s=ttl_s, now=at, max_ttl_s=max_ttl_s
    )


def legacy_token(ttl_s: int = 12 * 3600) -> str:
    """A token as minted before audiences and a lifetime cap: no ``aud``."""
    iat = int(time.time())
    claims = {"sub": "page", "iat": iat, "exp": iat + ttl_s, "nonce": "0123456789abcdef"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    digest = hmac.new(KEY, f"v1.{payload}".encode(), hashlib.sha256).digest()
    return f"v1.{payload}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


TEN_YEARS = 10 * 365 * 86400


def stack(**config: Any) -> AbstractAsyncContextManager[Stack]:
    return open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA, **config)


def refused_count(app: VantumApp, reason: str) -> float:
    value = app.metrics.registry.get_sample_value(
        "vantum_sessions_refused_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_valid_token_in_header_query_or_subprotocol_is_admitted() -> None:
    async with open_stack(auth_secret=SECRET) as s:
        async with BrowserClient.connect(s.ws_url, token=token()) as client:
            await client.send(ev.TEXT_INPUT, {"text": "hello"})
            assert (await client.collect_turn()).audio_seconds > 0
        async with BrowserClient.connect(f"{s.ws_url}?token={token()}") as client:
            assert client.session_id
        # Browsers: new WebSocket(url, ["vantum.v1", "bearer." + token]); the server
        # must echo a protocol it was offered, and not the one carrying the token.
        async with open_websocket_url(
            s.ws_url, subprotocols=["vantum.v1", f"bearer.{token()}"]
        ) as ws:
            assert ws.subprotocol == "vantum.v1"
            ack = await ws.get_message()
            assert isinstance(ack, bytes) and ev.CONNECTION_ACK.encode() in ack


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda: None, "missing"),
        (lambda: token(ttl_s=5, now=time.time() - 10), "expired"),
        (lambda: token(key=load_secret(new_secret())), "bad_signature"),  # forged
        (lambda: token()[:-3] + "AAA", "bad_signature"),  # tampered signature
        (lambda: "v1.not-a-token", "malformed"),
        (lambda: token(now=time.time() + 3600), "not_yet_valid"),
        (lambda: token(audience="api"), "wrong_audience"),  # same secret, another service
        (lambda: token(TEN_YEARS, max_ttl_s=TEN_YEARS), "too_long_lived"),
        (legacy_token, "no_audience"),
    ],
)
async def test_a_bad_token_gets_an_auth_error_and_close_1008(
    make_token: object, reason: str
) -> None:
    async with open_stack(auth_secret=SECRET) as s:
        with pytest.raises(ServerRefused) as refused:
            async with BrowserClient.connect(s.ws_url, token=make_token()):  # type: ignore[operator]
                pass
        event = refused.value.event
        assert event["eventType"] == ev.ERR_AUTH
        assert event["requestType"] == "connect"
        assert event["payload"]["reason"] == reason
        assert "token" in event["payload"]["message"]
        assert refused.value.close_code == ev.CLOSE_POLICY
        assert refused_count(s.app, f"auth_{reason}") == 1
        assert not s.app.sessions  # no session was started for it
        # The server goes on serving good callers.
        async with BrowserClient.connect(s.ws_url, token=token()) as client:
            assert client.session_id


async def test_the_maximum_token_lifetime_is_configurable() -> None:
    async with open_stack(auth_secret=SECRET, token_max_ttl_s=120) as s:
        async with BrowserClient.connect(s.ws_url, token=token(120)) as client:
            assert client.session_id
        with pytest.raises(ServerRefused) as refused:
            async with BrowserClient.connect(s.ws_url, token=token(121)):
                pass
        assert refused.value.event["payload"]["reason"] == "too_long_lived"
        assert "120 s" in refused.value.event["payload"]["message"]
        assert refused_count(s.app, "auth_too_long_lived") == 1


async def test_foreign_origins_are_refused_during_the_handshake() -> None:
    async with open_stack(auth_secret=SECRET) as s:
        own = s.url  # e.g. http://127.0.0.1:PORT: the page this server serves
        async with BrowserClient.connect(s.ws_url, token=token(), origin=own) as client:
            assert client.session_id
        with pytest.raises(ConnectionRejected) as rejected:
            async with BrowserClient.connect(s.ws_url, token=token(), origin="https://evil.test"):
                pass
        assert rejected.value.status_code == 403
        assert json.loads(rejected.value.body or b"{}") == {"error": "origin not allowed"}
        assert refused_count(s.app, "auth_origin_not_allowed") == 1

    allowed = ("https://app.example.com", "https://*.example.org")
    async with open_stack(auth_secret=SECRET, allowed_origins=allowed) as s:
        for origin in ("https://app.example.com", "https://a.b.example.org"):
            async with BrowserClient.connect(s.ws_url, token=token(), origin=origin):
                pass
        for origin in (s.url, "https://example.org", "http://app.example.com"):
            with pytest.raises(ConnectionRejected):
                async with BrowserClient.connect(s.ws_url, token=token(), origin=origin):
                    pass


async def test_a_connection_flood_from_one_address_gets_429() -> None:
    async with stack(connect_rate_per_s=0.01, connect_burst=3) as s:
        for _ in range(3):
            async with BrowserClient.connect(s.ws_url):
                pass
        with pytest.raises(ConnectionRejected) as rejected:
            async with BrowserClient.connect(s.ws_url):
                pass
        assert rejected.value.status_code == 429
        headers = dict(rejected.value.headers)
        assert int(headers[b"retry-after"]) == 100  # one token refills in 1 / 0.01 s
        assert refused_count(s.app, "rate_limited") == 1
        # Only /ws connections are metered: the address can still reach /health.
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{s.url}/health")).status_code == 200


async def test_sessions_beyond_the_cap_are_refused_with_1013() -> None:
    async with stack(max_sessions=2) as s:
        async with BrowserClient.connect(s.ws_url), BrowserClient.connect(s.ws_url):
            with pytest.raises(ServerRefused) as refused:
                async with BrowserClient.connect(s.ws_url):
                    pass
            assert refused.value.event["eventType"] == "connection.error.capacity"
            assert refused.value.close_code == ev.CLOSE_TRY_AGAIN
        await s.app.wait_idle()
        async with BrowserClient.connect(s.ws_url) as client:  # room again
            assert client.session_id


async def test_calls_end_at_the_configured_maximum_duration() -> None:
    async with stack(max_call_s=0.5) as s:
        async with BrowserClient.connect(s.ws_url) as client:
            with trio.fail_after(5):
                event = await client.expect("connection.lifecycle.max_duration")
                async for _ in client._inbox:
                    pass
            assert event["payload"]["message"] == "maximum call duration reached"
            assert client.close_code == ev.CLOSE_NORMAL


def test_no_secret_and_no_dev_flag_is_a_configuration_error() -> None:
    engines = Engines(ScriptedSTT([]), ScriptedLLM(), ScriptedTTS())
    with pytest.raises(ConfigError, match="--insecure-no-auth"):
        VantumApp(Config(), engines)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        VantumApp(Config(auth_secret="short"), engines)
    assert VantumApp(Config(insecure_no_auth=True), engines).auth_secret is None


def test_auth_and_limit_settings_from_the_environment() -> None:
    env = {
        "VANTUM_INSECURE_NO_AUTH": "1",
        "VANTUM_ALLOWED_ORIGINS": "https://a.example.com, http://localhost:*",
        "VANTUM_CONNECT_RATE": "5",
        "VANTUM_CONNECT_BURST": "50",
        "VANTUM_MAX_CALL_S": "120",
        "VANTUM_OUTPUT_CHUNK_MS": "100",
        "VANTUM_TOKEN_MAX_TTL_S": "900",
    }
    config = Config.from_env(env)
    assert config.output_chunk_ms == 100
    assert config.token_max_ttl_s == 900
    assert Config.from_env({}).token_max_ttl_s == 4 * 3600
    with pytest.raises(ConfigError, match="VANTUM_TOKEN_MAX_TTL_S=0"):
        Config.from_env({"VANTUM_TOKEN_MAX_TTL_S": "0"})
    assert config.insecure_no_auth
    assert config.allowed_origins == ("https://a.example.com", "http://localhost:*")
    assert (config.connect_rate_per_s, config.connect_burst, config.max_call_s) == (5, 50, 120)
    with pytest.raises(ConfigError, match="VANTUM_INSECURE_NO_AUTH"):
        Config.from_env({"VANTUM_INSECURE_NO_AUTH": "maybe"})
    with pytest.raises(ConfigError, match=r"VANTUM_OUTPUT_CHUNK_MS=5: use 10\.\.1000"):
        Config.from_env({"VANTUM_OUTPUT_CHUNK_MS": "5"})


def test_the_local_secret_file_is_private_shared_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "vantum" / "auth-secret"
    assert local_secret.read_or_create(str(path), create=False) is None
    secret = local_secret.read_or_create(str(path), create=True)
    assert secret is not None and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_secret.read_or_create(str(path), create=True) == secret  # reused
    # `vantum token` on the same machine signs with it.
    monkeypatch.delenv("VANTUM_AUTH_SECRET", raising=False)
    monkeypatch.setenv("VANTUM_AUTH_SECRET_FILE", str(path))
    assert cli_main(["token", "--ttl", "60"]) == 0
    minted = capsys.readouterr().out.strip()
    claims = verify_token(load_secret(secret), minted, now=time.time(), audience="ws")
    assert (claims.subject, claims.audience) == ("cli", "ws")
    assert claims.expires_at - claims.issued_at == 60
    # Another audience is for another service sharing the secret: /ws would refuse it.
    assert cli_main(["token", "--audience", "api", "--subject", "backend"]) == 0
    other = verify_token(
        load_secret(secret), capsys.readouterr().out.strip(), now=time.time(), audience="api"
    )
    assert (other.subject, other.audience) == ("backend", "api")
    # A token the server would refuse is not minted at all.
    assert cli_main(["token", "--ttl", str(10 * 365 * 86400)]) == 2
    assert "VANTUM_TOKEN_MAX_TTL_S" in capsys.readouterr().err
    monkeypatch.setenv("VANTUM_TOKEN_MAX_TTL_S", "30")
    assert cli_main(["token", "--ttl", "60"]) == 2
    assert "maximum token lifetime of 30 s" in capsys.readouterr().err
    monkeypatch.delenv("VANTUM_TOKEN_MAX_TTL_S")
    assert cli_main(["token", "--audience", "WS/../x"]) == 2
    assert "audience" in capsys.readouterr().err
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        local_secret.read_or_create(str(path), create=True)
    monkeypatch.setenv("VANTUM_AUTH_SECRET_FILE", str(tmp_path / "missing"))
    assert cli_main(["token"]) == 2
    assert "vantum serve" in capsys.readouterr().err
