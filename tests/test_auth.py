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
    DEFAULT_MAX_TTL_S,
    MAX_SUBJECT_CHARS,
    AuthError,
    AuthFailure,
    TokenClaims,
    admit,
    extract_token,
    issue_token,
    load_secret,
    new_secret,
    origin_allowed,
    valid_audience,
    verify_token,
)

SECRET = b"s" * 32
OTHER = b"o" * 32
NOW = 1_700_000_000.0


def mint(secret: bytes = SECRET, *, subject: str = "a", ttl_s: int = 60, now: float = NOW) -> str:
    """A ``/ws`` token (audience ``ws``)."""
    return issue_token(secret, subject=subject, audience="ws", ttl_s=ttl_s, now=now)


def check(secret: bytes, token: str | None, *, now: float) -> TokenClaims:
    """What ``/ws`` does with a token under the default limits."""
    return verify_token(secret, token, now=now, audience="ws")


def reason(
    token: str | None,
    *,
    secret: bytes = SECRET,
    now: float = NOW,
    audience: str = "ws",
    max_ttl_s: int = DEFAULT_MAX_TTL_S,
) -> AuthFailure:
    with pytest.raises(AuthError) as info:
        verify_token(secret, token, now=now, audience=audience, max_ttl_s=max_ttl_s)
    assert "v1." not in info.value.message  # never echo the token back
    return info.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(claims: dict[str, object], secret: bytes) -> str:
    payload = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(secret, f"v1.{payload}".encode(), hashlib.sha256).digest())
    return f"v1.{payload}.{sig}"


def test_valid_token_round_trips() -> None:
    token = mint(subject="alice", ttl_s=300)
    claims = check(SECRET, token, now=NOW + 299)
    assert (claims.subject, claims.issued_at, claims.expires_at) == ("alice", NOW, NOW + 300)
    assert claims.audience == "ws"
    other = mint(subject="alice", ttl_s=300)
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
    token = mint()
    assert reason(token, now=NOW + 60) is AuthFailure.EXPIRED
    assert reason(token, now=NOW + 10_000) is AuthFailure.EXPIRED


def test_not_yet_valid_beyond_leeway() -> None:
    token = mint(ttl_s=600, now=NOW + 60)
    assert reason(token) is AuthFailure.NOT_YET_VALID
    check(SECRET, mint(now=NOW + 3), now=NOW)


def test_wrong_secret_and_forged_claims() -> None:
    token = mint(subject="alice")
    assert reason(token, secret=OTHER) is AuthFailure.BAD_SIGNATURE
    claims = {"aud": "ws", "sub": "admin", "iat": int(NOW), "exp": int(NOW) + 60, "nonce": "x"}
    assert reason(forge(claims, OTHER)) is AuthFailure.BAD_SIGNATURE
    # Swapping in another payload under the original signature is caught too.
    _, _, sig = token.split(".")
    claims = {"aud": "ws", "sub": "alice", "iat": int(NOW), "exp": int(NOW) + 60, "nonce": "x"}
    assert reason(f"v1.{b64(json.dumps(claims).encode())}.{sig}") is AuthFailure.BAD_SIGNATURE


def test_signed_but_nonsense_payload_is_malformed() -> None:
    assert reason(forge({"sub": 1, "iat": "x"}, SECRET)) is AuthFailure.MALFORMED
    assert reason(forge({"sub": "a", "iat": True, "exp": 2, "nonce": ""}, SECRET)) is (
        AuthFailure.MALFORMED
    )
    good = {"aud": "ws", "sub": "a", "iat": int(NOW), "exp": int(NOW) + 60, "nonce": "x"}
    assert reason(forge({**good, "aud": ["ws"]}, SECRET)) is AuthFailure.MALFORMED
    too_long = "x" * (MAX_SUBJECT_CHARS + 1)
    assert reason(forge({**good, "sub": too_long}, SECRET)) is AuthFailure.MALFORMED
    check(SECRET, forge({**good, "sub": too_long[1:]}, SECRET), now=NOW)


# --- audience and lifetime ------------------------------------------------------------


def test_a_token_opens_only_its_audience() -> None:
    api = issue_token(SECRET, subject="svc", audience="api", ttl_s=60, now=NOW)
    assert reason(api) is AuthFailure.WRONG_AUDIENCE
    assert verify_token(SECRET, api, now=NOW, audience="api").audience == "api"
    assert reason(mint(), audience="api") is AuthFailure.WRONG_AUDIENCE


def test_a_token_minted_before_audiences_is_refused_with_its_own_reason() -> None:
    legacy = {"sub": "page", "iat": int(NOW), "exp": int(NOW) + 60, "nonce": "ab"}
    assert reason(forge(legacy, SECRET)) is AuthFailure.NO_AUDIENCE
    # Someone else's old token is still just a forgery.
    assert reason(forge(legacy, OTHER)) is AuthFailure.BAD_SIGNATURE


