"""Token buckets: TRTC's recording API allows 20 queries per second; beyond, RequestLimitExceeded."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """One bucket per key (SecretId and action): `qps` per second, bursts of `qps` allowed."""

    def __init__(self, qps: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 10000) -> None:
        self.qps, self.clock, self.max_keys = qps, clock, max_keys
        self.buckets: dict[str, Bucket] = {}

    def allow(self, key: str) -> bool:
        if self.qps <= 0:
            return True
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:  # bounded: forget the fullest (longest idle) buckets
                self.buckets = {k: b for k, b in self.buckets.items() if now - b.stamp < 1.0}
            bucket = self.buckets[key] = Bucket(self.qps, now)
        bucket.tokens = min(self.qps, bucket.tokens + (now - bucket.stamp) * self.qps)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
