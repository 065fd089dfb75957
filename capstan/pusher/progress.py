"""Push progress: where a push is in its source, and where a new attempt or a new push starts.

Seed 004: with Redis, a push of a VideoSrc first looks up the last push of the same VideoSrc and
resumes it; without a record it starts from the beginning. Capstan keeps the same record in
`status.progress` (so a failover resumes without Redis) and, with `redisSecretRef`, in Redis under
``capstan:streampush:progress:<VideoSrc>`` as JSON. The choice of start is pure (:func:`plan_start`);
:class:`RedisProgress` is the adapter.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

REDIS_KEY_PREFIX = "capstan:streampush:progress:"
REDIS_TTL_SECONDS = 30 * 24 * 3600  # a forgotten source's record does not stay for ever
REDIS_TIMEOUT = 3.0


def redis_key(video_src: str) -> str:
    """Keyed by the source itself, as the seed says ("对于同一个 VideoSrc 视频源")."""
    return REDIS_KEY_PREFIX + video_src


@dataclass(frozen=True)
class ProgressRecord:
    position: float  # seconds into the source
    duration: float | None = None
    task_id: str = ""
    updated_at: float = 0.0  # Unix seconds

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ProgressRecord | None:
        try:
            data = json.loads(text)
            return cls(position=max(0.0, float(data["position"])),
                       duration=None if data.get("duration") is None else float(data["duration"]),
                       task_id=str(data.get("task_id", "")), updated_at=float(data.get("updated_at", 0)))
        except (ValueError, KeyError, TypeError):
            return None  # a record we cannot read is no record: start from the beginning


@dataclass(frozen=True)
class StartPlan:
    position: float = 0.0
    origin: str | None = None  # "status" | "redis" | None (from the beginning)


def plan_start(*, live: bool, attempt: int, resume: bool, status_position: float | None,
               redis_record: ProgressRecord | None) -> StartPlan:
    """Where this attempt starts in the source.

    A failover (attempt > 1) always continues from its own status.progress: the task is the same
    push. A first attempt with ``resume`` continues the last push of the same source from Redis,
    or from status.progress (an object that was pushing when its operator was replaced). A live
    stream has no position: it always starts from now (the seed: "直播流将从最新开始").
    """
    if live:
        return StartPlan()
    if attempt > 1 and status_position:
        return StartPlan(status_position, "status")
    if resume:
        if redis_record is not None and redis_record.position > 0:
            return StartPlan(redis_record.position, "redis")
        if status_position:
            return StartPlan(status_position, "status")
    return StartPlan()


def status_progress(position: float, duration: float | None) -> dict[str, Any]:
    """status.progress as the API's PushProgress has it."""
    return {"positionSeconds": round(position, 3), "durationSeconds": duration,
            "updatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class RedisProgress:
    """The seed's Redis record; every call has a socket timeout, errors are the caller's to log."""

    def __init__(self, url: str, video_src: str) -> None:
        import redis  # a pusher dependency only

        self.client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT)
        self.key = redis_key(video_src)

    def load(self) -> ProgressRecord | None:
        raw = self.client.get(self.key)
        return ProgressRecord.from_json(raw) if raw else None

    def save(self, record: ProgressRecord) -> None:
        self.client.set(self.key, record.to_json(), ex=REDIS_TTL_SECONDS)

    def clear(self) -> None:
        """A file pushed to its end: the next push of it starts from the beginning."""
        self.client.delete(self.key)

    def close(self) -> None:
        self.client.close()
