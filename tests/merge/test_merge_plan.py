"""Sectioning and output planning, on synthetic segments (no media)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from capstan.media import naming
from capstan.media.naming import parse_name
from capstan.merge.plan import (
    AudioWith,
    MergeMode,
    Segment,
    clamp_fps,
    cut_sections,
    group_by_user,
    output_name,
    plan_outputs,
)

BASE = naming.parse_utc("20240501100000000")


def seg(user: str, media: str, track: str, start: float, duration: float = 2.0, ha: int = 0) -> Segment:
    moment = BASE + timedelta(seconds=start)
    name = naming.single_segment_name(1400000001, 7, user, media, track, moment, ha=ha)
    return Segment(name, parse_name(name), moment.timestamp(), duration)


def test_gap_of_exactly_15s_stays_in_the_section_and_more_splits():
    audio = [seg("u", "main", "audio", 0), seg("u", "main", "audio", 17), seg("u", "main", "audio", 34.001)]
    sections = cut_sections(audio, [])
    assert [(s.start - BASE.timestamp(), s.duration) for s in sections] == [
        (0.0, pytest.approx(19.0)), (pytest.approx(34.001), pytest.approx(2.0))]


def test_video_bridges_audio_gaps_and_ignored_video_does_not():
    audio = [seg("u", "main", "audio", 0), seg("u", "main", "audio", 30)]
    main = [seg("u", "main", "video", 10, duration=12)]
    assert len(cut_sections(audio, main)) == 1
    assert len(cut_sections(audio, [])) == 2


def test_choose_video_per_audio_with():
    segments = [seg("a", "main", "audio", 0), seg("a", "main", "video", 0), seg("a", "aux", "video", 0),
                seg("b", "main", "audio", 0), seg("b", "aux", "video", 0)]
    users = group_by_user(segments)
    picked = {
        (mode, p.user.user_id): p.video_media
        for mode in AudioWith
        for p in plan_outputs(users, MergeMode.PER_SECTION, mode)
    }
    assert picked == {
        (AudioWith.MAIN, "a"): naming.MediaId.MAIN, (AudioWith.MAIN, "b"): None,
        (AudioWith.AUTO, "a"): naming.MediaId.MAIN, (AudioWith.AUTO, "b"): naming.MediaId.AUX,
        (AudioWith.AUX, "a"): naming.MediaId.AUX, (AudioWith.AUX, "b"): naming.MediaId.AUX,
    }


def test_user_with_only_an_ignored_video_gets_no_output():
    users = group_by_user([seg("c", "aux", "video", 0)])
    assert plan_outputs(users, MergeMode.PER_SECTION, AudioWith.MAIN) == []
    assert len(plan_outputs(users, MergeMode.PER_SECTION, AudioWith.AUX)) == 1


def test_per_user_spans_with_and_without_blanks():
    segments = [seg("u", "main", "audio", t) for t in (0, 2, 30, 32)]
    users = group_by_user(segments)
    (filled,) = plan_outputs(users, MergeMode.PER_USER, AudioWith.MAIN)
    assert filled.duration == pytest.approx(34.0)
    assert len(filled.spans) == 1
    (skipped,) = plan_outputs(users, MergeMode.PER_USER, AudioWith.MAIN, skip_blanks=True)
    assert skipped.duration == pytest.approx(8.0)
    assert [s.out_start for s in skipped.spans] == [0.0, 4.0]
    assert skipped.spans[1].to_output(BASE.timestamp() + 31) == pytest.approx(5.0)
    assert filled.file_name == skipped.file_name == f"{naming.encode_id('u')}_20240501100000000.mp4"


def test_recovered_copy_sorts_after_the_original():
    original, recovered = seg("u", "main", "audio", 4, ha=0), seg("u", "main", "audio", 4, ha=1)
    (tracks,) = group_by_user([recovered, original])
    assert tracks.audio == [original, recovered]


def test_output_name_uses_the_first_segment_utc():
    moment = BASE + timedelta(milliseconds=1234)
    assert output_name("YWxpY2U.", moment.timestamp()) == "YWxpY2U._20240501100001234.mp4"


@pytest.mark.parametrize(("asked", "used"), [(200, 120), (120, 120), (15, 15), (5, 5), (1, 5), (-3, 5)])
def test_clamp_fps(asked, used):
    assert clamp_fps(asked) == used
