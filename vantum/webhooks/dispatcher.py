"""The delivery actor: takes due deliveries from the outbox and POSTs them, signed.

It runs beside the server, never inside a call: a call's recorder only writes the
outbox rows (in its own record transactions) and :meth:`WebhookDispatcher.nudge`\\ s
this actor through a one-slot channel, which never blocks. Deliveries go to a
fixed pool of worker tasks through a bounded channel, so a slow or dead receiver
holds at most ``workers`` connections and the outbox, not memory, absorbs a burst.

Each claimed delivery is leased in the store for long enough to be attempted; if
the process dies meanwhile the lease lapses and the delivery is due again, so a
restart resumes where it stopped and every event is delivered at least once
(receivers deduplicate on the event id). Times in the outbox are wall-clock Unix
seconds (they outlive the process); waits are on trio's clock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Protocol

import attrs
import httpx
import trio
from prometheus_client import Counter, Gauge, Histogram

from ..records.store import (
    DELIVERY_DELIVERED,
    DELIVERY_FAILED,
    DELIVERY_PENDING,
    CallStore,
    Delivery,
    RecordError,
)
from .retry import RetryPolicy, retryable_status
from .signing import EVENT_ID_HEADER, EVENT_TYPE_HEADER, SIGNATURE_HEADER, sign


class WebhookMetrics(Protocol):
    """The Prometheus metrics a dispatcher writes (``server.metrics.ServerMetrics`` has
    them); a Protocol, so this package needs nothing from the server above it."""

    @property
    def webhook_attempt_failures(self) -> Counter: ...
    @property
    def webhook_deliveries(self) -> Counter: ...
    @property
    def webhook_delivery_latency(self) -> Histogram: ...
    @property
    def webhook_outbox_depth(self) -> Gauge: ...


log = logging.getLogger("vantum.webhooks")

USER_AGENT = "vantum-webhooks/1"
KEEP_SETTLED_S = 7 * 24 * 3600.0
"""Delivered and failed rows are kept this long (to inspect), then pruned."""
PRUNE_EVERY_S = 3600.0
ATTEMPT_HEADER = "Vantum-Delivery-Attempt"


@attrs.frozen
class DeliveryReport:
    """What one attempt came to (sent on ``reports`` if given: tests and tools)."""

    delivery: Delivery
    result: str
    """``delivered``, ``retry`` or ``failed``."""
    status: int | None
    error: str | None
    retry_at: float | None


class WebhookDispatcher:
    def __init__(
        self,
        store: CallStore,
        secret: bytes,
        *,
        policy: RetryPolicy | None = None,
        metrics: WebhookMetrics | None = None,
        workers: int = 8,
        batch: int = 32,
        poll_s: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
        rand: random.Random | None = None,
        reports: trio.MemorySendChannel[DeliveryReport] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if workers < 1 or batch < 1:
            raise ValueError("workers and batch must be at least 1")
        self.store = store
        self.policy = policy or RetryPolicy()
        self.metrics = metrics
        self._secret = secret
        self._workers = workers
        self._batch = batch
        self._poll_s = poll_s
        self._wall = wall_clock
        self._rand = rand or random.Random()
        self._reports = reports
        self._transport = transport
        self._wake_tx, self._wake_rx = trio.open_memory_channel[None](1)
        self.lease_s = self.policy.timeout_s * (math.ceil(batch / workers) + 1) + 30.0
        """How long a claimed delivery is withheld from other claims: long enough for
        it to wait for a worker and be attempted."""

    def nudge(self) -> None:
        """Something was queued: look at the outbox now (never blocks)."""
        with contextlib.suppress(trio.WouldBlock):  # a wake-up is pending already
            self._wake_tx.send_nowait(None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled."""
        timeout = httpx.Timeout(self.policy.timeout_s)
        async with (
            httpx.AsyncClient(
                timeout=timeout,
                follow_redirects=False,
                transport=self._transport,
                headers={"user-agent": USER_AGENT},
            ) as client,
            trio.open_nursery() as nursery,
        ):
            work_tx, work_rx = trio.open_memory_channel[Delivery](self._workers)
            async with work_rx:
                for _ in range(self._workers):
                    nursery.start_soon(self._worker, client, work_rx.clone())
            task_status.started()
            async with work_tx:
                await self._feed(work_tx)

    async def _feed(self, work: trio.MemorySendChannel[Delivery]) -> None:
        pruned_at = -math.inf
        while True:
            try:
                if self._wall() - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = self._wall()
                    await self.store.prune_outbox(settled_before=pruned_at - KEEP_SETTLED_S)
                claimed = await self.store.claim_deliveries(
                    now=self._wall(), limit=self._batch, lease_s=self.lease_s
                )
                for delivery in claimed:
                    await work.send(delivery)  # waits for a free worker: bounded
                if len(claimed) == self._batch:
                    continue
                depth, due = await self.store.outbox_stats()
            except RecordError as exc:
                log.warning("webhook outbox unavailable: %s", exc)
                depth, due = -1, None
            if self.metrics is not None and depth >= 0:
                self.metrics.webhook_outbox_depth.set(depth)
            wait = self._poll_s if due is None else min(self._poll_s, due - self._wall())
            if wait > 0:
                with trio.move_on_after(wait):
                    await self._wake_rx.receive()

    async def _worker(
        self, client: httpx.AsyncClient, work: trio.MemoryReceiveChannel[Delivery]
    ) -> None:
        async with work:
            async for delivery in work:
                report = await self._attempt(client, delivery)
                await self._settle(report)

    async def _attempt(self, client: httpx.AsyncClient, d: Delivery) -> DeliveryReport:
        body = d.body.encode()
        stamp = int(self._wall())
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, stamp, body),
            EVENT_ID_HEADER: d.event_id,
            EVENT_TYPE_HEADER: d.event_type,
            ATTEMPT_HEADER: str(d.attempts + 1),
        }
        status: int | None = None
        try:
            with trio.fail_after(self.policy.timeout_s):
                response = await client.post(d.url, content=body, headers=headers)
            status = response.status_code
        except (trio.TooSlowError, httpx.TimeoutException):
            return self._retry(d, None, "timeout")
        except httpx.HTTPError as exc:  # connection refused/reset, DNS, protocol errors
            return self._retry(d, None, f"connection: {type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            return DeliveryReport(d, DELIVERY_DELIVERED, status, None, None)
        if retryable_status(status):
            return self._retry(d, status, f"HTTP {status}")
        return DeliveryReport(d, DELIVERY_FAILED, status, f"HTTP {status}", None)

    def _retry(self, d: Delivery, status: int | None, error: str) -> DeliveryReport:
        retry_at = self.policy.next_attempt(
            attempts=d.attempts + 1, created_at=d.created_at, now=self._wall(), rand=self._rand
        )
        if retry_at is None:
            return DeliveryReport(d, DELIVERY_FAILED, status, f"gave up: {error}", None)
        return DeliveryReport(d, "retry", status, error, retry_at)

    async def _settle(self, report: DeliveryReport) -> None:
        d = report.delivery
        state = DELIVERY_PENDING if report.result == "retry" else report.result
        now = self._wall()
        try:
            await self.store.settle_delivery(
                d.delivery_id, state=state, at=now, retry_at=report.retry_at, error=report.error
            )
        except RecordError as exc:  # the lease lapses and it is attempted again
            log.warning("webhook %s: could not record the attempt: %s", d.event_id, exc)
        self._count(report, now)
        if report.result == DELIVERY_FAILED:
            log.warning(
                "webhook %s (%s) to %s failed after %d attempt(s): %s",
                d.event_id,
                d.event_type,
                d.url,
                d.attempts + 1,
                report.error,
            )
        elif report.result == "retry":
            self.nudge()  # the feeder recomputes when it must wake next
        if self._reports is not None:
            await self._reports.send(report)

    def _count(self, report: DeliveryReport, now: float) -> None:
        m = self.metrics
        if m is None:
            return
        d = report.delivery
        if report.result != DELIVERY_DELIVERED:
            reason = (
                "timeout"
                if report.error == "timeout" or (report.error or "").endswith("timeout")
                else "connection"
                if report.status is None
                else f"http_{report.status // 100}xx"
            )
            m.webhook_attempt_failures.labels(reason).inc()
        if report.result != "retry":
            m.webhook_deliveries.labels(d.event_type, report.result).inc()
        if report.result == DELIVERY_DELIVERED:
            m.webhook_delivery_latency.observe(max(0.0, now - d.created_at))
