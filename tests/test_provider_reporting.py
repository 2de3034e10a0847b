"""Provider failures reach the sink of the session whose task saw them, and only it."""

from __future__ import annotations

import trio
import trio.lowlevel

from vantum.providers.reporting import report, reporting_to
from vantum.server.metrics import ServerMetrics


class Sink:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def provider_error(self, provider: str, kind: str) -> None:
        self.seen.append((provider, kind))


class BrokenSink:
    def provider_error(self, provider: str, kind: str) -> None:
        raise RuntimeError("metrics backend down")


async def test_reports_follow_the_session_into_its_tasks_and_no_further() -> None:
    a, b = Sink(), Sink()

    async def provider_task(name: str) -> None:
        await trio.lowlevel.checkpoint()
        report(name, "rate_limit")

    async def session(sink: Sink, name: str) -> None:
        with reporting_to(sink):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(provider_task, name)
                nursery.start_soon(provider_task, name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(session, a, "openai")
        nursery.start_soon(session, b, "deepgram")
    report("cartesia", "reset")  # outside any session: counted nowhere, no error
    assert a.seen == [("openai", "rate_limit")] * 2
    assert b.seen == [("deepgram", "rate_limit")] * 2


def test_a_broken_sink_never_breaks_the_caller() -> None:
    with reporting_to(BrokenSink()):
        report("openai", "server")  # logged, not raised


def test_server_metrics_count_by_provider_and_kind() -> None:
    metrics = ServerMetrics()
    with reporting_to(metrics):
        report("openai", "rate_limit")
        report("openai", "rate_limit")
        report("deepgram", "disconnect")
    get = metrics.registry.get_sample_value
    assert get("vantum_provider_errors_total", {"provider": "openai", "kind": "rate_limit"}) == 2
    assert get("vantum_provider_errors_total", {"provider": "deepgram", "kind": "disconnect"}) == 1
