"""capstan-merge end to end on a generated segment set (real TS files made with PyAV).

alice: audio + main video (red) at 0-4 s, 24-28 s and 38-42 s (the last run recovered after a
failover, so its files carry ``ha1_``) and aux video (green) at 24-28 s only: a 20 s gap (new
section) and a 10 s gap (same section). bob: audio + aux video (yellow) at 0-6 s, no main.
alice's tone is 440 Hz, bob's 880 Hz.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from mp4check import rgb_at, tone_at, tracks
from tsgen import Run, write_audio, write_video

from capstan.media import naming
from capstan.merge.cli import main

RED, GREEN, YELLOW, BLACK = (255, 0, 0), (0, 255, 0), (255, 255, 0), (0, 0, 0)
ALICE, BOB = naming.encode_id("alice"), naming.encode_id("bob???")
ALICE_RUNS = [Run(0, 4), Run(24, 4), Run(38, 4, ha=1)]
TOLERANCE = 0.1  # seconds: one frame at 15 fps plus AAC framing


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, Path]  # file name -> path


def run_merge(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    outputs = {}
    for line in out.getvalue().splitlines():
        path = Path(line.split("\t")[0])
        outputs[path.name] = path
    return Result(code, out.getvalue(), err.getvalue(), outputs)


def close(color: tuple[int, int, int] | None, expected: tuple[int, int, int]) -> bool:
    return color is not None and all(abs(a - b) <= 12 for a, b in zip(color, expected, strict=True))


@dataclass
class Recordings:
    both: Path
    bob_only: Path
    alice1: datetime  # first-segment utc of each expected section
    alice2: datetime
    bob: datetime


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Recordings:
    root = tmp_path_factory.mktemp("recordings")
    both = root / "both"
    both.mkdir()
    alice_audio = write_audio(both, "alice", ALICE_RUNS, tone_hz=440)
    write_video(both, "alice", "main", ALICE_RUNS, color=RED)
    write_video(both, "alice", "aux", [Run(24, 4)], color=GREEN)
    bob_audio = write_audio(both, "bob???", [Run(0, 6)], tone_hz=880)
    write_video(both, "bob???", "aux", [Run(0, 6)], color=YELLOW)
    bob_only = root / "bob_only"
    bob_only.mkdir()
    for path in both.glob(f"*{BOB}*"):
        shutil.copy(path, bob_only / path.name)
    # Audio's first packet (AAC priming) is the earliest segment start of every section.
    return Recordings(both, bob_only, alice_audio[0].start, alice_audio[2].start, bob_audio[0].start)


def name(user: str, start: datetime) -> str:
    return f"{user}_{naming.format_utc(start)}.mp4"


@pytest.fixture(scope="module")
def per_section(recordings, tmp_path_factory) -> Result:
    return run_merge("-f", str(recordings.both), "-o", str(tmp_path_factory.mktemp("m0")))


def test_per_section_files_names_and_durations(per_section, recordings):
    assert per_section.code == 0, per_section.stderr
    a1, a2, b = (name(ALICE, recordings.alice1), name(ALICE, recordings.alice2),
                 name(BOB, recordings.bob))
    assert sorted(per_section.outputs) == sorted([a1, a2, b])
    first, second, bob = (tracks(per_section.outputs[n]) for n in (a1, a2, b))
    assert first.video == pytest.approx(4.0, abs=TOLERANCE)
    assert first.audio == pytest.approx(4.0, abs=TOLERANCE)
    # 24-28, a 10 s gap kept inside the section, then the recovered (ha1_) 38-42.
    assert second.video == pytest.approx(18.0, abs=TOLERANCE)
    assert second.audio == pytest.approx(18.0, abs=TOLERANCE)
    assert (first.fps, first.size) == (15.0, (160, 120))
    # -a 0: bob has no main video, so his file is audio only (his aux is ignored).
    assert bob.video is None
    assert bob.audio == pytest.approx(6.0, abs=TOLERANCE)


def test_per_section_content_and_the_gap_inside_a_section(per_section, recordings):
    second = per_section.outputs[name(ALICE, recordings.alice2)]
    assert close(rgb_at(second, 2.0), RED)
    assert tone_at(second, 1.0, 2.0)[0] == pytest.approx(440, abs=5)
    # Wall 33 s is in the 10 s gap: black and silent.
    assert close(rgb_at(second, 9.0), BLACK)
    assert tone_at(second, 8.0, 10.0)[1] < 0.001
    # Wall 40 s comes from the ha1_ files.
    assert close(rgb_at(second, 16.0), RED)
    assert tone_at(second, 15.5, 16.5)[0] == pytest.approx(440, abs=5)
    bob = per_section.outputs[name(BOB, recordings.bob)]
    assert tone_at(bob, 1.0, 2.0)[0] == pytest.approx(880, abs=5)


def test_progress_lines_when_stderr_is_not_a_terminal(per_section):
    assert "0% (0.0/" in per_section.stderr
    assert "100% (" in per_section.stderr
    assert "\r" not in per_section.stderr


def test_per_user_fills_the_blank(recordings, tmp_path):
    result = run_merge("-f", str(recordings.both), "-o", str(tmp_path), "-m", "1")
    assert result.code == 0, result.stderr
    assert sorted(result.outputs) == sorted([name(ALICE, recordings.alice1), name(BOB, recordings.bob)])
    alice = result.outputs[name(ALICE, recordings.alice1)]
    info = tracks(alice)
    assert info.video == pytest.approx(42.0, abs=TOLERANCE)
    assert info.audio == pytest.approx(42.0, abs=TOLERANCE)
    assert close(rgb_at(alice, 14.0), BLACK)  # inside the 20 s blank
    assert tone_at(alice, 10.0, 20.0)[1] < 0.001
    assert close(rgb_at(alice, 25.0), RED)
    assert tone_at(alice, 25.0, 26.0)[0] == pytest.approx(440, abs=5)


def test_per_user_drops_the_blank_with_s(recordings, tmp_path):
    result = run_merge("-f", str(recordings.both), "-o", str(tmp_path), "-m", "1", "-s")
    assert result.code == 0, result.stderr
    alice = result.outputs[name(ALICE, recordings.alice1)]
    info = tracks(alice)
    # 4 s + 18 s: the 20 s blank between sections is gone, the 10 s gap inside one stays.
    assert info.video == pytest.approx(22.0, abs=TOLERANCE)
    assert info.audio == pytest.approx(22.0, abs=TOLERANCE)
    assert close(rgb_at(alice, 5.0), RED)  # wall 25 s right after wall 4 s
    assert tone_at(alice, 4.5, 5.5)[0] == pytest.approx(440, abs=5)
    assert close(rgb_at(alice, 13.0), BLACK)  # wall 33 s, the 10 s gap
    assert close(rgb_at(alice, 20.0), RED)


def test_audio_with_auto_picks_main_else_aux(recordings, tmp_path):
    result = run_merge("-f", str(recordings.both), "-o", str(tmp_path), "-a", "1")
    assert result.code == 0, result.stderr
    assert close(rgb_at(result.outputs[name(ALICE, recordings.alice2)], 1.0), RED)
    assert close(rgb_at(result.outputs[name(BOB, recordings.bob)], 1.0), YELLOW)


def test_audio_with_aux(recordings, tmp_path):
    result = run_merge("-f", str(recordings.both), "-o", str(tmp_path), "-a", "2")
    assert result.code == 0, result.stderr
    second = result.outputs[name(ALICE, recordings.alice2)]
    assert close(rgb_at(second, 1.0), GREEN)
    assert close(rgb_at(second, 16.0), BLACK)  # no aux there; main is ignored
    # alice's first section has audio only; with -a 2 it keeps a black picture.
    assert close(rgb_at(result.outputs[name(ALICE, recordings.alice1)], 1.0), BLACK)
    assert close(rgb_at(result.outputs[name(BOB, recordings.bob)], 1.0), YELLOW)


def test_fps_is_clamped_and_resolution_applied(recordings, tmp_path):
    result = run_merge("-f", str(recordings.bob_only), "-o", str(tmp_path), "-a", "1",
                       "-p", "200", "-r", "96", "72")
    assert result.code == 0, result.stderr
    assert "clamped to 120" in result.stderr
    info = tracks(result.outputs[name(BOB, recordings.bob)])
    assert info.fps == 120.0
    assert info.size == (96, 72)
    assert info.video == pytest.approx(6.0, abs=TOLERANCE)


def test_low_fps_is_clamped_to_5(recordings, tmp_path):
    result = run_merge("-f", str(recordings.bob_only), "-o", str(tmp_path), "-a", "1", "-p", "1")
    assert result.code == 0, result.stderr
    assert tracks(result.outputs[name(BOB, recordings.bob)]).fps == 5.0


def test_damaged_segment_is_reported_and_the_rest_merged(recordings, tmp_path):
    source = tmp_path / "in"
    shutil.copytree(recordings.bob_only, source)
    victim = sorted(source.glob("*aux_video_*.ts"))[1]
    victim.write_bytes(b"\x00garbage" * 500)
    result = run_merge("-f", str(source), "-o", str(tmp_path / "out"), "-a", "1")
    assert result.code == 3
    assert f"damaged segment, skipped: {victim}" in result.stderr
    out = result.outputs[name(BOB, recordings.bob)]
    assert tracks(out).audio == pytest.approx(6.0, abs=TOLERANCE)
    assert close(rgb_at(out, 1.0), YELLOW)
    assert close(rgb_at(out, 3.0), BLACK)  # the damaged 2-4 s piece is black, not a frozen frame
    assert close(rgb_at(out, 5.0), YELLOW)


def test_missing_directory(tmp_path):
    result = run_merge("-f", str(tmp_path / "nope"))
    assert result.code == 1
    assert "is not a directory" in result.stderr


def test_directory_without_recognisable_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "1400000001_4321_20240501100000000.ts").write_bytes(b"mixed-stream, not ours")
    result = run_merge("-f", str(tmp_path))
    assert result.code == 1
    assert "no single-stream recording segments" in result.stderr
    assert not list(tmp_path.glob("*.mp4"))


def test_usage_errors_return_2(tmp_path, capsys):
    assert main(["-f", str(tmp_path), "-m", "7"]) == 2
    assert main([]) == 2
    assert main(["-f", str(tmp_path), "-r", "0", "10"]) == 2


def test_unwritable_output_is_an_error(recordings, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_merge("-f", str(recordings.bob_only), "-o", str(blocker / "out"))
    assert result.code == 1
    assert "cannot create" in result.stderr
