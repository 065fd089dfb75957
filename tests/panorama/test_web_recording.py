"""The panorama worker's session in this process, on the real programs (Xvfb, PulseAudio, Debian's
Chromium through Playwright, x11grab, the shared encoder and sinks), against the test page served on
an allowlisted loopback address; the files land in a bucket on local disk. What is asserted is the
recorded media: size, duration, counters, colours, tone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
import pytest

from capstan.operator.phases import EXIT_TASK_REFUSED

from .conftest import Run, dominant_hz, media, read_media, record, recording, spec_for, wait_report
from .page import TONE_HZ, PageServer

pytestmark = [media, pytest.mark.timeout(180)]
KEY_HEX = "21834cca41778803e1afba3f41e70c90"
AUTH_URL = "https://keys.capstan.test/enc.key"
TOLERANCE = 0.5
# A file's length against the script's marks: on two cores with another media test beside it, files
# came out up to 0.66 s longer than the marks (the stop now cuts where it was asked; what is left is
# the start mark, taken when the script's thread sees the report, and the audio's end); a 3 s pause
# left in, or a stop not honoured, is still seconds off
DURATION_SLACK = 1.0
PAGE_FPS = 30  # the page's counter steps 30 times a second


def _stop_after(seconds: float, marks: dict[str, float]) -> Any:
    def script(w: Any) -> None:
        marks["start"] = recording(w)
        time.sleep(seconds)
        marks["stop"] = time.time()
        w.request_stop("spec.stop is true")
    return script


def _single_file(run: Run) -> Path:
    assert run.code == 0, run.worker.reports[-3:]
    return run.file()


def test_an_mp4_of_the_page_has_its_size_duration_changing_frames_and_tone(tmp_path: Path, page: PageServer) -> None:
    marks: dict[str, float] = {}
    run = record(tmp_path, spec_for(page.url, width=640, height=360), _stop_after(6, marks))
    m = read_media(_single_file(run))
    assert (m.width, m.height) == (640, 360)
    assert abs(m.duration - (marks["stop"] - marks["start"])) < DURATION_SLACK, (m.duration, marks)
    counters = [c for _, c, _ in m.frames]
    assert counters == sorted(counters) and counters[-1] - counters[0] > 4 * PAGE_FPS, counters[::15]
    colours = {k for _, _, k in m.frames if k is not None}
    assert len(colours) >= 4, colours  # a new colour each second, 6 s recorded
    assert abs(dominant_hz(m.audio, m.rate) - TONE_HZ) < 5
    files = run.worker.latest("files")
    assert files[0]["fileName"].startswith("task-1/") and files[0]["fileName"].endswith(".mp4")
    assert files[0]["size"] == run.file().stat().st_size and abs(files[0]["duration"] - m.duration) < 0.1
    phases = [r["phase"] for r in run.worker.reports if "phase" in r]
    assert phases == ["recording", "transcode", "upload"], phases


def test_target_dir_name_and_domain_name_the_file_and_its_url(tmp_path: Path, page: PageServer) -> None:
    spec = spec_for(page.url, output={"targetDir": "11234/", "targetName": "record-file-name.mp4",
                                      "domain": "abc.capstan.test"})
    run = record(tmp_path, spec, _stop_after(2, {}))
    _single_file(run)
    f = run.worker.latest("files")[0]
    assert f["fileName"] == "11234/record-file-name.mp4"
    assert f["url"] == "https://abc.capstan.test/11234/record-file-name.mp4"


def test_with_manual_start_nothing_before_window_start_record_is_recorded(tmp_path: Path, page: PageServer) -> None:
    marks: dict[str, float] = {}
    spec = spec_for(page.url + "?manual=3", manualStart=True)
    run = record(tmp_path, spec, _stop_after(4, marks))
    m = read_media(_single_file(run))
    first = m.frames[0][1]
    # the page calls startRecord() 3 s after it loaded: its counter is at 90 by then; the call reaches
    # the worker through Playwright (0.1-0.6 s on two loaded cores), and recording starts then
    assert 3 * PAGE_FPS - 3 <= first <= 3 * PAGE_FPS + 1.0 * PAGE_FPS, first
    assert abs(m.duration - (marks["stop"] - marks["start"])) < DURATION_SLACK, (m.duration, marks)
    idle = [r for r in run.worker.reports if r.get("phase") == "idle"]
    assert idle and "window.startRecord()" in idle[0]["message"]


def test_a_page_that_never_calls_start_record_fails_after_the_ready_timeout(tmp_path: Path, page: PageServer) -> None:
    run = record(tmp_path, spec_for(page.url, manualStart=True, manualStartTimeout=3))
    assert run.code == EXIT_TASK_REFUSED
    result = run.worker.latest("result")
    assert result["errorCode"] == "StartTimeout"
    assert "did not call window.startRecord() within 3 s" in result["errorMessage"]
    assert not run.bucket.stored  # nothing was recorded, nothing stored


def test_pause_and_resume_make_one_file_without_the_paused_time(tmp_path: Path, page: PageServer) -> None:
    marks: dict[str, float] = {}

    def script(w: Any) -> None:
        marks["start"] = recording(w)
        time.sleep(3)
        marks["pause"] = time.time()
        w.change(paused=True)
        wait_report(w, lambda r: r.get("phase") == "paused")
        time.sleep(3)
        marks["resume"] = time.time()
        w.change(paused=False)
        wait_report(w, lambda r: r.get("phase") == "recording")
        time.sleep(3)
        marks["stop"] = time.time()
        w.request_stop("spec.stop is true")

    run = record(tmp_path, spec_for(page.url), script)
    m = read_media(_single_file(run))
    paused = marks["resume"] - marks["pause"]
    # the file lacks the time the worker was paused (it applies a pause and a resume when the watch
    # brings them, later than the script's marks on a loaded machine: its own paused time is used, and
    # checked against the marks below); the stop cuts where it was asked for
    worker_paused = run.worker.latest("pausedSeconds")
    assert abs(m.duration - (marks["stop"] - marks["start"] - worker_paused)) < DURATION_SLACK, (m.duration, marks)
    counters = [c for _, c, _ in m.frames]
    steps = [b - a for a, b in zip(counters, counters[1:], strict=False)]
    jump = max(steps)
    assert abs(jump - paused * PAGE_FPS) < TOLERANCE * PAGE_FPS, (jump, paused)
    assert sorted(steps)[-2] < PAGE_FPS / 2  # one jump only
    times = [t for t, _, _ in m.frames]
    # no hole in the timeline where the pause was (3 s); a loaded capture may stall a few frames
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) < 1.0
    assert abs(run.worker.latest("pausedSeconds") - paused) < TOLERANCE


@pytest.mark.parametrize("by", ["refreshGeneration", "annotation"])
def test_a_refresh_reloads_the_page_into_the_same_recording(tmp_path: Path, page: PageServer, by: str) -> None:
    marks: dict[str, float] = {}

    def script(w: Any) -> None:
        marks["start"] = recording(w)
        time.sleep(3)
        if by == "annotation":
            w.annotate(**{"capstan.dev/refresh": "2026-12-01T10:00:00Z"})
        else:
            w.change(refreshGeneration=1)
        wait_report(w, lambda r: "refreshed" in str(r.get("message")))
        time.sleep(3)
        marks["stop"] = time.time()
        w.request_stop("spec.stop is true")

    run = record(tmp_path, spec_for(page.url), script)
    m = read_media(_single_file(run))
    counters = [c for _, c, _ in m.frames]
    # the counter starts again with the reloaded page, in the same file
    drops = [i for i, (a, b) in enumerate(zip(counters, counters[1:], strict=False)) if b < a - PAGE_FPS]
    assert len(drops) == 1, counters[::5]
    assert abs(m.duration - (marks["stop"] - marks["start"])) < DURATION_SLACK, (m.duration, marks)
    assert page.requests.count("/") == 2  # loaded twice


def test_encrypted_hls_plays_with_the_key_and_not_without(tmp_path: Path, page: PageServer) -> None:
    spec = spec_for(page.url, output={"muxer": "hls", "targetName": "class", "authUrl": AUTH_URL,
                                      "encryptKeySecretRef": {"name": "hls-key", "key": "key"}})
    marks: dict[str, float] = {}
    run = record(tmp_path, spec, _stop_after(8, marks), env={"HLS_ENCRYPT_KEY": KEY_HEX})
    playlist = _single_file(run)
    assert playlist.name == "class.m3u8"
    text = playlist.read_text()
    assert f'#EXT-X-KEY:METHOD=AES-128,URI="{AUTH_URL}"' in text and "#EXT-X-ENDLIST" in text
    segments = [line for line in text.splitlines() if line.endswith(".ts")]
    assert len(segments) >= 2, text
    key_file = tmp_path / "enc.key"
    key_file.write_bytes(bytes.fromhex(KEY_HEX))
    local = playlist.with_name("local.m3u8")
    local.write_text(text.replace(AUTH_URL, key_file.as_uri().replace("file://", "")))
    options = {"allowed_extensions": "ALL", "protocol_whitelist": "file,crypto,data"}
    m = read_media(local, options)
    assert (m.width, m.height) == (640, 360)
    assert abs(sum(f[0] for f in [(m.frames[-1][0] - m.frames[0][0], 0, 0)]) - (marks["stop"] - marks["start"])) < 1.0
    assert abs(dominant_hz(m.audio, m.rate) - TONE_HZ) < 5
    # without the key: the segments are not MPEG-TS
    for name in segments:
        with pytest.raises(av.FFmpegError), av.open(str(playlist.with_name(name)), format="mpegts") as c:
            assert not list(c.decode(video=0))


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1:{port}/", "is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "is a link-local address"),
    ("http://10.0.0.1/", "is a private address"),
    ("http://private.capstan.test/", "resolves to a private address"),
])
def test_a_refused_record_url_fails_at_once_saying_why(tmp_path: Path, url: str, why: str) -> None:
    loopback = PageServer("127.0.0.1")  # would answer, were it asked
    try:
        run = record(tmp_path, spec_for(url.format(port=loopback.server.server_address[1])), timeout=30)
    finally:
        loopback.close()
    assert run.code == EXIT_TASK_REFUSED
    result = run.worker.latest("result")
    assert result["errorCode"] == "InvalidRecordUrl" and why in result["errorMessage"], result
    assert result["errorMessage"].startswith("spec.recordUrl refused")
    assert run.took < 5 and not loopback.requests


def test_a_redirect_to_a_refused_address_is_not_followed(tmp_path: Path, page: PageServer) -> None:
    loopback = PageServer("127.0.0.1")
    try:
        target = f"http://127.0.0.1:{loopback.server.server_address[1]}/"
        run = record(tmp_path, spec_for(f"{page.url}redirect?to={target}"), timeout=60)
    finally:
        loopback.close()
    assert run.code == EXIT_TASK_REFUSED
    assert "loopback" in run.worker.latest("result")["errorMessage"]
    assert not loopback.requests


def test_a_page_fetching_the_metadata_address_records_on_while_the_fetch_is_refused(
        tmp_path: Path, page: PageServer) -> None:
    marks: dict[str, float] = {}
    probe = "http://169.254.169.254/latest/meta-data/"
    run = record(tmp_path, spec_for(f"{page.url}?probe={probe}"), _stop_after(4, marks))
    m = read_media(_single_file(run))
    assert abs(m.duration - (marks["stop"] - marks["start"])) < DURATION_SLACK, (m.duration, marks)
    refused = [r for r in run.session.guard.recent if "169.254.169.254" in r.target]
    assert refused and "link-local" in refused[-1].reason
    assert run.worker.latest("refusedRequests") >= 4


def _renderers_of(profile: Path) -> list[int]:
    """Renderer processes of the browser whose profile is ``profile`` (walking up the parents)."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            procs[int(entry.name)] = (ppid, cmd)
    found = []
    for pid, (ppid, cmd) in procs.items():
        if "--type=renderer" not in cmd:
            continue
        parent = ppid
        for _ in range(5):
            if parent not in procs:
                break
            if f"--user-data-dir={profile}" in procs[parent][1]:
                found.append(pid)
                break
            parent = procs[parent][0]
    return found


