"""X-Twilio-Signature: Twilio's published vectors, port variants, tampering."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vantum.protocol.twilio_signature import compute_signature, url_variants, validate_signature

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"

# Twilio's "Secure your webhooks" worked example.
DOC_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

# The vector twilio-python's own tests use (same URL and token, other numbers).
LIB_PARAMS = {**DOC_PARAMS, "Caller": "+14158675309", "From": "+14158675309"}
LIB_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_documented_example() -> None:
    assert compute_signature(TOKEN, URL, DOC_PARAMS) == DOC_SIGNATURE
    assert validate_signature(TOKEN, URL, DOC_PARAMS, DOC_SIGNATURE)


def test_current_docs_example() -> None:
    # The current docs page uses +14158675310 and prints this signature.
    params = {**DOC_PARAMS, "Caller": "+14158675310", "From": "+14158675310"}
    assert compute_signature(TOKEN, URL, params) == "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_helper_library_vector() -> None:
    assert compute_signature(TOKEN, URL, LIB_PARAMS) == LIB_SIGNATURE


def test_explicit_port_is_removed_on_https() -> None:
    assert validate_signature(TOKEN, URL.replace(".com", ".com:1234"), LIB_PARAMS, LIB_SIGNATURE)


def test_explicit_port_is_kept_on_http() -> None:
    url = URL.replace(".com", ".com:1234").replace("https", "http")
    assert validate_signature(TOKEN, url, LIB_PARAMS, "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=")


def test_default_port_is_added_on_https() -> None:
    assert validate_signature(TOKEN, URL, LIB_PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=")


def test_default_port_is_added_on_http() -> None:
    url = URL.replace("https", "http")
    assert validate_signature(TOKEN, url, LIB_PARAMS, "0ZXoZLH/DfblKGATFgpif+LLRf4=")


def test_repeated_parameters_sort_their_values() -> None:
    pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert compute_signature(TOKEN, URL, pairs) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_tampering_is_rejected() -> None:
    assert not validate_signature(TOKEN, URL, {**DOC_PARAMS, "Digits": "9999"}, DOC_SIGNATURE)
    assert not validate_signature(TOKEN, URL, {**DOC_PARAMS, "Extra": "1"}, DOC_SIGNATURE)
    assert not validate_signature(TOKEN, URL.replace("bar=2", "bar=3"), DOC_PARAMS, DOC_SIGNATURE)
    assert not validate_signature("54321", URL, DOC_PARAMS, DOC_SIGNATURE)
    assert not validate_signature(TOKEN, URL, DOC_PARAMS, DOC_SIGNATURE[:-2] + "A=")
    assert not validate_signature(TOKEN, URL, DOC_PARAMS, DOC_SIGNATURE[:-1])
    assert not validate_signature(TOKEN, URL, DOC_PARAMS, "")
    assert not validate_signature(TOKEN, URL, DOC_PARAMS, None)
    assert not validate_signature(TOKEN, URL, DOC_PARAMS, "ünïcode")
    assert not validate_signature("", URL, DOC_PARAMS, compute_signature("", URL, DOC_PARAMS))


def test_websocket_handshake_is_signed_over_the_url_alone() -> None:
    url = "wss://voice.example.com/twilio/stream"
    signature = compute_signature(TOKEN, url)
    assert validate_signature(TOKEN, url, {}, signature)
    assert validate_signature(TOKEN, "wss://voice.example.com:443/twilio/stream", {}, signature)
    assert not validate_signature(TOKEN, url + "x", {}, signature)


def test_url_variants_keep_the_url_intact() -> None:
    assert url_variants("https://a.example/p?q=1") == (
        "https://a.example/p?q=1",
        "https://a.example:443/p?q=1",
    )
    assert url_variants("http://[::1]:8080/hook?") == (
        "http://[::1]:8080/hook?",
        "http://[::1]/hook?",
    )
    assert url_variants("https://user@h.example:99/x") == (
        "https://user@h.example:99/x",
        "https://user@h.example/x",
    )
    assert url_variants("https://h.example:notaport/x") == ("https://h.example:notaport/x",)


_text = st.text(st.characters(codec="utf-8"), max_size=20)


@given(st.dictionaries(_text, _text, max_size=8), st.randoms())
def test_parameter_order_does_not_matter(params: dict[str, str], rnd: object) -> None:
    items = list(params.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    signature = compute_signature(TOKEN, URL, params)
    assert compute_signature(TOKEN, URL, items) == signature
    assert validate_signature(TOKEN, URL, dict(items), signature)


@given(st.dictionaries(_text, _text, min_size=1, max_size=8), st.data())
def test_any_changed_value_is_rejected(params: dict[str, str], data: st.DataObject) -> None:
    signature = compute_signature(TOKEN, URL, params)
    name = data.draw(st.sampled_from(sorted(params)))
    new_value = data.draw(_text.filter(lambda v: v != params[name]))
    assert not validate_signature(TOKEN, URL, {**params, name: new_value}, signature)
