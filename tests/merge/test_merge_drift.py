"""A/V sync over a 2-minute per-user output with a blank between two sections.

The source has a white flash and a beep at the same wall-clock moments. Audio (44.1 kHz, so
it is resampled) and video start at different moments, and the audio of the second section
starts 0.3 s after its video. Sync must come from the segment names and media timestamps: at
the end of the output the flash and the beep must still be within 40 ms of each other and of
where they belong.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from mp4check import audio_onset, tracks, video_onset
from tsgen import Run, write_audio, write_video

from capstan.media import naming
from capstan.merge.cli import main

MARKS = (5.0, 75.0, 117.0)  # wall seconds after BASE; 60 s lies in the blank
VIDEO_START = -0.48  # earliest segment (a whole number of 25 fps frames before the marks)
MAX_DRIFT = 0.040


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("drift-in")
    write_video(source, "drift", "main", [Run(VIDEO_START, 50.48), Run(70.0, 50.0)], color=(40, 40, 40),
                size=(64, 48), fps=25, segment_seconds=10.0, flashes=MARKS)
    write_audio(source, "drift", [Run(0.0, 50.0), Run(70.3, 49.7)], tone_hz=1000, segment_seconds=10.0,
                beeps=MARKS, rate=44100)
    out = tmp_path_factory.mktemp("drift-out")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(["-f", str(source), "-o", str(out), "-m", "1", "-p", "25"]) == 0, stderr.getvalue()
    (path,) = out.glob(f"{naming.encode_id('drift')}_*.mp4")
    return path


def test_two_minute_output(merged):
    info = tracks(merged)
    assert info.video == pytest.approx(120.48, abs=0.05)
    assert info.audio == pytest.approx(120.48, abs=0.05)
    assert abs(info.video - info.audio) < MAX_DRIFT


def test_drift_at_the_end_under_40ms(merged, record_property):
    offsets = []
    for mark in MARKS:
        expected = mark - VIDEO_START
        video = video_onset(merged, expected - 1.0)
        audio = audio_onset(merged, expected - 1.0)
        assert video == pytest.approx(expected, abs=MAX_DRIFT)
        assert audio == pytest.approx(expected, abs=MAX_DRIFT)
        offsets.append(audio - video)
    record_property("av_offsets_ms", [round(o * 1000, 2) for o in offsets])
    print("audio-video offsets (ms):", [round(o * 1000, 2) for o in offsets])
    assert abs(offsets[-1]) < MAX_DRIFT
    assert abs(offsets[-1] - offsets[0]) < MAX_DRIFT
