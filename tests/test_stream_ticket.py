"""Stream tickets: a phone stream is served once per call this server answered. Sans-I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vantum.protocol.twilio import (
    StreamTickets,
    TicketError,
    TicketFailure,
    UsedTickets,
    derive_key,
    issue_ticket,
    verify_ticket,
)
from vantum.protocol.twilio.ticket import MAX_TICKET_CHARS, TICKET_TTL_S, Ticket

KEY = derive_key(b"s" * 32)
OTHER = derive_key(b"o" * 32)
CALL = "CA" + "1" * 32
NOW = 1_700_000_000.0


def reason(
    ticket: str | None, *, key: bytes = KEY, call: str = CALL, now: float = NOW
) -> TicketFailure:
    with pytest.raises(TicketError) as info:
        verify_ticket(key, ticket, call, now=now)
    assert not ticket or len(ticket) < 10 or ticket not in info.value.message  # never echoed
    return info.value.reason


def test_a_ticket_admits_its_own_call_until_it_expires() -> None:
    ticket = issue_ticket(KEY, CALL, now=NOW)
    assert len(ticket) <= MAX_TICKET_CHARS and ticket.startswith("t1.")
    checked = verify_ticket(KEY, ticket, CALL, now=NOW + TICKET_TTL_S - 1)
    assert checked.expires_at == NOW + TICKET_TTL_S
    assert issue_ticket(KEY, CALL, now=NOW) != ticket  # a fresh nonce each time
    assert reason(ticket, now=NOW + TICKET_TTL_S) is TicketFailure.EXPIRED
    assert reason(ticket, call="CA" + "2" * 32) is TicketFailure.BAD_SIGNATURE
    assert reason(ticket, key=OTHER) is TicketFailure.BAD_SIGNATURE
    # The key is derived, so the server secret itself signs nothing here.
    assert reason(issue_ticket(b"s" * 32, CALL, now=NOW)) is TicketFailure.BAD_SIGNATURE


@pytest.mark.parametrize(
    "ticket",
    ["x", "t1.1.2.3", "t2.1700000060.AAAAAAAAAAAAAAAA.sig", "t1.-5.AAAAAAAAAAAAAAAA.sig",
     "t1.1700000060.short.sig", "t1.1700000060.AAAAAAAAAAAAAAAA.sig.more",
     "t1.1700000060.AAAAAAAAAAAAAAAA." + "s" * 200, "t1.1700000060.AAAAAAAAAAAAAAAé.sig"],
)  # fmt: skip
def test_malformed(ticket: str) -> None:
    assert reason(ticket) is TicketFailure.MALFORMED


def test_missing() -> None:
    assert reason(None) is TicketFailure.MISSING
    assert reason("") is TicketFailure.MISSING


def test_a_ticket_beyond_any_lifetime_we_issue_is_refused() -> None:
    forever = issue_ticket(KEY, CALL, now=NOW, ttl_s=10 * 365 * 86400)
    assert reason(forever) is TicketFailure.MALFORMED


def test_a_call_sid_is_any_string_even_one_json_can_smuggle_in() -> None:
    odd = "CA\ud800\n.t1"  # a lone surrogate and the separators
    ticket = issue_ticket(KEY, odd, now=NOW)
    verify_ticket(KEY, ticket, odd, now=NOW)
    assert reason(ticket, call="CA\ud800") is TicketFailure.BAD_SIGNATURE


@settings(max_examples=400)
@given(data=st.data())
def test_any_mutation_of_a_ticket_fails(data: st.DataObject) -> None:
    ticket = issue_ticket(KEY, CALL, now=NOW)
    i = data.draw(st.integers(0, len(ticket) - 1))
    op = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
    ch = data.draw(st.characters(codec="utf-8"))
    mutated = {
        "replace": ticket[:i] + ch + ticket[i + 1 :],
        "insert": ticket[:i] + ch + ticket[i:],
        "delete": ticket[:i] + ticket[i + 1 :],
        "truncate": ticket[:i],
    }[op]
    if mutated != ticket:
        with pytest.raises(TicketError):
            verify_ticket(KEY, mutated, CALL, now=NOW)


@given(st.text(max_size=200), st.text(max_size=40))
def test_arbitrary_text_is_refused_with_a_reason(text: str, call: str) -> None:
    with pytest.raises(TicketError) as info:
        verify_ticket(KEY, text, call, now=NOW)
    assert isinstance(info.value.reason, TicketFailure)


# --- one use each ----------------------------------------------------------------------


def test_a_ticket_is_redeemed_once() -> None:
    tickets = StreamTickets(KEY)
    ticket = tickets.issue(CALL, now=NOW)
    tickets.redeem(ticket, CALL, now=NOW + 1)
    for later in (NOW + 1, NOW + 30, NOW + TICKET_TTL_S - 0.5):
        with pytest.raises(TicketError) as info:
            tickets.redeem(ticket, CALL, now=later)
        assert info.value.reason is TicketFailure.REUSED
    with pytest.raises(TicketError) as info:  # and after expiry it is simply expired
        tickets.redeem(ticket, CALL, now=NOW + TICKET_TTL_S)
    assert info.value.reason is TicketFailure.EXPIRED
    # Another ticket of the same call is another stream: Twilio reconnecting, a transfer.
    tickets.redeem(tickets.issue(CALL, now=NOW), CALL, now=NOW + 2)


def test_used_tickets_are_forgotten_once_expired_and_bounded() -> None:
    used = UsedTickets(max_entries=3)
    for i in range(3):
        used.claim(Ticket(f"n{i}", int(NOW) + 10), NOW)
    with pytest.raises(TicketError) as info:
        used.claim(Ticket("n3", int(NOW) + 10), NOW)
    assert info.value.reason is TicketFailure.FULL  # refused, not one of the three forgotten
    with pytest.raises(TicketError) as info:
        used.claim(Ticket("n0", int(NOW) + 10), NOW)
    assert info.value.reason is TicketFailure.REUSED
    used.claim(Ticket("n3", int(NOW) + 20), NOW + 10)  # the first three expired: room again
    assert len(used) == 1


def test_a_clock_stepped_back_revives_no_ticket() -> None:
    used = UsedTickets()
    used.claim(Ticket("a", int(NOW) + 10), NOW)
    used.claim(Ticket("b", int(NOW) + 100), NOW + 20)  # "a" is forgotten here
    assert len(used) == 1
    with pytest.raises(TicketError) as info:
        used.claim(Ticket("a", int(NOW) + 10), NOW + 5)  # wall clock stepped back 15 s
    assert info.value.reason is TicketFailure.EXPIRED


@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(-3, 30), st.floats(0, 8)),
        max_size=60,
    ),
    st.integers(1, 5),
)
def test_used_tickets_match_a_model(steps: list[tuple[int, int, float]], bound: int) -> None:
    """Accepted exactly when unexpired, never accepted before, and there is room; never
    more than ``bound`` remembered."""
    used = UsedTickets(max_entries=bound)
    accepted: dict[str, int] = {}
    now = NOW
    for nonce_no, ttl, advance in steps:
        now += advance
        nonce = f"n{nonce_no}"
        expires_at = int(NOW) + ttl + int(now - NOW)
        live = {n: e for n, e in accepted.items() if e > now}
        if expires_at <= now:
            expected: TicketFailure | None = TicketFailure.EXPIRED
        elif nonce in live:  # (a real nonce has one expiry: once that passed, it is EXPIRED)
            expected = TicketFailure.REUSED
        elif len(live) >= bound:
            expected = TicketFailure.FULL
        else:
            expected = None
        try:
            used.claim(Ticket(nonce, expires_at), now)
        except TicketError as exc:
            assert exc.reason is expected
        else:
            assert expected is None
            accepted[nonce] = expires_at
        assert len(used) <= bound


def test_processes_sharing_the_secret_honour_each_others_tickets() -> None:
    """Documented caveat: the used set is per process, so a ticket is single-use per
    process; the key is shared, so a call answered by one process streams to another."""
    a, b = StreamTickets(KEY), StreamTickets(KEY)
    ticket = a.issue(CALL, now=NOW)
    b.redeem(ticket, CALL, now=NOW)
    a.redeem(ticket, CALL, now=NOW)  # once in each process
    with pytest.raises(TicketError):
        b.redeem(ticket, CALL, now=NOW)
