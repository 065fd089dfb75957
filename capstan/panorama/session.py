"""One web recording (seed 003): a page on its own stage, captured into the shared pipeline.

    Stage (Xvfb + PulseAudio null sink) ─ Chromium (Playwright) ─ every request → EgressGuard (URL policy)
      ScreenSource (x11grab) ┐
                             ├→ RecordingClock (start, pauses cut out) → HlsWriter (Scale → H.264, AAC → TS
      SoundSource (parec)    ┘                                            segments) → Uploader (hls)
                                                                        → MP4 of the segments → Uploader (mp4)

The control loop runs in the thread that drives Playwright: it applies spec changes (``paused``,
``refreshGeneration``), waits for ``window.startRecord()`` with ``manualStart`` (bounded by
``manualStartTimeout``), stops at ``stop``/deletion/SIGTERM or ``maxDurationLimit``, and watches for
a crashed or hung renderer (reloaded once; the second time the task fails). Whatever ends the
recording, what was recorded is written and stored, and the browser, Xvfb and PulseAudio are ended.
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from capstan.api.common import Phase
from capstan.api.webrecording import Muxer, WebRecordingSpec
from capstan.media import playlist
from capstan.media.pipeline.encoding import AudioEncoding, VideoEncoding
from capstan.media.pipeline.hls import HlsEncryption, HlsOutput
from capstan.net.urlpolicy import Resolver, UrlPolicy, UrlRefused, Use
from capstan.operator.phases import EXIT_TASK_REFUSED
from capstan.panorama import output
from capstan.panorama.browser import Browser
from capstan.panorama.capture import SOUND_CHANNELS, SOUND_RATE, ScreenSource, SoundSource
from capstan.panorama.guard import EgressGuard, browser_service_hosts, describe_target
from capstan.panorama.stage import Stage
from capstan.panorama.timeline import RecordingClock
from capstan.recorder.hls import HlsWriter
from capstan.storage.uploader import Uploader
from capstan.worker.base import Worker, now

log = logging.getLogger("capstan.panorama")

FPS = int(os.environ.get("CAPSTAN_PANORAMA_FPS", "30"))
SEGMENT_SECONDS = float(os.environ.get("CAPSTAN_PANORAMA_SEGMENT_SECONDS", "6"))
# H.264 bits per pixel and second: 1280x720@30 gets 2 Mbit/s (page content is mostly still).
BITS_PER_PIXEL_SECOND = 2_000_000 / (1280 * 720 * 30)
AUDIO = AudioEncoding(sample_rate=SOUND_RATE, channels=SOUND_CHANNELS, bitrate=128000)
HEALTH_SECONDS = 5.0  # how often the renderer must answer
HUNG_SECONDS = 10.0  # a renderer that does not answer this long is hung
RELOAD_TIMEOUT_SECONDS = 15.0
STATUS_SECONDS = 2.0
UPLOAD_TIMEOUT_SECONDS = 300.0
ENCODE_QUEUE = 256  # pictures and 20 ms sound chunks waiting for the encoder (about 2 s of both)
MP4_CONTENT_TYPE = "video/mp4"
REFRESH_ANNOTATION = "capstan.dev/refresh"
RESULT_EVENT = 0  # the kind's result body (capstan.operator.outbox.WebRecordingResult)
FAILURES = frozenset({"InvalidRecordUrl", "InvalidParameter", "PageLoadFailed", "StartTimeout", "PageCrashed",
                      "PageHung", "RecordingFailed"})


class Refused(Exception):
    """The task cannot be done as given; ``code`` and the message go to status.result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Ending:
    reason: str
    error_code: str | None = None  # None: a normal end


def video_encoding(size: tuple[int, int], fps: int) -> VideoEncoding:
    bitrate = max(300_000, round(BITS_PER_PIXEL_SECOND * size[0] * size[1] * fps))
    return VideoEncoding(bitrate=bitrate, gop_seconds=2, size=size, max_fps=fps)


