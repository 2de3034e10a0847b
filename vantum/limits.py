"""Rate limits, sans-I/O: every decision takes ``now`` so tests drive the clock.

Two token buckets for two jobs:

- :class:`RateLimiter` counts events per key (connections per client IP). Its
  table is bounded: a key idle long enough to have refilled its bucket is the
  same as an unknown key and is forgotten; past ``max_keys`` the least recently
  seen key is dropped (it gets a fresh bucket, which errs towards admitting a
  client rather than growing memory under a spray of addresses).
- :class:`AudioRateGuard` meters one session's inbound audio in *seconds of
  audio*: a caller may be at most ``window_s`` ahead of ``margin`` × real time.
  That admits a buffered burst at connect and network jitter, but a client that
  streams a file faster than it could have been spoken is refused, so nobody
  can make the server (and its paid STT) work faster than the phone line.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable

import attrs

DEFAULT_CONNECT_RATE_PER_S = 2.0
DEFAULT_CONNECT_BURST = 20
DEFAULT_AUDIO_MARGIN = 1.25
DEFAULT_AUDIO_WINDOW_S = 2.0


@attrs.define
class _Bucket:
    tokens: float
    last: float


class RateLimiter:
    """A token bucket per key: ``burst`` at once, then ``rate_per_s`` sustained."""

    def __init__(self, rate_per_s: float, burst: float, *, max_keys: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate_per_s must be > 0, burst >= 1, max_keys >= 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self.evicted_active = 0
        """Keys forgotten while not yet refilled (the table was full): a sign of a spray."""
        self._buckets: collections.OrderedDict[Hashable, _Bucket] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens of ``key``'s bucket if it has them."""
        self._evict_idle(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
                self.evicted_active += 1
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = self._refilled(bucket, now)
            bucket.last = max(bucket.last, now)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return True
        return False

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.last)  # a clock stepping back refills nothing
        return min(self.burst, bucket.tokens + elapsed * self.rate_per_s)

    def _evict_idle(self, now: float) -> None:
        """Forget least-recently-used keys whose buckets are full again (amortised O(1))."""
        while self._buckets:
            key, bucket = next(iter(self._buckets.items()))
            if self._refilled(bucket, now) < self.burst:
                return
            del self._buckets[key]


class AudioRateGuard:
    """Refuses audio arriving faster than ``margin`` × real time plus a ``window_s`` lead.

    The credit starts full, so the first ``window_s`` seconds of audio may arrive at
    once. ``accept`` is all-or-nothing per chunk: a refused chunk spends nothing and
    should be dropped (and reported); a client that slows down is served again.
    """

    def __init__(
        self,
        sample_rate: int,
        margin: float = DEFAULT_AUDIO_MARGIN,
        window_s: float = DEFAULT_AUDIO_WINDOW_S,
    ) -> None:
        if margin < 1.0 or window_s <= 0:
            raise ValueError("margin must be >= 1 and window_s > 0")
        self.margin = margin
        self.window_s = window_s
        self.sample_rate = _positive_rate(sample_rate)
        self.accepted_s = 0.0
        self.rejected_s = 0.0
        self.rejections = 0
        self._credit_s = window_s
        self._last: float | None = None

    def set_sample_rate(self, sample_rate: int) -> None:
        """A new ``audio.input.start`` may change the rate; the credit is kept in seconds."""
        self.sample_rate = _positive_rate(sample_rate)

    def accept(self, n_samples: int, now: float) -> bool:
        if n_samples < 0:
            raise ValueError(f"n_samples must be >= 0, got {n_samples}")
        if self._last is not None and now > self._last:
            self._credit_s = min(self.window_s, self._credit_s + (now - self._last) * self.margin)
        self._last = now if self._last is None else max(self._last, now)
        seconds = n_samples / self.sample_rate
        # A hair of slack so float rounding never refuses an exactly real-time client.
        if seconds <= self._credit_s + 1e-9:
            self._credit_s = max(0.0, self._credit_s - seconds)
            self.accepted_s += seconds
            return True
        self.rejected_s += seconds
        self.rejections += 1
        return False


def _positive_rate(sample_rate: int) -> int:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return sample_rate
