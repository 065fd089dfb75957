"""What to merge into which MP4: grouping by user, choosing the video, cutting sections.

Pure (no I/O): the inputs are segments already probed, the output is a list of
:class:`OutputPlan` that the encoder follows. Keeping the decisions here lets tests cover every
mode without touching media.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum

from capstan.media.naming import MediaId, RecordingName, TrackType, format_utc

# Seed 002: two segments more than 15 s apart belong to different sections.
SECTION_GAP_SECONDS = 15.0
MIN_FPS, MAX_FPS, DEFAULT_FPS = 5, 120, 15


class MergeMode(IntEnum):
    PER_SECTION = 0
    PER_USER = 1


class AudioWith(IntEnum):
    """Which video the user's audio goes with (``-a``)."""

    MAIN = 0
    AUTO = 1
    AUX = 2


def clamp_fps(fps: int) -> int:
    return min(max(fps, MIN_FPS), MAX_FPS)


@dataclass(frozen=True)
class Segment:
    """One single-stream TS file laid on the wall clock.

    ``start`` comes from the name (``<utc>``) and is the wall time of the first media timestamp
    ``media_start``; ``duration`` comes from the media. Times are Unix seconds.
    """

    path: str
    name: RecordingName
    start: float
    duration: float
    media_start: float = 0.0
    width: int | None = None
    height: int | None = None

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def ha(self) -> int:
        return self.name.ha

    @property
    def sort_key(self) -> tuple[float, int, str]:
        # An original file sorts before a recovered (ha) copy that starts at the same moment.
        return (self.start, self.name.ha, self.path)


@dataclass
class UserTracks:
    sdkappid: int
    room_id: int | str
    user_id: str
    user_id_encoded: str
    audio: list[Segment] = field(default_factory=list)
    main: list[Segment] = field(default_factory=list)
    aux: list[Segment] = field(default_factory=list)

    def add(self, segment: Segment) -> None:
        if segment.name.track is TrackType.AUDIO:
            self.audio.append(segment)
        elif segment.name.media_id is MediaId.AUX:
            self.aux.append(segment)
        else:
            self.main.append(segment)


def group_by_user(segments: list[Segment]) -> list[UserTracks]:
    """One entry per (sdkappid, room, user); every track sorted by start time."""
    users: dict[tuple[int, int | str, str], UserTracks] = {}
    for segment in segments:
        name = segment.name
        if name.user_id is None or name.user_id_encoded is None:
            raise ValueError(f"not a single-stream segment: {segment.path}")
        key = (name.sdkappid, name.room_id, name.user_id_encoded)
        if key not in users:
            users[key] = UserTracks(name.sdkappid, name.room_id, name.user_id, name.user_id_encoded)
        users[key].add(segment)
    for tracks in users.values():
        for track in (tracks.audio, tracks.main, tracks.aux):
            track.sort(key=lambda s: s.sort_key)
    return sorted(users.values(), key=lambda t: (t.sdkappid, str(t.room_id), t.user_id_encoded))


def choose_video(tracks: UserTracks, audio_with: AudioWith) -> tuple[MediaId | None, list[Segment]]:
    """Seed 002 ``-a``: main only, main-else-aux, or aux only; the other video is ignored."""
    if audio_with is AudioWith.MAIN or (audio_with is AudioWith.AUTO and tracks.main):
        return (MediaId.MAIN, tracks.main) if tracks.main else (None, [])
    return (MediaId.AUX, tracks.aux) if tracks.aux else (None, [])


@dataclass
class Section:
    """A stretch of a user's recording with no hole longer than the section gap."""

    start: float
    end: float
    audio: list[Segment] = field(default_factory=list)
    video: list[Segment] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.end - self.start


def cut_sections(
    audio: list[Segment], video: list[Segment], gap: float = SECTION_GAP_SECONDS
) -> list[Section]:
    """Audio and the chosen video together decide the sections (an ignored video does not)."""
    tagged = [(s, True) for s in audio] + [(s, False) for s in video]
    tagged.sort(key=lambda item: item[0].sort_key)
    sections: list[Section] = []
    for segment, is_audio in tagged:
        if not sections or segment.start - sections[-1].end > gap:
            sections.append(Section(segment.start, segment.end))
        section = sections[-1]
        section.end = max(section.end, segment.end)
        (section.audio if is_audio else section.video).append(segment)
    return sections


@dataclass(frozen=True)
class Span:
    """A section placed on the output timeline at ``out_start`` seconds."""

    section: Section
    out_start: float

    @property
    def out_end(self) -> float:
        return self.out_start + self.section.duration

    def to_output(self, wall: float) -> float:
        return wall - self.section.start + self.out_start


@dataclass
class OutputPlan:
    file_name: str
    user: UserTracks
    video_media: MediaId | None
    spans: list[Span]
    has_audio: bool

    @property
    def has_video(self) -> bool:
        return self.video_media is not None

    @property
    def duration(self) -> float:
        return self.spans[-1].out_end if self.spans else 0.0

    @property
    def width(self) -> int | None:
        return next((s.width for sp in self.spans for s in sp.section.video if s.width), None)

    @property
    def height(self) -> int | None:
        return next((s.height for sp in self.spans for s in sp.section.video if s.height), None)


def output_name(user_id_encoded: str, first_segment_start: float) -> str:
    """``<Base64 user id>_<utc of the section's first segment>.mp4`` (documented in docs/merge.md)."""
    moment = datetime.fromtimestamp(round(first_segment_start, 3), tz=UTC)
    return f"{user_id_encoded}_{format_utc(moment)}.mp4"


def plan_outputs(
    users: list[UserTracks], mode: MergeMode, audio_with: AudioWith, *, skip_blanks: bool = False
) -> list[OutputPlan]:
    plans: list[OutputPlan] = []
    for tracks in users:
        media, video = choose_video(tracks, audio_with)
        sections = cut_sections(tracks.audio, video)
        if not sections:
            continue
        has_audio = bool(tracks.audio)
        if mode is MergeMode.PER_SECTION:
            for section in sections:
                name = output_name(tracks.user_id_encoded, section.start)
                plans.append(OutputPlan(name, tracks, media, [Span(section, 0.0)], has_audio))
            continue
        name = output_name(tracks.user_id_encoded, sections[0].start)
        if skip_blanks:
            spans, cursor = [], 0.0
            for section in sections:
                spans.append(Span(section, cursor))
                cursor += section.duration
        else:
            whole = Section(
                sections[0].start,
                sections[-1].end,
                [s for sec in sections for s in sec.audio],
                [s for sec in sections for s in sec.video],
            )
            spans = [Span(whole, 0.0)]
        plans.append(OutputPlan(name, tracks, media, spans, has_audio))
    return plans

