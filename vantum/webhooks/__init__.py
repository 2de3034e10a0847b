"""Call data out: signed webhooks delivered from a durable outbox in the call store.

The pieces, one concept each: :mod:`.signing` (the signature header, pure),
what each event says is built from a call record by ``vantum.records.payloads``
(pure; the store writes it into the outbox, so it lives beside the store),
:mod:`.retry` (which failures are retried and when, pure) and
:mod:`.dispatcher` (the actor that delivers what the outbox holds). The outbox rows
themselves are written by the call store (``vantum.records``), in the same
transaction as the record change that causes them, so no event is lost to a crash
between the two. docs/integration.md is the reference for receivers.
"""
