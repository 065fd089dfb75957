"""TRTC-flavoured HLS playlists: plain m3u8 plus two TRTC tags (seed 002).

``#EXT-X-TRTC-START-REC-TIME:<unix ms>`` says when recording started and
``#EXT-X-TRTC-VIDEO-METADATA:WIDTH:<w> HEIGHT:<h>`` the picture size, so a merge tool can lay
segments on a wall clock and size its output without opening any media. Pure: text in, text out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

START_REC_TIME_TAG = "#EXT-X-TRTC-START-REC-TIME:"
VIDEO_METADATA_TAG = "#EXT-X-TRTC-VIDEO-METADATA:"
_METADATA = re.compile(r"WIDTH:(\d+)\s+HEIGHT:(\d+)")


@dataclass(frozen=True)
class PlaylistEntry:
    duration: float
    uri: str
    discontinuity: bool = False  # #EXT-X-DISCONTINUITY before it (a new writer's timestamps start here)


@dataclass
class Playlist:
    entries: list[PlaylistEntry] = field(default_factory=list)
    start_rec_time_ms: int | None = None
    width: int | None = None
    height: int | None = None
    media_sequence: int = 0
    target_duration: int | None = None
    version: int = 3
    ended: bool = False
    key_uri: str | None = None  # AES-128 (RFC 8216 4.3.2.4): every segment encrypted, IV = its media sequence

    def effective_target_duration(self) -> int:
        """RFC 8216 wants it at least every rounded EXTINF; an explicit value may be larger."""
        longest = max((round(e.duration) for e in self.entries), default=0)
        return max(self.target_duration or 0, longest, 1)

    def segment_offsets_ms(self) -> list[int]:
        """Each entry's start in ms after the TRTC start time (sum of the EXTINFs before it)."""
        offsets, elapsed = [], 0.0
        for entry in self.entries:
            offsets.append(round(elapsed * 1000))
            elapsed += entry.duration
        return offsets


def render(playlist: Playlist) -> str:
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{playlist.version}",
        "#EXT-X-ALLOW-CACHE:NO",
        f"#EXT-X-MEDIA-SEQUENCE:{playlist.media_sequence}",
        f"#EXT-X-TARGETDURATION:{playlist.effective_target_duration()}",
    ]
    if playlist.start_rec_time_ms is not None:
        lines.append(f"{START_REC_TIME_TAG}{playlist.start_rec_time_ms}")
    if playlist.width is not None and playlist.height is not None:
        lines.append(f"{VIDEO_METADATA_TAG}WIDTH:{playlist.width} HEIGHT:{playlist.height}")
    if playlist.key_uri is not None:
        lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{playlist.key_uri}"')
    for entry in playlist.entries:
        if entry.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        # The comma is required by RFC 8216; TRTC's published sample omits it, and we read both.
        lines.append(f"#EXTINF:{entry.duration:.3f},")
        lines.append(entry.uri)
    if playlist.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def parse(text: str) -> Playlist:
    """Lenient reader: unknown tags are skipped, CRLF and a missing EXTINF comma are accepted."""
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines()]
    lines = [line for line in lines if line]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an m3u8 playlist (no #EXTM3U header)")
    playlist = Playlist()
    pending: float | None = None
    discontinuity = False
    for line in lines[1:]:
        if line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line.startswith("#EXTINF:"):
            pending = _float(line[len("#EXTINF:"):].split(",", 1)[0], line)
        elif line.startswith(START_REC_TIME_TAG):
            playlist.start_rec_time_ms = _int(line[len(START_REC_TIME_TAG):], line)
        elif line.startswith(VIDEO_METADATA_TAG):
            match = _METADATA.search(line)
            if not match:
                raise ValueError(f"bad video metadata tag: {line!r}")
            playlist.width, playlist.height = int(match[1]), int(match[2])
        elif line.startswith("#EXT-X-VERSION:"):
            playlist.version = _int(line.split(":", 1)[1], line)
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            playlist.media_sequence = _int(line.split(":", 1)[1], line)
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            playlist.target_duration = _int(line.split(":", 1)[1], line)
        elif line == "#EXT-X-ENDLIST":
            playlist.ended = True
        elif line.startswith("#"):
            continue
        else:
            if pending is None:
                raise ValueError(f"segment without #EXTINF: {line!r}")
            playlist.entries.append(PlaylistEntry(pending, line, discontinuity))
            pending, discontinuity = None, False
    return playlist


def _int(text: str, line: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"bad integer in {line!r}") from None


def _float(text: str, line: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"bad duration in {line!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"bad duration in {line!r}")
    return value