def test_a_crashed_renderer_is_reloaded_once_then_the_task_fails_keeping_the_recording(
        tmp_path: Path, page: PageServer) -> None:
    import os
    import signal

    profile = tmp_path / "work" / "panorama" / "profile"

    def crash(w: Any) -> None:
        for pid in _renderers_of(profile):
            os.kill(pid, signal.SIGKILL)

    def script(w: Any) -> None:
        recording(w)
        time.sleep(3)
        crash(w)
        wait_report(w, lambda r: "crashed; reloading" in str(r.get("message")))
        time.sleep(3)
        crash(w)

    run = record(tmp_path, spec_for(page.url), script)
    assert run.code == EXIT_TASK_REFUSED
    result = run.worker.latest("result")
    assert result["errorCode"] == "PageCrashed" and "crashed again" in result["errorMessage"]
    m = read_media(run.file())  # what was recorded is stored all the same
    assert m.duration > 5 and page.requests.count("/") == 2


def test_a_page_that_eats_memory_fails_with_a_clear_message(tmp_path: Path, page: PageServer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPSTAN_PANORAMA_JS_HEAP_MB", "64")
    run = record(tmp_path, spec_for(page.url + "?eat=2"), timeout=120)
    assert run.code == EXIT_TASK_REFUSED
    assert run.worker.latest("result")["errorCode"] == "PageCrashed"
    assert run.took < 60
    assert read_media(run.file()).duration > 1


def test_a_hung_page_fails_within_bounded_time(tmp_path: Path, page: PageServer) -> None:
    run = record(tmp_path, spec_for(page.url + "?hang=2"), timeout=150)
    assert run.code == EXIT_TASK_REFUSED
    result = run.worker.latest("result")
    assert result["errorCode"] == "PageHung" and "stopped answering" in result["errorMessage"]
    assert run.took < 90
    assert run.file().exists()


def test_max_duration_limit_ends_the_recording_by_itself(tmp_path: Path, page: PageServer) -> None:
    run = record(tmp_path, spec_for(page.url, maxDurationLimit=4), timeout=90)
    m = read_media(_single_file(run))
    assert abs(m.duration - 4) < TOLERANCE, m.duration
    assert "maxDurationLimit of 4 s reached" in run.worker.latest("message")
    assert not run.worker.latest("result")
