"""What the user keeps of a recording, and whether each file is stored yet.

The one place that decides what ``status.files`` lists, when events 307/304 are due and what each
entry of the result body says. Pure (no I/O, thread-safe): the writers say what was written, the
uploader says what was stored (an object counts as stored only once the uploader's ``stat``
confirmed it), the session asks.

- HLS playlists are kept only when ``output.formats`` has ``hls``; otherwise the segments are the
  durable intermediate of the MP4s/MP3s and neither listed nor announced.
- A playlist is announced (307, and 304 for the first one) when its first version is stored, not
  when it is handed to the uploader: during a storage outage the events wait.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

UPLOADED, PENDING, FAILED = "uploaded", "pending", "failed"


@dataclass(frozen=True)
class KeptFile:
    key: str  # object key in the bucket
    user_id: str | None
    track_type: str  # audio, video or audio_video
    media_id: str | None
    begin_timestamp_ms: int
    size: int | None = None
    duration: float | None = None
    stored: bool = False
    error: str | None = None  # why it is not stored, or was never made

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    @property
    def status(self) -> str:
        return UPLOADED if self.stored else FAILED if self.error else PENDING

    def to_status(self, url: str | None) -> dict[str, Any]:
        """A ``status.files`` entry (api.common.FileRecord)."""
        entry: dict[str, Any] = {"fileName": self.key, "userId": self.user_id, "trackType": self.track_type,
                                 "mediaId": self.media_id, "beginTimeStamp": self.begin_timestamp_ms,
                                 "status": self.status}
        if url is not None:
            entry["url"] = url
        if self.size is not None:
            entry["size"] = self.size
        if self.duration is not None:
            entry["duration"] = round(self.duration, 3)
        return entry

    @classmethod
    def from_status(cls, entry: dict[str, Any]) -> KeptFile:
        """The inverse of :meth:`to_status` (an earlier attempt's entry)."""
        return cls(str(entry["fileName"]), entry.get("userId"), str(entry.get("trackType") or "audio_video"),
                   entry.get("mediaId"), int(entry.get("beginTimeStamp") or 0), entry.get("size"),
                   entry.get("duration"), stored=entry.get("status") == UPLOADED,
                   error=None if entry.get("status") != FAILED else "not stored by an earlier attempt")

    def result_message(self) -> str:
        """The result body's Message (seed 000/001: "recording failed, transcoding failed, write to COS failed")."""
        if self.stored:
            return "success"
        return self.error or "write to storage failed: not stored yet"


@dataclass(frozen=True)
class Announcement:
    """A playlist whose first version is stored: event 307, and 304 when it is the task's first."""

    file: KeptFile
    first: bool


@dataclass
class _State:
    files: dict[str, KeptFile] = field(default_factory=dict)
    stored_playlists: set[str] = field(default_factory=set)  # stored before they were registered
    announced: set[str] = field(default_factory=set)


class FileLedger:
    def __init__(self, *, keep_hls: bool) -> None:
        self.keep_hls = keep_hls
        self._state = _State()
        self._lock = threading.Lock()

    def playlist(self, file: KeptFile) -> list[Announcement]:
        """A stream's playlist now exists (its first segment closed); returns it if already stored."""
        if not self.keep_hls:
            return []
        with self._lock:
            stored = file.key in self._state.stored_playlists
            self._state.files[file.key] = replace(file, stored=stored)
            return self._announce(file.key) if stored else []

    def earlier(self, files: list[KeptFile]) -> None:
        """Files of the task's earlier attempts (from status.files): kept in the list and the result
        (a failover must not drop them); those already stored were announced by their attempt."""
        with self._lock:
            for f in files:
                self._state.files.setdefault(f.key, f)
                if f.stored:
                    self._state.announced.add(f.key)

    def add(self, file: KeptFile) -> None:
        """An MP4/MP3 handed to the uploader (or one that could not be made: ``error`` set)."""
        with self._lock:
            self._state.files[file.key] = file

    def stored(self, key: str, size: int) -> list[Announcement]:
        """The uploader stored ``key``; returns the playlists that are due to be announced now."""
        with self._lock:
            current = self._state.files.get(key)
            if current is None:
                if key.endswith(".m3u8"):
                    self._state.stored_playlists.add(key)
                return []
            if not key.endswith(".m3u8"):
                current = replace(current, size=size)
            self._state.files[key] = replace(current, stored=True, error=None)
            return self._announce(key)

    def waiting(self, pending_keys: list[str], reason: str) -> None:
        """Files still queued when the task ends: not stored, and why."""
        pending = set(pending_keys)
        with self._lock:
            for key, file in self._state.files.items():
                if key in pending:
                    self._state.files[key] = replace(file, stored=False, error=reason)

    def files(self) -> list[KeptFile]:
        with self._lock:
            return sorted(self._state.files.values(), key=lambda f: f.key)

    def _announce(self, key: str) -> list[Announcement]:
        if not key.endswith(".m3u8") or key in self._state.announced:
            return []
        first = not self._state.announced
        self._state.announced.add(key)
        return [Announcement(self._state.files[key], first)]
