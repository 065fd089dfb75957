"""Pure parts of the web recorder, without I/O: its clock, file naming, the proxy's request
handling, the browser's switches, HLS AES-128 and the playlist's key line."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from capstan.media import playlist
from capstan.media.pipeline.hls import HlsEncryption
from capstan.panorama import output
from capstan.panorama.browser import chromium_args
from capstan.panorama.guard import checked_url, describe_target, origin_form, parse_request_head
from capstan.panorama.stage import pulse_command, xvfb_command
from capstan.panorama.timeline import RecordingClock


def test_nothing_before_the_start_is_placed_and_pauses_are_cut_out() -> None:
    clock = RecordingClock()
    assert clock.place(5.0) is None  # not started
    clock.start(10.0)
    assert clock.place(9.9) is None and clock.place(10.0) == 10.0
    clock.pause(12.0)
    assert clock.place(12.5) is None  # paused, not resumed yet
    clock.resume(15.0)
    assert clock.place(14.9) is None and clock.place(15.0) == 12.0 and clock.place(16.0) == 13.0
    assert clock.paused_seconds(20.0) == 3.0 and clock.recorded_seconds(20.0) == 7.0
    clock.end(20.0)
    assert clock.place(20.0) is None and clock.recorded_seconds(30.0) == 7.0


def test_a_pause_before_the_start_costs_nothing_and_repeats_are_ignored() -> None:
    clock = RecordingClock()
    assert clock.pause(1.0) and not clock.pause(2.0)
    assert clock.resume(3.0) and not clock.resume(4.0)
    clock.start(5.0)
    assert clock.place(6.0) == 6.0 and clock.paused_seconds(10.0) == 0.0
    assert clock.start(7.0) is False


def test_started_while_paused_records_from_the_resume() -> None:
    clock = RecordingClock()
    clock.pause(1.0)
    clock.start(2.0)
    assert clock.place(2.5) is None
    clock.resume(4.0)
    assert clock.place(4.0) == 2.0 and clock.recorded_seconds(5.0) == 1.0


def test_target_dir_and_name_follow_seed_003() -> None:
    assert output.target_dir(None, "task-1") == "task-1"
    assert output.target_dir("11234/", "task-1") == "11234"
    assert output.target_dir("/a//b/./", "t") == "a/b"
    with pytest.raises(ValueError):
        output.target_dir("a/../b", "t")
    assert output.file_name(None, "mp4", 1621406865789) == "1621406865789.mp4"
    assert output.file_name("record-file-name.mp4", "mp4", 1) == "record-file-name.mp4"
    assert output.file_name("class", "hls", 1) == "class.m3u8"
    assert output.file_name("class.mp4", "hls", 1) == "class.m3u8"
    assert output.segment_stem("class.m3u8", "t") == "class" and output.segment_stem(None, "t") == "t"


def test_file_urls_use_the_domain_then_the_public_base() -> None:
    assert output.file_url("d/a b.mp4", domain="abc.example", public_base_url=None) == "https://abc.example/d/a%20b.mp4"
    assert output.file_url("d/x.mp4", domain="http://cdn.example/", public_base_url="https://p") == \
        "http://cdn.example/d/x.mp4"
    assert output.file_url("d/x.mp4", domain=None, public_base_url="https://p/") == "https://p/d/x.mp4"
    assert output.file_url("d/x.mp4", domain=None, public_base_url=None) is None


def test_web_names_give_segments_before_the_final_playlist_name() -> None:
    names = output.WebNames("class")
    assert names.segment(datetime(2021, 5, 19, 6, 47, 45, 789000, tzinfo=UTC)) == "class_1621406865789.ts"
    assert names.playlist == "class.m3u8"
    names.final = "1621406899000.m3u8"
    assert names.playlist == "1621406899000.m3u8"


def test_the_proxy_judges_the_url_a_request_names() -> None:
    method, target, version, headers = parse_request_head(
        b"GET http://a.example:8080/p?q=1 HTTP/1.1\r\nHost: a.example:8080\r\nProxy-Connection: keep-alive")
    assert (method, target, version) == ("GET", "http://a.example:8080/p?q=1", "HTTP/1.1")
    assert checked_url(method, target) == target
    assert checked_url("CONNECT", "169.254.169.254:443") == "https://169.254.169.254:443/"
    assert checked_url("CONNECT", "[fd00:ec2::254]:443") == "https://[fd00:ec2::254]:443/"
    head = origin_form(method, target, version, headers)
    assert head.startswith(b"GET /p?q=1 HTTP/1.1\r\n") and b"Proxy-Connection" not in head
    assert head.endswith(b"Host: a.example:8080\r\nConnection: close\r\n\r\n")
    assert describe_target("GET", "http://a/x?secret=1") == "http://a/x"
    for bad in (("GET", "/relative"), ("CONNECT", "nohost"), ("GET", "ftp://a/")):
        with pytest.raises(ValueError):
            checked_url(*bad)
    with pytest.raises(ValueError):
        parse_request_head(b"garbage")


def test_the_browser_is_a_kiosk_behind_the_proxy_with_autoplay() -> None:
    args = chromium_args((1280, 720), "http://127.0.0.1:5", sandbox=True)
    for wanted in ("--kiosk", "--window-size=1280,720", "--autoplay-policy=no-user-gesture-required",
                   "--proxy-server=http://127.0.0.1:5", "--proxy-bypass-list=<-loopback>",
                   "--force-webrtc-ip-handling-policy=disable_non_proxied_udp", "--disable-infobars"):
        assert wanted in args
    assert "--no-sandbox" not in args and "--no-sandbox" in chromium_args((2, 2), "p", sandbox=False)
    assert sum(a.startswith("--disable-features=") for a in args) == 1  # Chromium keeps only the last


def test_the_stage_commands() -> None:
    assert xvfb_command(99, (640, 360))[:5] == ["Xvfb", ":99", "-screen", "0", "640x360x24"]
    cmd = " ".join(pulse_command(__import__("pathlib").Path("/w/pulse")))
    assert "module-null-sink sink_name=capstan" in cmd and "socket=/w/pulse/native" in cmd and " -n " in cmd


def test_hls_aes_128_is_cbc_with_pkcs7_and_the_sequence_as_iv() -> None:
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = HlsEncryption.from_hex("21834cca41778803e1afba3f41e70c90", "https://k/enc.key")
    data = bytes(range(256)) * 7 + b"tail"
    sealed = enc.encrypt(data, 5)
    assert len(sealed) % 16 == 0 and len(sealed) > len(data)
    decryptor = Cipher(algorithms.AES(enc.key), modes.CBC((5).to_bytes(16, "big"))).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    assert unpadder.update(decryptor.update(sealed) + decryptor.finalize()) + unpadder.finalize() == data
    assert enc.encrypt(data, 6) != sealed
    for bad in ("abc", "zz" * 16, "00" * 15):
        with pytest.raises(ValueError):
            HlsEncryption.from_hex(bad, "https://k")
    assert "21834" not in repr(enc)


def test_the_playlist_names_the_key_uri_once() -> None:
    text = playlist.render(playlist.Playlist(entries=[playlist.PlaylistEntry(6.0, "a_1.ts")], key_uri="https://k/e.key",
                                             ended=True))
    lines = text.splitlines()
    assert lines.count('#EXT-X-KEY:METHOD=AES-128,URI="https://k/e.key"') == 1
    assert lines.index('#EXT-X-KEY:METHOD=AES-128,URI="https://k/e.key"') < lines.index("a_1.ts")
    assert "#EXT-X-KEY" not in playlist.render(playlist.Playlist(entries=[playlist.PlaylistEntry(1.0, "b.ts")]))


def _result(url: str, task: str = "task-1") -> object:
    from capstan.api.common import TaskEvent

    return TaskEvent.model_validate({"seq": 1, "type": 0, "ts": 0, "payload": {
        "TaskID": task, "Status": "finished", "CreateTime": 1, "StartTime": 2, "StopTime": 3, "FinishTime": 4,
        "Result": {"Videos": [{"Filename": "1.mp4", "FileSize": 10, "FileDuration": 9.5, "FileURL": url}]}}})


def test_the_operator_signs_a_web_result_only_for_the_tasks_own_files() -> None:
    from capstan.api import WEB_RECORDING
    from capstan.operator.outbox import refusal

    storage = {"endpoint": "minio:9000", "bucket": "b", "publicBaseUrl": "https://cdn.example"}
    spec = {"output": {"storage": storage, "targetDir": "11234/", "domain": "abc.example"}}
    status = {"taskId": "task-1"}
    assert refusal(WEB_RECORDING, spec, status, _result("https://abc.example/11234/1.mp4")) is None  # type: ignore[arg-type]
    assert refusal(WEB_RECORDING, {"output": {"storage": storage}}, status,
                   _result("http://minio:9000/b/task-1/1.mp4?X-Amz-Signature=x")) is None  # type: ignore[arg-type]
    for bad in (_result("https://evil.example/11234/1.mp4"), _result("https://abc.example/other/1.mp4"),
                _result("https://abc.example/11234/1.mp4", task="task-2")):
        assert refusal(WEB_RECORDING, spec, status, bad) is not None  # type: ignore[arg-type]


def test_the_worker_tells_annotation_changes_after_the_first_reading() -> None:
    from pathlib import Path

    from capstan.worker.base import Worker, WorkerContext

    ctx = WorkerContext("webrecordings", "w", "ns", "t", 1, "p", Path("/tmp"))
    worker = Worker(ctx, resource=None)  # type: ignore[arg-type]
    seen: list[dict[str, str]] = []
    worker.on_annotations_change(seen.append)
    obj = {"metadata": {"generation": 1, "annotations": {"a": "1"}}, "spec": {}}
    worker._observe(obj)
    worker._observe(obj)
    assert seen == []  # the first reading and an unchanged one are not changes
    worker._observe({"metadata": {"generation": 1, "annotations": {"a": "1", "capstan.dev/refresh": "x"}}, "spec": {}})
    assert seen == [{"a": "1", "capstan.dev/refresh": "x"}]


def test_leftover_segments_of_earlier_attempts_are_found_in_time_order(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    for name in ("class_2000.ts", "class_1000.ts", "ha1_class_3000.ts", "class_2500.ts.part", "other_1.ts",
                 "class_4000.ts", "empty_1.ts"):
        (d / name).write_bytes(b"x" if name != "empty_1.ts" else b"")
    found = output.leftover_segments(d, "class", exclude={"class_4000.ts"})
    assert [(p.path.name, p.start, p.ha) for p in found] == [
        ("class_1000.ts", 1.0, 0), ("class_2000.ts", 2.0, 0), ("class_2500.ts.part", 2.5, 0),
        ("ha1_class_3000.ts", 3.0, 1)]
    assert output.leftover_segments(d / "missing", "class", set()) == []
    assert output.WebNames("class", ha=2).segment(datetime(2021, 1, 1, tzinfo=UTC)).startswith("ha2_class_")


def test_the_browsers_own_services_are_refused_by_name_and_the_list_can_be_replaced() -> None:
    from capstan.panorama.guard import BROWSER_SERVICE_HOSTS, browser_service_hosts, target_host

    assert browser_service_hosts({}) == frozenset(BROWSER_SERVICE_HOSTS)
    assert "accounts.google.com" in browser_service_hosts({})
    assert browser_service_hosts({"CAPSTAN_PANORAMA_DENY_HOSTS": ""}) == frozenset()
    assert browser_service_hosts({"CAPSTAN_PANORAMA_DENY_HOSTS": "a.example, B.example."}) == {"a.example",
                                                                                                "b.example"}
    assert target_host("https://Update.GoogleAPIs.com.:443/") == "update.googleapis.com"


def test_a_discontinuity_is_rendered_and_read_back() -> None:
    text = playlist.render(playlist.Playlist(entries=[playlist.PlaylistEntry(6.0, "a_1.ts"),
                                                      playlist.PlaylistEntry(4.0, "ha1_a_2.ts", True)], ended=True))
    lines = text.splitlines()
    assert lines[lines.index("ha1_a_2.ts") - 2] == "#EXT-X-DISCONTINUITY"
    assert [e.discontinuity for e in playlist.parse(text).entries] == [False, True]


def test_a_sink_continues_the_playlist_of_an_earlier_writer(tmp_path: object) -> None:
    from pathlib import Path

    from capstan.media.pipeline.hls import HlsOutput, HlsSink
    from capstan.media.timeline import CaptureClock

    clock = CaptureClock()
    clock.ticks(100.0)
    sink = HlsSink(output.WebNames("class", ha=1), HlsOutput(Path(str(tmp_path)), key_prefix="d"), clock)
    sink.continue_after([playlist.PlaylistEntry(6.0, "class_1.ts"), playlist.PlaylistEntry(2.5, "class_2.ts")])
    assert "#EXT-X-DISCONTINUITY" not in sink.render_playlist(ended=False)  # only before this writer's first
    assert sink.discontinuities == {2} and [s.key for s in sink.segments] == ["d/class_1.ts", "d/class_2.ts"]
