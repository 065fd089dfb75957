"""Recording file names, exactly as TRTC's on-cloud recording spells them (seed 002).

Pure functions, no I/O: the recorder builds names with them and the merge command parses
them back, so both sides agree on one spelling and tools written for TRTC files read ours.

Single-stream::

    <prefix>/<taskid>/<sdkappid>_<roomid>__UserId_s_<userid>__UserId_e_<mediaid>_<type>.m3u8
    <prefix>/<taskid>/<sdkappid>_<roomid>__UserId_s_<userid>__UserId_e_<mediaid>_<type>_<utc>.ts
    <prefix>/<taskid>/<sdkappid>_<roomid>__UserId_s_<userid>__UserId_e_<mediaid>_<index>.mp4
    <prefix>/<taskid>/<sdkappid>_<roomid>__UserId_s_<userid>__UserId_e_main_audio.mp3

Mixed::

    <prefix>/<taskid>/<sdkappid>_<roomid>.m3u8
    <prefix>/<taskid>/<sdkappid>_<roomid>_<utc>.ts
    <prefix>/<taskid>/<sdkappid>_<roomid>_<index>.mp4
    <prefix>/<taskid>/<sdkappid>_<roomid>.mp3

The MP3 (the single-stream function's mode 00, which the seed names only as "MP3 format") is
named like the audio playlist it is made from, with ``.mp3``: one file per user, never cut, never
``ha``-prefixed (it joins every attempt, like the MP4s).

Files recovered after a failover carry ``ha1_`` .. ``ha3_`` before the file name.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

USER_START = "__UserId_s_"
USER_END = "__UserId_e_"
MAX_HA_ATTEMPT = 3

_UTC_FORMAT = "%Y%m%d%H%M%S"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MediaId(StrEnum):
    MAIN = "main"
    AUX = "aux"


class TrackType(StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


class FileKind(StrEnum):
    PLAYLIST = "m3u8"
    SEGMENT = "ts"
    MP4 = "mp4"
    MP3 = "mp3"


# --- identifiers -----------------------------------------------------------------------------


def encode_id(raw: str) -> str:
    """Base64 with ``/``→``-`` and ``=``→``.`` so the id is safe in a file name and an S3 key."""
    text = base64.b64encode(raw.encode("utf-8")).decode("ascii")
    return text.replace("/", "-").replace("=", ".")


def decode_id(encoded: str) -> str:
    """Inverse of :func:`encode_id`; raises ``ValueError`` on anything that is not such an id."""
    text = encoded.replace("-", "/").replace(".", "=")
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"not an encoded id: {encoded!r}") from exc


def encode_room_id(room_id: int | str) -> str:
    """Integer room ids stay as digits; string room ids are encoded like user ids (TRTC rule)."""
    if isinstance(room_id, int):
        if room_id < 0:
            raise ValueError(f"integer room id must not be negative: {room_id}")
        return str(room_id)
    return encode_id(room_id)


def decode_room_id(encoded: str) -> int | str:
    """Digits mean an integer room id (TRTC never encodes those); anything else is Base64."""
    if encoded.isdigit():
        return int(encoded)
    return decode_id(encoded)


# --- timestamps ------------------------------------------------------------------------------


def format_utc(moment: datetime) -> str:
    """``YYYYMMDDhhmmssSSS`` in UTC; naive datetimes are refused so local time never leaks in."""
    if moment.tzinfo is None:
        raise ValueError("format_utc needs a timezone-aware datetime")
    moment = moment.astimezone(UTC)
    return moment.strftime(_UTC_FORMAT) + f"{moment.microsecond // 1000:03d}"


def parse_utc(text: str) -> datetime:
    if len(text) != 17 or not text.isdigit():
        raise ValueError(f"not a YYYYMMDDhhmmssSSS timestamp: {text!r}")
    moment = datetime.strptime(text[:14], _UTC_FORMAT).replace(tzinfo=UTC)
    return moment + timedelta(milliseconds=int(text[14:]))


def utc_from_unix_ms(unix_ms: int) -> datetime:
    """Playlists and callbacks carry Unix milliseconds; names carry the formatted form."""
    return _EPOCH + timedelta(milliseconds=unix_ms)


def unix_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("unix_ms needs a timezone-aware datetime")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


# --- building names --------------------------------------------------------------------------


def _ha(attempt: int) -> str:
    if not 0 <= attempt <= MAX_HA_ATTEMPT:
        raise ValueError(f"ha attempt must be 0..{MAX_HA_ATTEMPT}, got {attempt}")
    return f"ha{attempt}_" if attempt else ""


def _room_stem(sdkappid: int, room_id: int | str) -> str:
    return f"{int(sdkappid)}_{encode_room_id(room_id)}"


def _single_stem(sdkappid: int, room_id: int | str, user_id: str, media_id: MediaId | str) -> str:
    media = MediaId(media_id)
    return f"{_room_stem(sdkappid, room_id)}{USER_START}{encode_id(user_id)}{USER_END}{media}"


def single_playlist_name(
    sdkappid: int, room_id: int | str, user_id: str, media_id: MediaId | str,
    track: TrackType | str, *, ha: int = 0,
) -> str:
    return f"{_ha(ha)}{_single_stem(sdkappid, room_id, user_id, media_id)}_{TrackType(track)}.m3u8"


def single_segment_name(
    sdkappid: int, room_id: int | str, user_id: str, media_id: MediaId | str,
    track: TrackType | str, start: datetime, *, ha: int = 0,
) -> str:
    stem = _single_stem(sdkappid, room_id, user_id, media_id)
    return f"{_ha(ha)}{stem}_{TrackType(track)}_{format_utc(start)}.ts"


def single_mp4_name(
    sdkappid: int, room_id: int | str, user_id: str, media_id: MediaId | str, index: int = 1,
) -> str:
    """``index`` counts from 1; a new MP4 starts at 2 GB or 24 h (seed 002)."""
    if index < 1:
        raise ValueError("mp4 index starts at 1")
    return f"{_single_stem(sdkappid, room_id, user_id, media_id)}_{index}.mp4"


def single_mp3_name(sdkappid: int, room_id: int | str, user_id: str) -> str:
    """A user's audio as one MP3: the main audio playlist's name with ``.mp3``."""
    return f"{_single_stem(sdkappid, room_id, user_id, MediaId.MAIN)}_{TrackType.AUDIO}.mp3"


def mixed_mp3_name(sdkappid: int, room_id: int | str) -> str:
    return f"{_room_stem(sdkappid, room_id)}.mp3"


def mixed_playlist_name(sdkappid: int, room_id: int | str, *, ha: int = 0) -> str:
    return f"{_ha(ha)}{_room_stem(sdkappid, room_id)}.m3u8"


def mixed_segment_name(sdkappid: int, room_id: int | str, start: datetime, *, ha: int = 0) -> str:
    return f"{_ha(ha)}{_room_stem(sdkappid, room_id)}_{format_utc(start)}.ts"


def mixed_mp4_name(sdkappid: int, room_id: int | str, index: int = 1) -> str:
    if index < 1:
        raise ValueError("mp4 index starts at 1")
    return f"{_room_stem(sdkappid, room_id)}_{index}.mp4"


def object_key(file_name: str, *, prefix: str | None = None, task_id: str | None = None) -> str:
    """``<prefix>/<taskid>/<name>``; the prefix is left out when not given (seed 002)."""
    parts = [p.strip("/") for p in (prefix, task_id) if p and p.strip("/")]
    return "/".join([*parts, file_name])


# --- parsing ---------------------------------------------------------------------------------

_ID = r"[A-Za-z0-9+\-.]+"
_SINGLE = re.compile(
    rf"^(?:ha(?P<ha>[1-3])_)?(?P<sdkappid>\d+)_(?P<room>{_ID}){USER_START}(?P<user>{_ID}){USER_END}"
    r"(?P<media>main|aux)"
    r"(?:_(?P<type>audio|video)(?:_(?P<utc>\d{17}))?\.(?P<ext>m3u8|ts|mp3)|_(?P<index>\d+)\.(?P<mp4>mp4))$"
)
_MIXED = re.compile(
    rf"^(?:ha(?P<ha>[1-3])_)?(?P<sdkappid>\d+)_(?P<room>{_ID})"
    r"(?:\.(?P<m3u8>m3u8)|\.(?P<mp3>mp3)|_(?P<utc>\d{17})\.(?P<ts>ts)|_(?P<index>\d+)\.(?P<mp4>mp4))$"
)


@dataclass(frozen=True)
class RecordingName:
    """What a recording file name says about the file."""

    kind: FileKind
    sdkappid: int
    room_id: int | str
    ha: int = 0
    user_id: str | None = None
    user_id_encoded: str | None = None
    media_id: MediaId | None = None
    track: TrackType | None = None
    start: datetime | None = None
    index: int | None = None

    @property
    def single_stream(self) -> bool:
        return self.user_id is not None


def parse_name(path: str) -> RecordingName:
    """Parse a file name (any leading ``<prefix>/<taskid>/`` is ignored).

    Raises ``ValueError`` for names that are not recording files, so callers can skip strays.
    """
    name = path.rsplit("/", 1)[-1]
    match = _SINGLE.match(name)
    if match:
        return _parsed_single(match)
    match = _MIXED.match(name)
    if match:
        return _parsed_mixed(match)
    raise ValueError(f"not a recording file name: {name!r}")


def _parsed_single(match: re.Match[str]) -> RecordingName:
    if match["mp4"]:
        kind = FileKind.MP4
        if match["ha"]:
            raise ValueError("MP4 files never carry an ha prefix")
    elif match["ext"] == "ts":
        kind = FileKind.SEGMENT
        if not match["utc"]:
            raise ValueError("a segment name needs a <utc> timestamp")
    elif match["ext"] == "mp3":
        kind = FileKind.MP3
        if match["ha"] or match["utc"] or match["type"] != TrackType.AUDIO or match["media"] != MediaId.MAIN:
            raise ValueError("an MP3 name is <stem>__UserId_e_main_audio.mp3, without ha or <utc>")
    else:
        kind = FileKind.PLAYLIST
        if match["utc"]:
            raise ValueError("a playlist name carries no <utc> timestamp")
    return RecordingName(
        kind=kind,
        sdkappid=int(match["sdkappid"]),
        room_id=decode_room_id(match["room"]),
        ha=int(match["ha"] or 0),
        user_id=decode_id(match["user"]),
        user_id_encoded=match["user"],
        media_id=MediaId(match["media"]),
        track=TrackType(match["type"]) if match["type"] else None,
        start=parse_utc(match["utc"]) if match["utc"] else None,
        index=int(match["index"]) if match["index"] else None,
    )


def _parsed_mixed(match: re.Match[str]) -> RecordingName:
    if match["mp4"] or match["mp3"]:
        kind = FileKind.MP4 if match["mp4"] else FileKind.MP3
        if match["ha"]:
            raise ValueError(f"{kind.value.upper()} files never carry an ha prefix")
    else:
        kind = FileKind.SEGMENT if match["ts"] else FileKind.PLAYLIST
    return RecordingName(
        kind=kind,
        sdkappid=int(match["sdkappid"]),
        room_id=decode_room_id(match["room"]),
        ha=int(match["ha"] or 0),
        start=parse_utc(match["utc"]) if match["utc"] else None,
        index=int(match["index"]) if match["index"] else None,
    )
