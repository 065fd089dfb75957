"""The LiveKit data plane out of Python: FFmpeg reads (and re-encodes), a Go publisher publishes.

For a push into a LiveKit room the pusher's Python process stays the controller (URL policy, probe,
start position, status.progress and Redis, loop, live reconnection with backoff, callbacks, phases)
and hands the media to two child processes (docs/streampush.md):

- ``ffmpeg [-ss POS] -i SOURCE -map 0:v:0 -c:v copy -bsf:v h264_mp4toannexb -f h264 pipe:V
  -map 0:a:0 -c:a libopus -f ogg pipe:A -progress pipe:1``: copies the video's access units as
  Annex B (an H.264 source without B-frames) or re-encodes them with libx264, and encodes the sound
  to Opus (60 ms packets, one an Ogg page);
- ``capstan-lkpublish`` (go/lkpublish, LiveKit's Go SDK on pion): joins the room with the worker's
  token as ``userId`` and publishes each access unit and Opus packet. A file's samples it paces
  itself on their media times (``-pace``; FFmpeg reads without ``-re``) and reports the position it
  has published; a live stream's FFmpeg reads with ``-re`` and its ``out_time`` is the position.

The pipes go from FFmpeg straight to the publisher; the controller holds their write ends too, so a
new FFmpeg run (a file's next loop, a live stream's reconnection) writes on where the last one
stopped, and closing them ends the publisher's push.

The URL policy holds as before: an http(s) file is fetched only from the address the policy checked
— FFmpeg reads a loopback relay (:class:`PinnedRelay`) that forwards each request to that address
with the URL's Host header and TLS name, never following a redirect — and an rtmp stream is opened
on the checked address. Keyframe requests are answered by the source's next keyframe: the publisher
counts them, nothing re-encodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import http.client
import http.server
import json
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capstan.media.pipeline.encoding import ONE_THREAD_PIXEL_RATE
from capstan.net.urlpolicy import Target
from capstan.pusher.httpfile import _Pinned
from capstan.pusher.source import READ_TIMEOUT, SourceInfo, check, pinned_rtmp

log = logging.getLogger("capstan.pusher")

# "go": LiveKit pass-through through FFmpeg + capstan-lkpublish; "python": the LiveKit Python SDK in
# this process (the path of sessions 1-5).
DATAPLANE = os.environ.get("CAPSTAN_PUSH_DATAPLANE", "go")
# "go" (the default): a re-encoded push into LiveKit (forced, B-frames, another codec) is encoded by
# FFmpeg's libx264 and published by capstan-lkpublish too, paced by it like a copied one: 0.31-0.33
# of a core against 0.35-0.36 for `ffmpeg -re` re-encoding alone and 0.40-0.42 for "python" (decoded
# by the pusher, encoded by the LiveKit Python SDK's VP8), bench/README.md.
REENCODE_DATAPLANE = os.environ.get("CAPSTAN_PUSH_REENCODE_DATAPLANE", "go")
# libx264 as bench/push.py's FFmpeg side, one thread up to 720p30 (capstan/media/pipeline/encoding.py),
# zerolatency: no lookahead, whose frames of delay would put the pictures behind the sound.
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", "2500k", "-bf", "0",
        "-pix_fmt", "yuv420p"]
# A file's copied push is paced by capstan-lkpublish on the media times, not by FFmpeg's -re, whose
# wait loop (FFmpeg 5.1: a 10 ms sleep and a pass over the streams) cost more than the copy itself:
# 0.8 CPU s against 0.3 for a 20 s file. FFmpeg then runs ahead of what is published by what the
# pipes hold, so the position comes from the publisher, and the pipes are kept small (the sound's
# 8 KiB: 1 s at 64 kbit/s) so that a push's end leaves little to play out.
END_OF_RUN = b"\x00\x00\x00\x01\x0b" + b"\x00\x00\x00\x01\x09\xf0"  # H.264 end of stream, then a delimiter
PIPE_BYTES = {"audio": 8192}
F_SETPIPE_SZ = 1031
# Opus packets of 60 ms, not 20: each packet is a send of its own through SRTP and the UDP socket,
# which was most of the publisher's CPU (50 audio sends a second against 30 pictures); a file's
# push has no use for the lower latency of short frames.
OPUS_FRAME_MS = int(os.environ.get("CAPSTAN_PUSH_OPUS_FRAME_MS", "60"))
LIVE_RW_TIMEOUT_US = 3_000_000  # a live stream silent this long has dropped (as source.LIVE_READ_TIMEOUT)
STOP_SECONDS = 5.0


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL it when the pusher dies (a SIGKILLed worker leaves no FFmpeg
    or publisher behind in the room; PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def publisher_binary() -> str | None:
    """capstan-lkpublish: ``CAPSTAN_LKPUBLISH``, else on PATH (the pusher image), else the one
    devstack/build.sh built into the cache."""
    named = os.environ.get("CAPSTAN_LKPUBLISH")
    if named:
        return named if os.access(named, os.X_OK) else None
    found = shutil.which("capstan-lkpublish")
    if found:
        return found
    cache = Path(os.environ.get("CAPSTAN_CACHE") or Path.home() / ".cache" / "capstan") / "bin" / "capstan-lkpublish"
    return str(cache) if os.access(cache, os.X_OK) else None


def ffmpeg_binary() -> str | None:
    return os.environ.get("CAPSTAN_FFMPEG") or shutil.which("ffmpeg")


def usable() -> tuple[bool, str]:
    """Whether the Go data plane can run here, and if not, why."""
    if DATAPLANE != "go":
        return False, f"CAPSTAN_PUSH_DATAPLANE={DATAPLANE}"
    if publisher_binary() is None:
        return False, "capstan-lkpublish not found"
    if ffmpeg_binary() is None:
        return False, "ffmpeg not found"
    return True, ""


class PinnedRelay:
    """A loopback HTTP endpoint for FFmpeg that forwards every request (its Range header) to the
    address the URL policy checked, never following a redirect (a 3xx becomes a 502): FFmpeg's own
    http client would resolve the name again and follow redirects. The path is a random token."""

    def __init__(self, target: Target, timeout: float = READ_TIMEOUT) -> None:
        relay = self
        self.target, self.timeout = target, timeout
        self.path = "/" + secrets.token_hex(16)
        self.error: str | None = None

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                relay._forward(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="push-relay", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"

    def _forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.path != self.path:
            handler.send_error(404)
            return
        headers = {"Accept-Encoding": "identity"}
        if handler.headers.get("Range"):
            headers["Range"] = handler.headers["Range"]
        conn = _Pinned(self.target, self.timeout)
        try:
            try:
                conn.request("GET", self.target.request_target, headers=headers)
                response = conn.getresponse()
            except OSError as exc:
                self.error = f"cannot be fetched: {exc}"
                handler.send_error(502)
                return
            if 300 <= response.status < 400:
                self.error = f"HTTP {response.status} (redirects are not followed)"
                handler.send_error(502)
                return
            handler.send_response(response.status)
            for name in ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges"):
                value = response.getheader(name)
                if value:
                    handler.send_header(name, value)
            handler.end_headers()
            with contextlib.suppress(OSError, http.client.HTTPException):  # FFmpeg closed it (a seek)
                while chunk := response.read(64 << 10):
                    handler.wfile.write(chunk)
        finally:
            conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FfmpegRun:
    """One FFmpeg run from `start` (seconds into a file; None: from its beginning or a live stream's now)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out_time = 0.0  # seconds written
        self.got_data = False
        self.stderr = b""
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        errors = asyncio.ensure_future(self.proc.stderr.read())
        while line := await self.proc.stdout.readline():
            key, _, value = line.decode(errors="replace").strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit():
                self.out_time = max(0.0, int(value) / 1e6)
                self.got_data = self.got_data or int(value) > 0
        self.stderr = await errors

    async def wait(self) -> int:
        code = await self.proc.wait()
        await self.reader
        return code

    def why(self) -> str:
        lines = [ln for ln in self.stderr.decode(errors="replace").splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "the stream ended"

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reader, STOP_SECONDS)


class ExternalPush:
    """The media of one push through FFmpeg and capstan-lkpublish; the session keeps the rest.

    `on_position(seconds)` gets the position as FFmpeg reports it (twice a second);
    `on_note(message)` the notes the Python reader also gives (live drops and reconnections)."""

    def __init__(self, url: str, policy: Any, resolve: Any, info: SourceInfo, *, live: bool, loop: bool,
                 start: float, reconnect_seconds: float, on_position: Callable[[float], None],
                 on_note: Callable[[str], None], reencode: bool = False) -> None:
        self.url, self.policy, self.resolve, self.info = url, policy, resolve, info
        self.reencode = reencode
        self.live, self.loop, self.start = live, loop, start
        self.reconnect_seconds = reconnect_seconds
        self.on_position, self.on_note = on_position, on_note
        self.keyframe_requests = 0
        self.relay: PinnedRelay | None = None
        self.publisher: asyncio.subprocess.Process | None = None
        self.fds: dict[str, int] = {}  # write ends FFmpeg writes to
        self.ended_info: dict[str, Any] = {}
        self.publisher_gone = asyncio.Event()
        self.live_base = 0.0
        self.reconnects = 0
        # paced by the publisher (a file's copied push): the start position of each FFmpeg run, by
        # the run's number, and the publisher's reports of what it has published of which run
        self.paced = not live
        self.run_starts: list[float] = []

    # --- the publisher -------------------------------------------------------------------------

    async def join(self, room_url: str, token: str, identity: str) -> None:
        """Start capstan-lkpublish and wait until it has joined and published (raises if it cannot)."""
        binary = publisher_binary()
        assert binary is not None
        reads: dict[str, int] = {}
        for kind, wanted in (("video", self.info.has_video), ("audio", self.info.has_audio)):
            if wanted:
                r, w = os.pipe()
                reads[kind], self.fds[kind] = r, w
                if kind in PIPE_BYTES:
                    with contextlib.suppress(OSError):  # the kernel's default (64 KiB) is fine too
                        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_BYTES[kind])
        argv = [binary, "-url", room_url, "-video-fd", str(reads.get("video", -1)),
                "-audio-fd", str(reads.get("audio", -1)), "-fps", f"{self.info.fps or 30:.3f}",
                "-stereo=" + ("true" if (self.info.audio_channels or 1) > 1 else "false"),
                *(["-pace"] if self.paced else [])]
        if self.info.size is not None:
            argv += ["-width", str(self.info.size[0]), "-height", str(self.info.size[1])]
        env = {**os.environ, "LIVEKIT_TOKEN": token}
        try:
            self.publisher = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, env=env,
                pass_fds=tuple(reads.values()), preexec_fn=_die_with_parent)
        finally:
            for r in reads.values():
                os.close(r)
        assert self.publisher.stdout is not None
        line = await self.publisher.stdout.readline()
        event = _event(line)
        if event.get("event") != "joined":
            await self.publisher.wait()
            raise RuntimeError(f"capstan-lkpublish did not join the room as {identity} "
                               f"(exit code {self.publisher.returncode}; its log is the worker's stderr)")
        self.listener = asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        assert self.publisher is not None and self.publisher.stdout is not None
        while line := await self.publisher.stdout.readline():
            event = _event(line)
            if event.get("event") == "keyframe_requests":
                self.keyframe_requests = int(event.get("count") or 0)
            elif event.get("event") == "position":
                self._published(event)
            elif event.get("event") == "ended":
                self.ended_info = event
                self.keyframe_requests = int(event.get("keyframe_requests") or 0)
                self._published(event)
        await self.publisher.wait()
        self.publisher_gone.set()

    def _published(self, event: dict[str, Any]) -> None:
        """The publisher's position (paced): seconds into its run, the run's start position."""
        run, seconds = event.get("run"), event.get("seconds")
        if self.paced and isinstance(run, int) and isinstance(seconds, int | float) and 0 <= run < len(self.run_starts):
            self.on_position(self.run_starts[run] + max(0.0, float(seconds)))

    # --- FFmpeg ------------------------------------------------------------------------------

    def _input(self) -> list[str]:
        target = check(self.url, self.policy, self.resolve)
        if target.scheme in ("http", "https"):
            if self.relay is None:
                self.relay = PinnedRelay(target)
            return ["-i", self.relay.url]
        return ["-rw_timeout", str(LIVE_RW_TIMEOUT_US), "-rtmp_live", "live",
                *(["-f", "flv"] if target.scheme == "rtmp" else []), "-i", pinned_rtmp(target)]

    async def _ffmpeg(self, start: float) -> FfmpegRun:
        ffmpeg = ffmpeg_binary()
        assert ffmpeg is not None
        argv = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *([] if self.paced else ["-re"])]
        if start > 0 and not self.live:
            argv += ["-ss", f"{start:.3f}"]  # copy: from the keyframe at or before it
        argv += self._input()
        if "video" in self.fds and self.reencode:
            fps = self.info.fps or 30
            size = self.info.size or (0, 0)
            one_thread = size[0] * size[1] * fps <= ONE_THREAD_PIXEL_RATE
            argv += ["-map", "0:v:0", *X264, "-g", str(max(1, round(fps / 2))),
                     *(["-threads", "1"] if one_thread else []), "-f", "h264", "-flush_packets", "1",
                     f"pipe:{self.fds['video']}"]
        elif "video" in self.fds:
            argv += ["-map", "0:v:0", "-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264",
                     "-flush_packets", "1", f"pipe:{self.fds['video']}"]
        if "audio" in self.fds:
            argv += ["-map", "0:a:0", "-c:a", "libopus", "-b:a", "64k", "-ar", "48000",
                     "-ac", "1" if (self.info.audio_channels or 1) == 1 else "2",
                     "-frame_duration", str(OPUS_FRAME_MS), "-f", "ogg", "-page_duration", str(OPUS_FRAME_MS * 1000),
                     "-flush_packets", "1", f"pipe:{self.fds['audio']}"]
        argv += ["-progress", "pipe:1", "-stats_period", "0.5"]
        if self.paced:
            if self.run_starts and "video" in self.fds:  # the publisher's mark: the next run begins
                await asyncio.to_thread(os.write, self.fds["video"], END_OF_RUN)
            self.run_starts.append(start)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, pass_fds=tuple(self.fds.values()), preexec_fn=_die_with_parent)
        return FfmpegRun(proc)

    async def run(self, stop: asyncio.Event) -> str | None:
        """Push until the source ends (None), fails (the reason) or `stop` is set ("stopped")."""
        start: float = self.start
        run: FfmpegRun | None = None
        try:
            while True:
                run = await self._ffmpeg(start)
                base = start if not self.live else self.live_base
                code = await self._follow(run, base, stop)
                if code is None:
                    return "stopped"
                if self.publisher_gone.is_set():
                    raise RuntimeError(f"capstan-lkpublish left the room: {self.ended_info.get('reason') or 'exited'}")
                if not self.live:
                    if code != 0:
                        return f"reading the source failed at {base + run.out_time:.1f} s: {self._why(run)}"
                    if not self.loop:
                        return None
                    start = 0.0
                    continue
                self.live_base += run.out_time
                why = self._why(run) if code != 0 or not run.got_data else "the stream ended"
                await run.stop()
                run = None
                return await self._reconnect(why, stop)
        finally:
            if run is not None:
                await run.stop()

    def _why(self, run: FfmpegRun) -> str:
        return self.relay.error if self.relay is not None and self.relay.error else run.why()

    async def _follow(self, run: FfmpegRun, base: float, stop: asyncio.Event) -> int | None:
        """Report the position until FFmpeg exits (its code) or `stop` is set (None)."""
        waiting = asyncio.ensure_future(run.wait())
        stopping = asyncio.ensure_future(stop.wait())
        gone = asyncio.ensure_future(self.publisher_gone.wait())
        try:
            while True:
                done, _ = await asyncio.wait([waiting, stopping, gone], timeout=0.5,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not self.paced:
                    self.on_position(base + run.out_time)
                if stopping in done:
                    await run.stop()
                    return None
                if gone in done:
                    await run.stop()
                    return -1
                if waiting in done:
                    return waiting.result()
        finally:
            for f in (waiting, stopping, gone):
                if not f.done():
                    f.cancel()

    async def _reconnect(self, why: str, stop: asyncio.Event) -> str:
        """A live stream dropped: new FFmpeg runs with backoff until one gets data, then that run
        until the next drop, and so on; ends when time is up after a drop (the reason) or on stop."""
        self.on_note(f"live source dropped ({why}); reconnecting for up to {self.reconnect_seconds:.0f} s")
        deadline = time.monotonic() + self.reconnect_seconds
        delay, last = 0.5, why
        while not stop.is_set():
            run = await self._ffmpeg(0.0)
            got = await self._until_data(run, deadline, stop)
            if got:
                self.reconnects += 1
                self.on_note(f"live source reconnected (reconnection {self.reconnects})")
                code = await self._follow(run, self.live_base, stop)
                if code is None:
                    return "stopped"
                self.live_base += run.out_time
                if self.publisher_gone.is_set():
                    raise RuntimeError("capstan-lkpublish left the room")
                self.on_note(f"live source dropped ({self._why(run)}); reconnecting for up to "
                             f"{self.reconnect_seconds:.0f} s")
                deadline = time.monotonic() + self.reconnect_seconds
                delay = 0.5
                continue
            await run.stop()
            last = self._why(run)
            if time.monotonic() + delay > deadline:
                return (f"the live source dropped ({why}) and did not come back within "
                        f"{self.reconnect_seconds:.0f} s (last try: {last})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 4.0)
        return "stopped"

    async def _until_data(self, run: FfmpegRun, deadline: float, stop: asyncio.Event) -> bool:
        while not stop.is_set() and run.proc.returncode is None and time.monotonic() < deadline + 1:
            if run.got_data:
                return True
            await asyncio.sleep(0.1)
        return run.got_data and run.proc.returncode is None

    # --- the end -------------------------------------------------------------------------------

    async def close(self, *, stopped: bool) -> None:
        """Close the pipes (the publisher sends what it has and leaves) or, stopped, signal it."""
        for fd in self.fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = {}
        if self.publisher is not None and self.publisher.returncode is None:
            if stopped:
                with contextlib.suppress(ProcessLookupError):
                    self.publisher.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.publisher_gone.wait(), STOP_SECONDS * 2)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.publisher.kill()
                await self.publisher.wait()
        if self.relay is not None:
            self.relay.close()
            self.relay = None


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