def encryption_from(spec: WebRecordingSpec, env: dict[str, str]) -> HlsEncryption | None:
    """The HLS key (HLS_ENCRYPT_KEY, from output.encryptKeySecretRef) with output.authUrl; Refused if bad."""
    out = spec.output
    if out.encrypt_key_secret_ref is None:
        return None
    if out.muxer != Muxer.hls or not out.auth_url:
        raise Refused("InvalidParameter", "spec.output.encryptKeySecretRef needs muxer hls and authUrl")
    key_hex = env.get("HLS_ENCRYPT_KEY", "")
    try:
        return HlsEncryption.from_hex(key_hex, out.auth_url)
    except ValueError as exc:
        raise Refused("InvalidParameter", f"spec.output.encryptKeySecretRef: {exc}") from None


class WebRecordingSession:
    def __init__(self, worker: Worker, spec: WebRecordingSpec, *, uploader: Uploader | None, s3: Any = None,
                 bucket: str = "", policy: UrlPolicy | None = None, public_base_url: str | None = None,
                 env: dict[str, str] | None = None, resolve: Resolver | None = None) -> None:
        self.resolve = resolve  # None: the system's DNS (tests give their own: nothing leaves the machine)
        self.worker, self.spec, self.uploader, self.s3, self.bucket = worker, spec, uploader, s3, bucket
        self.policy = policy or UrlPolicy.from_env()
        self.public_base_url = public_base_url
        self.env = dict(os.environ if env is None else env)
        self.ctx = worker.ctx
        self.size = (spec.width, spec.height)
        self.work = self.ctx.work_dir / "panorama"
        self.clock = RecordingClock()
        self.encoding: queue.Queue[tuple[Any, float] | None] = queue.Queue(ENCODE_QUEUE)
        self.encoder_thread: threading.Thread | None = None
        self.encode_error: BaseException | None = None
        self.dropped = 0
        self.writer: HlsWriter | None = None
        self.stage: Stage | None = None
        self.guard: EgressGuard | None = None
        self.browser: Browser | None = None
        self.screen: ScreenSource | None = None
        self.sound: SoundSource | None = None
        self.changes: queue.Queue[dict[str, Any]] = queue.Queue()
        self.refreshed = spec.refresh_generation
        self.reloads = 0
        self.started_wall: float | None = None
        self.cancel_seen: float | None = None
        self.target_dir = output.target_dir(spec.output.target_dir, self.ctx.task_id or self.ctx.name)
        self._stem = output.segment_stem(spec.output.target_name, self.ctx.task_id or self.ctx.name)
        self.files: list[dict[str, Any]] = []
        self._last_status = 0.0
        worker.on_spec_change(self.changes.put)
        worker.on_annotations_change(self._annotations_changed)
        self.refresh_mark = ((getattr(worker, "annotations", None) or {}).get(REFRESH_ANNOTATION))
        self.refresh_asked = threading.Event()

    # --- the steps ---------------------------------------------------------------------------

    def run(self) -> int:
        try:
            encryption = encryption_from(self.spec, self.env)
            self._check_record_url()
            self._open(encryption)
            ending = self._record()
            self.clock.end(self.cancel_seen or time.time())
        except Refused as exc:
            self._teardown()
            return self._refused(exc.code, str(exc))
        except BaseException as exc:
            log.exception("web recording failed")
            self._teardown()
            if self.writer is not None and self.writer.segments:
                self._finish(Ending(f"the recording failed: {exc}", "RecordingFailed"))
            raise
        self._teardown()
        return self._finish(ending)

    def _check_record_url(self) -> None:
        try:
            self.policy.check(self.spec.record_url, Use.page, self.resolve)
        except UrlRefused as exc:
            raise Refused("InvalidRecordUrl", f"spec.recordUrl refused: {exc}") from None

    def _open(self, encryption: HlsEncryption | None) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        hls = self.spec.output.muxer == Muxer.hls
        names = output.WebNames(self._stem, ha=self.ctx.attempt - 1)
        out = HlsOutput(self.work / "segments", self.uploader if hls else None, segment_seconds=SEGMENT_SECONDS,
                        key_prefix=self.target_dir, live_playlist=bool(self.spec.output.target_name),
                        keep_segments=not hls, encryption=encryption)
        self.writer = HlsWriter(names, out, video=video_encoding(self.size, FPS), audio=AUDIO)
        if hls and self.ctx.attempt > 1:
            self._continue_playlist(out.work_dir / names.playlist)
        self.stage = Stage(self.work, self.size).open()
        self.guard = EgressGuard(self.policy, resolve=self.resolve, deny_hosts=browser_service_hosts(self.env)).start()
        self.browser = Browser(self.work / "profile", self.size, self.stage.env, self.guard.proxy_url)
        self.browser.open(on_start=self._page_started)
        self.screen = ScreenSource(self.stage.env["DISPLAY"], self.size, FPS)
        self.sound = SoundSource(self.stage.monitor, self.stage.env)
        self.encoder_thread = threading.Thread(target=self._encode, name="encode", daemon=True)
        self.encoder_thread.start()
        self.screen.start(self._on_frame)
        self.sound.start(self._on_frame)
        try:
            status, final_url = self.browser.goto(self.spec.record_url)
        except Exception as exc:  # noqa: BLE001 - a page that does not load is the task's failure
            raise Refused("PageLoadFailed", f"spec.recordUrl did not load: {_first_line(exc)}") from None
        if status == 403:  # the guard's answer when it refused the document (or a redirect hop to it)
            final = urlsplit(final_url)
            targets = {describe_target("GET", final_url), f"{final.hostname}:{final.port or 443}"}
            for refusal in reversed(self.guard.recent):
                if refusal.target in targets:
                    hop = "" if final_url == self.spec.record_url else f" (redirected to {refusal.target})"
                    raise Refused("InvalidRecordUrl", f"spec.recordUrl refused{hop}: {refusal.reason}")
        if status is not None and status >= 400:
            raise Refused("PageLoadFailed", f"spec.recordUrl answered HTTP {status}")

    def _page_started(self, at: float) -> None:
        if self.spec.manual_start:
            self._start(at)

    def _start(self, at: float) -> None:
        if self.clock.start(at):
            self.started_wall = at
            self.worker.report(phase=Phase.paused.value if self.clock.paused else Phase.recording.value,
                               startTime=now(), workerPod=self.ctx.pod_name,
                               message=f"attempt {self.ctx.attempt}: recording {self.spec.record_url} "
                                       f"at {self.size[0]}x{self.size[1]}")

    def _on_frame(self, frame: Any, captured: float) -> None:
        """From the capture threads: placed on the recording's clock and queued for the encoding
        thread, so a slow encode never holds up the next grab (frames keep their grab times)."""
        if (stop_at := self.worker.stop_requested_at) is not None:
            # the recording ends where the stop was asked for, not where the loop (a 0.25 s browser
            # wait, longer on a loaded machine) got round to it; frames grabbed later are left out
            self.clock.end(stop_at)
        placed = self.clock.place(captured)
        if placed is None:
            return
        try:
            self.encoding.put_nowait((frame, placed))
        except queue.Full:
            self.dropped += 1  # the encoder is more than ENCODE_QUEUE items behind

    def _encode(self) -> None:
        writer = self.writer
        assert writer is not None
        while (item := self.encoding.get()) is not None:
            try:
                writer.write(*item)
            except Exception as exc:  # noqa: BLE001 - ends the recording (the loop sees it)
                log.exception("encoding failed")
                self.encode_error = exc
                return

    def _stop_encoding(self) -> None:
        """After the capture stopped: what is queued is encoded, then the thread ends."""
        if self.encoder_thread is not None and self.encoder_thread.is_alive():
            self.encoding.put(None)
            self.encoder_thread.join(60)

    def _record(self) -> Ending:
        browser, spec = self.browser, self.spec
        assert browser is not None
        if spec.paused:
            self.clock.pause(time.time())
        if spec.manual_start:
            self.worker.report(phase=Phase.idle.value, workerPod=self.ctx.pod_name,
                               message=f"page loaded; waiting up to {spec.manual_start_timeout} s for "
                                       "window.startRecord()")
        else:
            self._start(time.time())
        opened = time.time()
        last_health = time.monotonic()
        while True:
            browser.wait(0.25)
            now_wall = time.time()
            if self.worker.stop_event.is_set():
                self.cancel_seen = self.worker.stop_requested_at or now_wall
                return Ending(self.worker.stop_reason or "stopped")
            self._apply_changes(now_wall)
            if self.started_wall is None:
                if now_wall - opened > spec.manual_start_timeout:
                    return Ending(f"the page did not call window.startRecord() within {spec.manual_start_timeout} s "
                                  "(manualStart)", "StartTimeout")
            elif now_wall - self.started_wall >= spec.max_duration_limit:
                return Ending(f"maxDurationLimit of {spec.max_duration_limit} s reached")
            problem = self._broken()
            if problem is not None:
                return Ending(problem, "RecordingFailed")
            if browser.crashes:
                if self.reloads >= 1:
                    return Ending("the page's renderer crashed again after a reload", "PageCrashed")
                self._reload("the renderer crashed")
                browser.crashes = 0
            if time.monotonic() - last_health >= HEALTH_SECONDS:
                if not self._answers() and not browser.crashes:  # a crash is handled as one, next round
                    if self.reloads >= 1:
                        return Ending(f"the page stopped answering for {HUNG_SECONDS:g} s again after a reload",
                                      "PageHung")
                    self._reload("the page stopped answering")
                last_health = time.monotonic()
            self._report_progress()

    def _annotations_changed(self, annotations: dict[str, str]) -> None:
        """Refresh by annotation (``kubectl annotate wrec NAME capstan.dev/refresh=$(date +%s) --overwrite``):
        any new value reloads the page, as a refreshGeneration bump does."""
        mark = annotations.get(REFRESH_ANNOTATION)
        if mark is not None and mark != self.refresh_mark:
            self.refresh_mark = mark
            self.refresh_asked.set()

    def _apply_changes(self, at: float) -> None:
        while True:
            try:
                spec = self.changes.get_nowait()
            except queue.Empty:
                break
            paused = bool(spec.get("paused"))
            if paused and self.clock.pause(at):
                self.worker.report(phase=Phase.paused.value, pauseTime=now(), message="paused")
            elif not paused and self.clock.resume(at):
                phase = Phase.recording if self.started_wall is not None else Phase.idle
                self.worker.report(phase=phase.value, message="resumed into the same file")
            generation = int(spec.get("refreshGeneration") or 0)
            if generation > self.refreshed:
                self.refreshed = generation
                self._refresh(f"refreshGeneration {generation}")
        if self.refresh_asked.is_set():
            self.refresh_asked.clear()
            self._refresh(f"annotation {REFRESH_ANNOTATION}={self.refresh_mark}")

    def _refresh(self, why: str) -> None:
        assert self.browser is not None
        log.info("refreshing the page (%s)", why)
        try:
            self.browser.reload()
        except Exception as exc:  # noqa: BLE001 - the health check decides what a bad reload means
            log.warning("refresh: %s", _first_line(exc))
        self.worker.report(message=f"page refreshed ({why})")

    def _reload(self, why: str) -> None:
        assert self.browser is not None
        self.reloads += 1
        log.warning("%s: reloading the page", why)
        self.worker.report(message=f"{why}; reloading the page")
        try:  # opened anew (a crashed or hung page's own reload may not get through)
            self.browser.renew_page()
            self.browser.goto(self.spec.record_url, timeout=RELOAD_TIMEOUT_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the next health check tells
            log.warning("reload failed: %s", _first_line(exc))

    def _answers(self) -> bool:
        assert self.browser is not None
        try:
            self.browser.page.wait_for_function("() => true", timeout=HUNG_SECONDS * 1000)
            return True
        except Exception as exc:  # noqa: BLE001 - timeout or a dead page
            if "crashed" in str(exc).lower():  # the crash event may come a moment later: a crash it is
                self.browser.crashes = max(self.browser.crashes, 1)
                return True
            log.warning("the page does not answer: %s", _first_line(exc))
            return False

    def _broken(self) -> str | None:
        if self.stage is not None and (dead := self.stage.alive()):
            return dead
        if self.screen is not None and self.screen.error is not None:
            return f"screen capture failed: {self.screen.error}"
        if self.sound is not None and self.sound.error is not None:
            return f"sound capture failed: {self.sound.error}"
        if self.encode_error is not None:
            return f"encoding failed: {self.encode_error}"
        if self.browser is not None and self.browser.exited:
            return "the browser exited"
        if self.browser is not None and self.browser.closed_by_page and not self.browser.crashes:
            return "the page closed its window"
        return None

    def _report_progress(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_status < STATUS_SECONDS:
            return
        self._last_status = time.monotonic()
        refused = self.guard.refused if self.guard is not None else 0
        fields: dict[str, Any] = {"recordedSeconds": round(self.clock.recorded_seconds(time.time()), 1),
                                  "pausedSeconds": round(self.clock.paused_seconds(time.time()), 1),
                                  "refusedRequests": refused, "droppedFrames": self.dropped}
        if self.guard is not None and self.guard.recent:
            last = self.guard.recent[-1]
            fields["lastRefusedRequest"] = f"{last.target}: {last.reason}"[:500]
        self.worker.report(**fields)

    # --- the end -----------------------------------------------------------------------------

    def _teardown(self) -> None:
        """Capture, browser, proxy and stage end, whatever happened (each step on its own)."""
        for step in (self._stop_capture, self._stop_encoding, self._close_browser, self._stop_guard,
                     self._close_stage):
            try:
                step()
            except Exception:  # noqa: BLE001
                log.exception("cleaning up")

    def _stop_capture(self) -> None:
        for source in (self.screen, self.sound):
            if source is not None:
                source.stop()

    def _close_browser(self) -> None:
        if self.browser is not None:
            self.browser.close()

    def _stop_guard(self) -> None:
        if self.guard is not None:
            self.guard.stop()

    def _close_stage(self) -> None:
        if self.stage is not None:
            self.stage.close()

    def _finish(self, ending: Ending, stop_ms: int | None = None) -> int:
        stop_ms = stop_ms or round(time.time() * 1000)
        writer = self.writer
        muxer = self.spec.output.muxer
        name = output.file_name(self.spec.output.target_name, muxer, stop_ms)
        self.worker.report(phase=Phase.transcode.value, stopTime=now(), message=f"stopping: {ending.reason}")
        self._report_progress(force=True)
        segments = []
        if writer is not None:
            if muxer == Muxer.hls:
                writer.names.final = name  # type: ignore[attr-defined]
            segments = writer.close()
        recorded = bool(segments)
        if muxer == Muxer.mp4:
            ha = self.ctx.attempt - 1
            refs = [*self._leftovers({s.name for s in segments}),
                    *(output.RecordedSegment(Path(s.local_path or ""), s.start, ha) for s in segments)]
            if refs:  # an earlier attempt's segments first: nothing it recorded is lost
                path = self.work / name
                duration = output.write_mp4(sorted(refs, key=lambda r: (r.start, r.ha)), path)
                self._store(path, name, duration)
                recorded = True
        elif segments:
            self.files.append(self._file(name, sum(s.size for s in segments), sum(s.duration for s in segments)))
        self.worker.report(phase=Phase.upload.value, message=f"uploading ({ending.reason})")
        if self.uploader is not None and not self.uploader.flush(UPLOAD_TIMEOUT_SECONDS):
            message = f"{ending.reason}; the storage did not take every file within {UPLOAD_TIMEOUT_SECONDS:g} s"
            self.worker.report(files=self.files, message=message)
            return 1  # the spool stays: a failover attempt resumes its upload
        for f in self.files:
            f["status"] = "uploaded"
        result: dict[str, Any] = {}
        if ending.error_code is not None:
            result = {"errorCode": ending.error_code, "errorMessage": ending.reason}
        elif not recorded:
            result = {"errorCode": "NothingRecorded", "errorMessage": f"{ending.reason}; nothing was recorded"}
        fields: dict[str, Any] = {"files": self.files, "message": ending.reason}
        if result:
            fields["result"] = result
        self.worker.report(**fields)
        self._emit_result(result, stop_ms / 1000)
        return EXIT_TASK_REFUSED if ending.error_code is not None else 0

    def _emit_result(self, result: dict[str, Any], stopped: float | None) -> None:
        """The callback body: seed 003's Describe result, sent once the files are stored."""
        def seconds(value: float | None) -> int | None:
            return int(value) if value else None

        created = None
        stamp = (getattr(self.worker, "status_at_start", None) or {}).get("createTime")
        if stamp:
            created = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
        body: dict[str, Any] = {
            "TaskID": self.ctx.task_id, "Status": "failed" if result.get("errorCode") in FAILURES else "finished",
            "CreateTime": seconds(created), "StartTime": seconds(self.started_wall),
            "CancelTime": seconds(self.cancel_seen), "StopTime": seconds(stopped), "FinishTime": int(time.time()),
            "Result": {**({"ErrorCode": result["errorCode"], "ErrorMessage": result["errorMessage"][:4000]}
                          if result else {}),
                       "Videos": [{"Filename": f["fileName"].rsplit("/", 1)[-1], "FileSize": f["size"],
                                   "FileDuration": f["duration"], "FileURL": f["url"]} for f in self.files]},
        }
        self.worker.emit(RESULT_EVENT, body)

    def _continue_playlist(self, local: Path) -> None:
        """HLS after a failover: the segments earlier attempts stored head this attempt's playlist
        (from the local playlist they kept in the spool), then #EXT-X-DISCONTINUITY."""
        assert self.writer is not None
        try:
            earlier = playlist.parse(local.read_text()).entries
        except (OSError, ValueError) as exc:
            log.info("no earlier playlist to continue (%s)", exc)
            return
        self.writer.sink.continue_after(earlier)
        log.info("continuing the playlist after %d segments of earlier attempts", len(earlier))

    def _leftovers(self, exclude: set[str]) -> list[output.RecordedSegment]:
        if self.ctx.attempt <= 1:
            return []
        return output.leftover_segments(self.work / "segments", self._stem, exclude)

    def finish_leftovers(self) -> int:
        """A failover attempt of a recording that had already stopped (its worker died making or
        storing the file): the file is made from what the spool holds, nothing is recorded anew;
        HLS segments and the last playlist are still in the uploader's journal, which resumes."""
        stopped = str(self.worker.status_at_start.get("stopTime") or "")
        stop_ms = None
        if stopped:
            stop_ms = round(datetime.datetime.fromisoformat(stopped.replace("Z", "+00:00")).timestamp() * 1000)
        return self._finish(Ending(f"finished by attempt {self.ctx.attempt} from the spool"), stop_ms)

    def _store(self, path: Path, name: str, duration: float) -> None:
        key = f"{self.target_dir}/{name}"
        size = path.stat().st_size
        self.files.append(self._file(name, size, duration))
        if self.uploader is not None:
            self.uploader.put(path, key, MP4_CONTENT_TYPE)

    def _file(self, name: str, size: int, duration: float) -> dict[str, Any]:
        key = f"{self.target_dir}/{name}"
        url = output.file_url(key, domain=self.spec.output.domain, public_base_url=self.public_base_url)
        if url is None and self.s3 is not None:
            try:
                url = str(self.s3.presigned_get_object(self.bucket, key, expires=datetime.timedelta(days=7)))
            except Exception as exc:  # noqa: BLE001 - the file is still there; say where
                log.warning("no presigned URL for %s: %s", key, exc)
        return {"fileName": key, "trackType": "audio_video", "size": size, "duration": round(duration, 3),
                "url": url or key, "beginTimeStamp": round((self.started_wall or 0) * 1000), "status": "pending"}

    def _refused(self, code: str, message: str) -> int:
        log.error("%s", message)
        result = {"errorCode": code, "errorMessage": message}
        self.worker.report(result=result, message=message)
        self._emit_result(result, time.time())
        return EXIT_TASK_REFUSED


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]
