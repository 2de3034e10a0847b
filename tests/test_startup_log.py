"""The start-up log: a clickable page URL with a token on loopback, never elsewhere."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio

from vantum.config import Config
from vantum.pipeline.session import Engines
from vantum.server.app import VantumApp
from vantum.server.auth import load_secret, new_secret, verify_token
from vantum.server.main import PAGE_TOKEN_TTL_S, _serve, is_loopback, page_instructions
from vantum.testing.browser_client import BrowserClient
from vantum.testing.memory import ScriptedLLM, ScriptedSTT, ScriptedTTS

SECRET = new_secret()
NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("voice.example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_loopback_binds(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_loopback_server_logs_a_working_page_url() -> None:
    config = Config(host="127.0.0.1", auth_secret=SECRET)
    line = page_instructions("http://127.0.0.1:8000", config, now=NOW)
    assert line.startswith("open http://127.0.0.1:8000/?token=v1.")
    token = parse_qs(urlsplit(line.removeprefix("open ")).query)["token"][0]
    claims = verify_token(load_secret(SECRET), token, now=NOW, audience="ws")
    assert claims.expires_at - claims.issued_at == PAGE_TOKEN_TTL_S
    # Never longer than the server would accept.
    short = Config(host="127.0.0.1", auth_secret=SECRET, token_max_ttl_s=600)
    line = page_instructions("http://127.0.0.1:8000", short, now=NOW)
    token = parse_qs(urlsplit(line.removeprefix("open ")).query)["token"][0]
    claims = verify_token(load_secret(SECRET), token, now=NOW, audience="ws", max_ttl_s=600)
    assert claims.expires_at - claims.issued_at == 600


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "voice.example.com"])
def test_a_server_reachable_from_elsewhere_logs_no_token(host: str) -> None:
    config = Config(host=host, auth_secret=SECRET)
    line = page_instructions(f"http://{host}:8000", config, now=NOW)
    assert "v1." not in line and "token=<token>" in line
    assert "vantum token" in line and "not a loopback address" in line


def test_without_auth_the_page_needs_no_token() -> None:
    config = Config(host="0.0.0.0", insecure_no_auth=True)
    assert page_instructions("http://0.0.0.0:8000", config, now=NOW) == "open http://0.0.0.0:8000/"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.page = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if record.getMessage().startswith("talk to it: "):
            self.page.set()


async def test_the_logged_page_url_opens_the_page_and_a_call() -> None:
    config = Config(host="127.0.0.1", port=0, auth_secret=SECRET, graceful_timeout=1.0)
    app = VantumApp(config, Engines(ScriptedSTT([]), ScriptedLLM(), ScriptedTTS()))
    handler = _Lines()
    logger = logging.getLogger("vantum")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve, app, config)
            with trio.fail_after(10):
                await handler.page.wait()
            line = next(x for x in handler.lines if x.startswith("talk to it: "))
            match = re.fullmatch(r"talk to it: open (http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
            assert match is not None, line
            url, token = match.groups()
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{url}/?token={token}")).status_code == 200
            ws_url = url.replace("http://", "ws://") + "/ws"
            async with BrowserClient.connect(f"{ws_url}?token={token}") as client:
                assert client.session_id
            nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
