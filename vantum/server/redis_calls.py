"""The cluster's shared state in Redis (``VANTUM_REDIS_URL``): see ``cluster.py``.

Client: coredis (6.x), because it runs on anyio and so natively under trio
(redis-py's asyncio client does not run under trio, and its sync client would need a
thread per blocking call); it reconnects by itself after Redis restarts.

Keys (one Redis, not Redis Cluster; ``vantum:`` prefix):

- ``vantum:sessions``: sorted set, call id -> expiry (ms, Redis's clock). The session
  cap is its size; :data:`CLAIM` sweeps expired members, checks the cap and adds the
  call in one script, so two workers can never both take the last place.
- ``vantum:call:<id>``: the worker holding the call (expires with it).
- ``vantum:worker:<id>``: that worker's state (``serving`` / ``draining``) and call
  count, refreshed by its heartbeat; the cluster's drain status is these keys.
- ``vantum:rate:<kind>:<ip>``: a token bucket per address (:data:`RATE`).
- ``vantum:hangup:<worker>``: the pub/sub channel a worker takes hang-ups on (the
  fast path), and ``vantum:hangup_pending:<id>``: the same command kept until the
  holder's next heartbeat takes it, so a hang-up sent while the holder's subscription
  is reconnecting (Redis just restarted) still arrives, within TTL/3.
- ``vantum:expired``: ids of calls whose worker stopped refreshing them (it died),
  swept by whoever saw them first; ``vantum:expired_total`` counts them.
- ``vantum:amd:<CallSid>``: Twilio's AMD verdict, pushed by the worker that took the
  callback (:data:`AMD_REPORT`), popped with ``BLPOP`` by the one whose stream waits
  (before or after the push: the list keeps it for :data:`AMD_KEEP_S`).

Every ``VANTUM_REDIS_CALL_TTL_S``/3 each worker re-registers all its calls
(:data:`HEARTBEAT`, ``ZADD`` without ``XX``), so after Redis restarts empty, or after
calls were admitted while it was down, the registry is whole again within one beat.

Redis down: calls in progress go on (nothing in a running call touches Redis); new
calls are admitted on this worker's own limits (``VANTUM_REDIS_FAIL=open``, the
default: the connect rate and session cap then hold per worker) or refused with
``session.error.capacity`` and close 1013 (``closed``); each operation is
bounded by :data:`OP_TIMEOUT_S`; coredis reconnects when Redis is back. AMD verdicts
are then handed over in this worker's memory (a stream on another worker greets after
its ``amd_wait_ms``); a waiting stream listens to both, so a verdict reported either
way on its own worker reaches it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any

import coredis
import trio

from ..config import Config
from ..transports.amd import AmdVerdicts
from .cluster import CAPACITY, UNAVAILABLE
from .metrics import ServerMetrics

log = logging.getLogger("vantum.server")

OP_TIMEOUT_S = 0.5
"""Longest a Redis operation may hold up an admission before Redis counts as down."""
PREFIX = "vantum:"
SESSIONS = PREFIX + "sessions"
EXPIRED = PREFIX + "expired"
EXPIRED_TOTAL = PREFIX + "expired_total"
HEARTBEATS = PREFIX + "heartbeats"
"""Channel each worker announces its beats on (tests and operators watch it)."""

AMD_KEEP_S = 300
"""How long a reported AMD verdict waits in Redis for its stream (longer than any
``amd_wait_ms``, 59 s, plus the time Twilio takes to open the stream)."""

AMD_REPORT = """
-- KEYS: the call's AMD list. ARGV: AnsweredBy, keep s
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_SWEEP = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('INCRBY', KEYS[2], #gone)
  for _, id in ipairs(gone) do redis.call('LPUSH', KEYS[3], id) end
  redis.call('LTRIM', KEYS[3], 0, 999)
end
"""

CLAIM = (
    _NOW_MS
    + _SWEEP
    + """
-- KEYS: sessions, expired_total, expired, call key. ARGV: id, worker, cap, ttl ms
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return {0, #gone} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1])
redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[4])
return {1, #gone}
"""
)
"""Sweep the dead, check the cap, take a place: atomically (one script)."""

RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 1
"""

HEARTBEAT = (
    _NOW_MS
    + _SWEEP
    + """
-- KEYS: sessions, expired_total, expired, worker key.
-- ARGV: worker, ttl ms, state, then the worker's call ids
local ttl = tonumber(ARGV[2])
local hangups = {}
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  redis.call('SET', 'vantum:call:' .. ARGV[i], ARGV[1], 'PX', ttl)
  if redis.call('DEL', 'vantum:hangup_pending:' .. ARGV[i]) == 1 then
    table.insert(hangups, ARGV[i])
  end
end
redis.call('SET', KEYS[4], cjson.encode({state = ARGV[3], calls = #ARGV - 3}), 'PX', ttl)
return {#gone, hangups}
"""
)

RATE = """
-- KEYS: bucket. ARGV: rate per s, burst. A token bucket on Redis's clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local ok = 0
if tokens >= 1 then tokens = tokens - 1; ok = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return ok
"""


def worker_id() -> str:
    """Unique per process across machines: host name and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RedisDown(Exception):
    """An operation failed or timed out: Redis counts as unreachable."""


class RedisCalls:
    """:class:`~vantum.server.cluster.CallRegistry` on Redis, for one worker."""

    def __init__(
        self,
        client: coredis.Redis[str],
        config: Config,
        metrics: ServerMetrics,
        *,
        deliver: Callable[[str], bool],
        local_calls: Callable[[], Iterable[str]],
        draining: Callable[[], bool],
        me: str | None = None,
        amd_client: coredis.Redis[str] | None = None,
    ) -> None:
        self.client = client
        self.amd_client = amd_client or client
        """For the AMD waits' ``BLPOP``: each holds a connection for up to
        ``amd_wait_ms``, so they get a pool of their own and never starve admissions."""
        self.me = me or worker_id()
        self.cap = config.max_sessions
        self.ttl_ms = int(config.redis_call_ttl_s * 1000)
        self.fail_open = config.redis_fail_open
        self.rates = {
            "ws": (config.connect_rate_per_s, config.connect_burst),
            "twilio": (config.twilio_connect_rate_per_s, config.twilio_connect_burst),
        }
        self.metrics = metrics
        self._deliver = deliver
        self._local_calls = local_calls
        self._draining = draining
        self._claim = client.register_script(CLAIM)
        self._release = client.register_script(RELEASE)
        self._heartbeat = client.register_script(HEARTBEAT)
        self._rate = client.register_script(RATE)
        self._amd_report = client.register_script(AMD_REPORT)
        self.amd = AmdVerdicts()
        """Verdicts reported while Redis is down, for streams of this worker."""
        self._amd_local_logged = False
        self.up = True
        self._beat_now = trio.Event()

    # --- CallRegistry ------------------------------------------------------------

    async def allow_connect(self, ip: str, kind: str) -> bool:
        rate, burst = self.rates[kind]
        if rate <= 0:
            return True
        try:
            ok = await self._call(self._rate, [f"{PREFIX}rate:{kind}:{ip}"], [rate, burst])
        except RedisDown:
            # The local limiter still applies; whether the call may start is claim()'s
            # decision (fail open or closed), so a refusal says what it is.
            return True
        return bool(ok)

    async def claim(self, call_id: str) -> str | None:
        try:
            admitted, swept = await self._call(
                self._claim,
                [SESSIONS, EXPIRED_TOTAL, EXPIRED, _call_key(call_id)],
                [call_id, self.me, self.cap, self.ttl_ms],
            )
        except RedisDown:
            # Open: admitted on this worker's own cap; the next heartbeat registers it.
            return None if self.fail_open else UNAVAILABLE
        self._count_expired(int(swept))
        return None if int(admitted) else CAPACITY

    async def release(self, call_id: str) -> None:
        try:
            with trio.CancelScope(shield=True):
                await self._call(
                    self._release,
                    [SESSIONS, _call_key(call_id), f"{PREFIX}hangup_pending:{call_id}"],
                    [call_id, self.me],
                )
        except RedisDown:
            pass  # its entry expires within a TTL

    async def hangup(self, call_id: str) -> bool:
        try:
            holder = await self._op(self.client.get(_call_key(call_id)))
            if holder is None:
                return False
            if holder == self.me:
                return self._deliver(call_id)
            # Pending first: if the holder's subscription is down (Redis just came
            # back), its next heartbeat picks the hang-up up; pub/sub is the fast path.
            await self._op(
                self.client.set(f"{PREFIX}hangup_pending:{call_id}", "1", px=self.ttl_ms)
            )
            await self._op(self.client.publish(_hangup_channel(holder), call_id))
        except RedisDown:
            return False
        return True

    async def report_amd(self, call_sid: str, answered_by: str) -> None:
        try:
            await self._call(self._amd_report, [_amd_key(call_sid)], [answered_by, AMD_KEEP_S])
        except RedisDown:
            if not self._amd_local_logged:
                self._amd_local_logged = True
                log.warning(
                    "Redis unreachable: AMD verdicts reach only streams on this worker "
                    "(others greet after their amd_wait_ms)"
                )
            self.amd.report(call_sid, answered_by)

    async def wait_amd(self, call_sid: str, timeout_s: float) -> str | None:
        """Redis's list and this worker's memory at once (the verdict was reported in
        memory if Redis was down then); whichever has it first ends the wait."""
        answer: str | None = None
        async with trio.open_nursery() as nursery:

            async def local() -> None:
                nonlocal answer
                found = await self.amd.wait(call_sid, timeout_s)
                if found is not None:
                    answer = found
                    nursery.cancel_scope.cancel()

            async def shared() -> None:
                nonlocal answer
                key = _amd_key(call_sid)
                try:
                    if timeout_s <= 0:  # BLPOP 0 would block for ever
                        found = await self._op(self.client.lpop(key))
                    else:
                        popped = await self._op(
                            self.amd_client.blpop([key], timeout_s), timeout_s + OP_TIMEOUT_S
                        )
                        found = None if popped is None else popped[1]
                except RedisDown:
                    return  # the local wait goes on to its bound
                if found is not None:
                    answer = str(found)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(local)
            nursery.start_soon(shared)
        return answer

    # --- background ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The heartbeat and the hang-up listener, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen)
            nursery.start_soon(self._beat_forever)
            task_status.started()

    def beat_soon(self) -> None:
        """Refresh this worker's entry now (its state changed: a drain began)."""
        self._beat_now.set()

    async def beat(self) -> None:
        """Re-register every call of this worker and its state; sweep the dead."""
        calls = list(self._local_calls())
        state = "draining" if self._draining() else "serving"
        swept, hangups = await self._call(
            self._heartbeat,
            [SESSIONS, EXPIRED_TOTAL, EXPIRED, f"{PREFIX}worker:{self.me}"],
            [self.me, self.ttl_ms, state, *calls],
        )
        self._count_expired(int(swept))
        for call_id in hangups:
            log.info("hang-up for call %s from the cluster (heartbeat)", call_id)
            self._deliver(str(call_id))
        await self._op(self.client.publish(HEARTBEATS, json.dumps({"worker": self.me})))

    async def _beat_forever(self) -> None:
        while True:
            with suppress(RedisDown):
                await self.beat()
            with trio.move_on_after(self.ttl_ms / 3000):
                await self._beat_now.wait()
            self._beat_now = trio.Event()

    async def _listen(self) -> None:
        """Take hang-ups for this worker's calls. coredis's pub/sub reconnects and
        resubscribes by itself (its retry policy); this loop covers what it gives up on.
        It does not hold up start-up: a worker starts while Redis is down."""
        while True:
            try:
                async with self.client.pubsub(
                    channels=[_hangup_channel(self.me)], ignore_subscribe_messages=True
                ) as pubsub:
                    async for message in pubsub:
                        if message["type"] == "message":
                            call_id = str(message["data"])
                            log.info("hang-up for call %s from the cluster", call_id)
                            self._deliver(call_id)
            except (coredis.exceptions.RedisError, OSError) as exc:
                self._mark(False, exc)
                await trio.sleep(0.5)  # back-off before resubscribing, not a wait on an event

    # --- plumbing ------------------------------------------------------------------

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        return await self._op(script(keys=keys, args=args))

    async def _op(self, operation: Any, timeout_s: float = OP_TIMEOUT_S) -> Any:
        try:
            with trio.fail_after(timeout_s):
                result = await operation
        except (coredis.exceptions.RedisError, OSError, trio.TooSlowError) as exc:
            self._mark(False, exc)
            raise RedisDown(str(exc)) from exc
        self._mark(True)
        return result

    def _mark(self, up: bool, exc: BaseException | None = None) -> None:
        if up != self.up:
            self.up = up
            self.metrics.redis_up.set(1 if up else 0)
            if up:
                self._amd_local_logged = False
                log.warning("Redis is reachable again")
            else:
                mode = "admitting on local limits" if self.fail_open else "refusing new calls"
                log.error(
                    "Redis unreachable (%s): calls in progress go on; %s (VANTUM_REDIS_FAIL)",
                    exc,
                    mode,
                )
        if not up:
            self.metrics.redis_errors.inc()

    def _count_expired(self, n: int) -> None:
        if n:
            self.metrics.cluster_calls_expired.inc(n)
            log.warning("%d call(s) of a worker that stopped answering expired", n)


def _call_key(call_id: str) -> str:
    return f"{PREFIX}call:{call_id}"


def _amd_key(call_sid: str) -> str:
    return f"{PREFIX}amd:{call_sid}"


def _hangup_channel(worker: str) -> str:
    return f"{PREFIX}hangup:{worker}"


@asynccontextmanager
async def open_redis_calls(
    config: Config,
    metrics: ServerMetrics,
    *,
    deliver: Callable[[str], bool],
    local_calls: Callable[[], Iterable[str]],
    draining: Callable[[], bool],
) -> AsyncIterator[RedisCalls]:
    """Connect (Redis need not be up yet), run the heartbeat and listener for the block."""
    assert config.redis_url is not None
    client: coredis.Redis[str] = coredis.Redis.from_url(config.redis_url, decode_responses=True)
    # One connection per call that may wait for its AMD verdict (a worker never runs
    # more than max_sessions calls).
    amd_client: coredis.Redis[str] = coredis.Redis.from_url(
        config.redis_url, decode_responses=True, max_connections=max(config.max_sessions, 1)
    )
    async with client, amd_client:
        calls = RedisCalls(
            client,
            config,
            metrics,
            deliver=deliver,
            local_calls=local_calls,
            draining=draining,
            amd_client=amd_client,
        )
        metrics.redis_up.set(1)
        async with trio.open_nursery() as nursery:
            await nursery.start(calls.run)
            yield calls
            nursery.cancel_scope.cancel()
