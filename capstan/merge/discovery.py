"""Find single-stream segments in a directory of recording files.

Names are the source of truth (``<utc>`` gives each segment's wall-clock start). Playlists add
two things: they reveal segments listed but missing, and for a listed file whose name was
changed they give the start as ``#EXT-X-TRTC-START-REC-TIME`` plus the EXTINFs before it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from capstan.media import playlist as m3u8
from capstan.media.naming import FileKind, RecordingName, parse_name, utc_from_unix_ms

MAX_PLAYLIST_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class FoundSegment:
    path: str
    name: RecordingName


@dataclass
class Discovery:
    segments: list[FoundSegment] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # listed in a playlist, not on disk
    ignored: list[str] = field(default_factory=list)  # not single-stream recording files
    bad_playlists: list[tuple[str, str]] = field(default_factory=list)


def discover(directory: str | os.PathLike[str]) -> Discovery:
    root = Path(directory)
    found = Discovery()
    playlists: list[tuple[Path, RecordingName]] = []
    seen: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            name = parse_name(path.name)
        except ValueError:
            found.ignored.append(str(path))
            continue
        if not name.single_stream or name.kind in (FileKind.MP4, FileKind.MP3):
            found.ignored.append(str(path))
        elif name.kind is FileKind.SEGMENT:
            found.segments.append(FoundSegment(str(path), name))
            seen.add(str(path))
        else:
            playlists.append((path, name))
    for path, name in playlists:
        _read_playlist(path, name, seen, found)
    return found


def _read_playlist(path: Path, name: RecordingName, seen: set[str], found: Discovery) -> None:
    try:
        if path.stat().st_size > MAX_PLAYLIST_BYTES:
            raise ValueError("playlist too large")
        parsed = m3u8.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        found.bad_playlists.append((str(path), str(exc)))
        return
    for entry, offset_ms in zip(parsed.entries, parsed.segment_offsets_ms(), strict=True):
        listed = path.parent / entry.uri.split("?", 1)[0].rsplit("/", 1)[-1]
        if str(listed) in seen:
            continue
        if not listed.is_file():
            found.missing.append(str(listed))
            continue
        if parsed.start_rec_time_ms is None:
            found.ignored.append(str(listed))
            continue
        # A listed file whose name does not parse: its place comes from the playlist.
        start = utc_from_unix_ms(parsed.start_rec_time_ms + offset_ms)
        found.segments.append(FoundSegment(str(listed), replace(name, kind=FileKind.SEGMENT, start=start)))
        seen.add(str(listed))
        found.ignored = [p for p in found.ignored if p != str(listed)]