def test_a_token_living_longer_than_the_maximum_is_refused() -> None:
    ten_years = 10 * 365 * 86400
    old_style = issue_token(
        SECRET, subject="a", audience="ws", ttl_s=ten_years, now=NOW, max_ttl_s=ten_years
    )
    assert reason(old_style) is AuthFailure.TOO_LONG_LIVED
    # The lifetime is what is bounded, not what is left: still refused near its end.
    assert reason(old_style, now=NOW + ten_years - 1) is AuthFailure.TOO_LONG_LIVED
    longest = mint(ttl_s=DEFAULT_MAX_TTL_S)
    check(SECRET, longest, now=NOW)
    assert reason(longest, max_ttl_s=DEFAULT_MAX_TTL_S - 1) is AuthFailure.TOO_LONG_LIVED


def test_minting_refuses_what_the_server_would_refuse() -> None:
    with pytest.raises(ValueError, match="maximum token lifetime"):
        mint(ttl_s=DEFAULT_MAX_TTL_S + 1)
    with pytest.raises(ValueError, match="maximum token lifetime"):
        issue_token(SECRET, subject="a", audience="ws", ttl_s=61, now=NOW, max_ttl_s=60)
    with pytest.raises(ValueError, match="subject"):
        mint(subject="x" * (MAX_SUBJECT_CHARS + 1))
    for audience in ("", "WS", "ws ", "a" * 65, "ws/other", "é"):
        assert not valid_audience(audience)
        with pytest.raises(ValueError, match="audience"):
            issue_token(SECRET, subject="a", audience=audience, ttl_s=60, now=NOW)
    for audience in ("ws", "api", "voicechat", "my-app.api:v2", "a" * 64):
        assert valid_audience(audience)


@given(
    subject=st.text(max_size=MAX_SUBJECT_CHARS),
    minted_for=st.sampled_from(["ws", "api", "page", "voicechat"]),
    ttl=st.integers(1, 2 * DEFAULT_MAX_TTL_S),
    max_ttl=st.integers(1, 2 * DEFAULT_MAX_TTL_S),
    age=st.integers(0, 2 * DEFAULT_MAX_TTL_S),
)
def test_verified_exactly_when_audience_lifetime_and_clock_allow(
    subject: str, minted_for: str, ttl: int, max_ttl: int, age: int
) -> None:
    token = issue_token(
        SECRET, subject=subject, audience=minted_for, ttl_s=ttl, now=NOW, max_ttl_s=ttl
    )
    try:
        claims = verify_token(SECRET, token, now=NOW + age, audience="ws", max_ttl_s=max_ttl)
    except AuthError as exc:
        expected = (
            AuthFailure.WRONG_AUDIENCE
            if minted_for != "ws"
            else AuthFailure.TOO_LONG_LIVED
            if ttl > max_ttl
            else AuthFailure.EXPIRED
        )
        assert exc.reason is expected
    else:
        assert minted_for == "ws" and ttl <= max_ttl and age < ttl
        assert claims.subject == subject  # any string up to the bound, unicode included


@settings(max_examples=500)
@given(data=st.data())
def test_any_mutation_of_a_valid_token_fails(data: st.DataObject) -> None:
    token = mint(subject="alice", ttl_s=300)
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
        check(SECRET, mutated, now=NOW)


@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(AuthError) as info:
        check(SECRET, text, now=NOW)
    assert isinstance(info.value.reason, AuthFailure)


def test_secrets_and_ttl_are_checked() -> None:
    with pytest.raises(ConfigError):
        load_secret("short")
    assert len(load_secret(new_secret())) >= 32
    with pytest.raises(ConfigError):
        mint(b"short")
    for ttl in (0, -5):
        with pytest.raises(ValueError):
            mint(ttl_s=ttl)


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
    token = mint(subject="web")
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
    # /ws admits only tokens for /ws, and only as long-lived as configured.
    api = issue_token(SECRET, subject="web", audience="api", ttl_s=60, now=NOW)
    with pytest.raises(AuthError) as info:
        admit(
            ws_scope(good_origin, query=f"token={api}".encode()),
            secret=SECRET,
            allowed_origins=allow,
            now=NOW,
        )
    assert info.value.reason is AuthFailure.WRONG_AUDIENCE
    with pytest.raises(AuthError) as info:
        admit(
            ws_scope(good_origin, query=f"token={token}".encode()),
            secret=SECRET,
            allowed_origins=allow,
            now=NOW,
            max_ttl_s=59,
        )
    assert info.value.reason is AuthFailure.TOO_LONG_LIVED
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
