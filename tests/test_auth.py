"""Tokens: every way a token can be wrong is refused with its own reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vantum.errors import ConfigError, VantumError
from vantum.server.auth import (
    AuthError,
    AuthFailure,
    admit,
    extract_token,
    issue_token,
    load_secret,
    new_secret,
    origin_allowed,
    verify_token,
)

SECRET = b"s" * 32
OTHER = b"o" * 32
NOW = 1_700_000_000.0


def reason(token: str | None, *, secret: bytes = SECRET, now: float = NOW) -> AuthFailure:
    with pytest.raises(AuthError) as info:
        verify_token(secret, token, now=now)
    assert "v1." not in info.value.message  # never echo the token back
    return info.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(claims: dict[str, object], secret: bytes) -> str:
    payload = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(secret, f"v1.{payload}".encode(), hashlib.sha256).digest())
    return f"v1.{payload}.{sig}"


def test_valid_token_round_trips() -> None:
    token = issue_token(SECRET, subject="alice", ttl_s=300, now=NOW)
    claims = verify_token(SECRET, token, now=NOW + 299)
    assert (claims.subject, claims.issued_at, claims.expires_at) == ("alice", NOW, NOW + 300)
    other = issue_token(SECRET, subject="alice", ttl_s=300, now=NOW)
    assert other != token  # the nonce makes every token distinct
    assert issubclass(AuthError, VantumError)


def test_missing() -> None:
    assert reason(None) is AuthFailure.MISSING
    assert reason("") is AuthFailure.MISSING


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "v1.abc",
        "v2.abc.def",
        "v1..sig",
        "v1.abc.",
        "v1.a.b.c",
        "v1.é.x",
        "v1." + "a" * 5000,
    ],
)
def test_malformed(token: str) -> None:
    assert reason(token) is AuthFailure.MALFORMED


def test_expired_at_exactly_exp_and_after() -> None:
    token = issue_token(SECRET, subject="a", ttl_s=60, now=NOW)
    assert reason(token, now=NOW + 60) is AuthFailure.EXPIRED
    assert reason(token, now=NOW + 10_000) is AuthFailure.EXPIRED


def test_not_yet_valid_beyond_leeway() -> None:
    token = issue_token(SECRET, subject="a", ttl_s=600, now=NOW + 60)
    assert reason(token) is AuthFailure.NOT_YET_VALID
    verify_token(SECRET, issue_token(SECRET, subject="a", ttl_s=60, now=NOW + 3), now=NOW)


def test_wrong_secret_and_forged_claims() -> None:
    token = issue_token(SECRET, subject="alice", ttl_s=60, now=NOW)
    assert reason(token, secret=OTHER) is AuthFailure.BAD_SIGNATURE
    forged = forge({"sub": "admin", "iat": int(NOW), "exp": int(NOW) + 10**9, "nonce": "x"}, OTHER)
    assert reason(forged) is AuthFailure.BAD_SIGNATURE
    # Swapping in another payload under the original signature is caught too.
    _, _, sig = token.split(".")
    claims = {"sub": "alice", "iat": int(NOW), "exp": int(NOW) + 10**9, "nonce": "x"}
    assert reason(f"v1.{b64(json.dumps(claims).encode())}.{sig}") is AuthFailure.BAD_SIGNATURE


def test_signed_but_nonsense_payload_is_malformed() -> None:
    assert reason(forge({"sub": 1, "iat": "x"}, SECRET)) is AuthFailure.MALFORMED
    assert reason(forge({"sub": "a", "iat": True, "exp": 2, "nonce": ""}, SECRET)) is (
        AuthFailure.MALFORMED
    )


@settings(max_examples=500)
@given(data=st.data())
def test_any_mutation_of_a_valid_token_fails(data: st.DataObject) -> None:
    token = issue_token(SECRET, subject="alice", ttl_s=300, now=NOW)
    ops = st.sampled_from(["replace", "insert", "delete", "truncate", "append"])
    op = data.draw(ops)
    i = data.draw(st.integers(0, len(token) - 1))
    ch = data.draw(st.characters(codec="utf-8"))
    if op == "replace":
        mutated = token[:i] + ch + token[i + 1 :]
    elif op == "insert":
        mutated = token[:i] + ch + token[i:]
    elif op == "delete":
        mutated = token[:i] + token[i + 1 :]
    elif op == "truncate":
        mutated = token[:i]
    else:
        mutated = token + ch
    if mutated == token:
        return
    with pytest.raises(AuthError):
        verify_token(SECRET, mutated, now=NOW)


@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(AuthError) as info:
        verify_token(SECRET, text, now=NOW)
    assert isinstance(info.value.reason, AuthFailure)


def test_secrets_and_ttl_are_checked() -> None:
    with pytest.raises(ConfigError):
        load_secret("short")
    assert len(load_secret(new_secret())) >= 32
    with pytest.raises(ConfigError):
        issue_token(b"short", subject="a", ttl_s=60, now=NOW)
    for ttl in (0, -5):
        with pytest.raises(ValueError):
            issue_token(SECRET, subject="a", ttl_s=ttl, now=NOW)


def test_extract_token_from_header_subprotocol_or_query() -> None:
    assert extract_token(b"", [(b"Authorization", b"Bearer abc")]) == "abc"
    assert extract_token(b"", [(b"sec-websocket-protocol", b"vantum, bearer.xyz")]) == "xyz"
    assert extract_token(b"a=1&token=q.r.s", []) == "q.r.s"
    assert extract_token(b"a=1", [(b"authorization", b"Basic Zm9v")]) is None


@pytest.mark.parametrize(
    ("origin", "allow", "ok"),
    [
        ("https://app.example.com", ["https://app.example.com"], True),
        ("HTTPS://App.Example.com:443", ["https://app.example.com"], True),
        ("https://app.example.com:8443", ["https://app.example.com"], False),
        ("http://app.example.com", ["https://app.example.com"], False),
        ("https://a.example.com", ["https://*.example.com"], True),
        ("https://a.b.example.com", ["https://*.example.com"], True),
        ("https://example.com", ["https://*.example.com"], False),
        ("https://evilexample.com", ["https://*.example.com"], False),
        ("https://example.com.evil.net", ["https://*.example.com"], False),
        ("http://localhost:5173", ["http://localhost:*"], True),
        ("http://localhost.evil.net:5173", ["http://localhost:*"], False),
        ("https://anything.net", ["*"], True),
        ("null", ["https://app.example.com"], False),
        ("null", ["null"], True),
        ("not a url", ["https://app.example.com"], False),
        ("https://user@app.example.com", ["https://app.example.com"], False),
        ("https://app.example.com", [], False),
    ],
)
def test_origin_allowed(origin: str, allow: list[str], ok: bool) -> None:
    assert origin_allowed(origin, allow) is ok


def test_missing_origin_is_a_policy_choice() -> None:
    assert origin_allowed(None, ["https://app.example.com"])
    assert not origin_allowed(None, ["https://app.example.com"], allow_missing=False)


def ws_scope(*headers: tuple[bytes, bytes], query: bytes = b"") -> dict[str, object]:
    return {"type": "websocket", "path": "/ws", "headers": list(headers), "query_string": query}


def test_admit_checks_origin_then_token_and_picks_a_subprotocol() -> None:
    allow = ["https://app.example.com"]
    token = issue_token(SECRET, subject="web", ttl_s=60, now=NOW)
    good_origin = (b"origin", b"https://app.example.com")
    ok = admit(
        ws_scope(good_origin, query=f"token={token}".encode()),
        secret=SECRET,
        allowed_origins=allow,
        now=NOW,
    )
    assert ok.claims is not None and ok.claims.subject == "web" and ok.subprotocol is None

    offered = (b"sec-websocket-protocol", f"vantum.v1, bearer.{token}".encode())
    ok = admit(ws_scope(good_origin, offered), secret=SECRET, allowed_origins=allow, now=NOW)
    assert ok.claims is not None and ok.subprotocol == "vantum.v1"

    with pytest.raises(AuthError) as info:
        admit(
            ws_scope((b"origin", b"https://evil.net"), query=f"token={token}".encode()),
            secret=SECRET,
            allowed_origins=allow,
            now=NOW,
        )
    assert info.value.reason is AuthFailure.ORIGIN
    with pytest.raises(AuthError) as info:
        admit(ws_scope(good_origin), secret=SECRET, allowed_origins=allow, now=NOW)
    assert info.value.reason is AuthFailure.MISSING
    # The explicit dev flag: no secret, no token needed; the Origin list still holds.
    assert admit(ws_scope(good_origin), secret=None, allowed_origins=allow, now=NOW).claims is None
    with pytest.raises(AuthError):
        admit(
            ws_scope((b"origin", b"https://evil.net")), secret=None, allowed_origins=allow, now=NOW
        )


def test_admit_defaults_to_same_origin() -> None:
    host = (b"host", b"voice.example.com:8000")
    same = ws_scope(host, (b"origin", b"http://voice.example.com:8000"))
    assert admit(same, secret=None, allowed_origins=[], now=NOW).claims is None
    other = ws_scope(host, (b"origin", b"http://evil.net:8000"))
    with pytest.raises(AuthError):
        admit(other, secret=None, allowed_origins=[], now=NOW)
    assert admit(ws_scope(host), secret=None, allowed_origins=[], now=NOW).claims is None
