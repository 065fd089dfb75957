"""Sources of a web recording: the stage's picture and its sound, with capture times.

- :class:`ScreenSource`: the X display through PyAV's ``x11grab`` input device, in this process,
  so pictures reach the shared encoder without a pipe of raw frames (1280x720x4 bytes x 30/s is
  110 MB/s); each frame's time is the X server grab time (wall clock).
- :class:`SoundSource`: the null sink's monitor through ``parec`` (PulseAudio's own recorder):
  PyAV's bundled FFmpeg has no ``pulse`` input device, and raw 48 kHz stereo s16 is only 192 kB/s.
  Samples are timed by their own sample clock, anchored at the first read and re-anchored when
  it drifts from the wall clock by more than :data:`DRIFT_SECONDS`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np

from capstan.panorama.stage import die_with_parent

log = logging.getLogger("capstan.panorama.capture")

SOUND_RATE = 48000
SOUND_CHANNELS = 2
CHUNK_SECONDS = 0.02
DRIFT_SECONDS = 0.2
FrameSink = Callable[[Any, float], None]  # (frame, capture time) -> None


class ScreenSource:
    def __init__(self, display: str, size: tuple[int, int], fps: int) -> None:
        self.display, self.size, self.fps = display, size, fps
        self.frames = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container: Any = None

    def start(self, sink: FrameSink) -> None:
        self._container = av.open(self.display, format="x11grab", options={
            "video_size": f"{self.size[0]}x{self.size[1]}", "framerate": str(self.fps), "draw_mouse": "0"})
        self._thread = threading.Thread(target=self._run, args=(sink,), name="screen-capture", daemon=True)
        self._thread.start()

    def _run(self, sink: FrameSink) -> None:
        try:
            for frame in self._container.decode(video=0):
                if self._stop.is_set():
                    break
                when = frame.time if frame.time is not None else time.time()
                self.frames += 1
                sink(frame, float(when))
        except Exception as exc:  # noqa: BLE001 - the session sees it and ends the recording
            if not self._stop.is_set():
                log.exception("screen capture failed")
                self.error = exc
        finally:
            with contextlib.suppress(Exception):
                self._container.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class SoundSource:
    def __init__(self, monitor: str, env: dict[str, str]) -> None:
        self.monitor, self.env = monitor, env
        self.samples = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None

    def start(self, sink: FrameSink) -> None:
        self._proc = subprocess.Popen(
            ["parec", f"--device={self.monitor}", "--format=s16le", f"--rate={SOUND_RATE}",
             f"--channels={SOUND_CHANNELS}", f"--latency-msec={round(CHUNK_SECONDS * 1000)}", "--raw",
             "--client-name=capstan-capture"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env}, start_new_session=True, preexec_fn=die_with_parent)
        self._thread = threading.Thread(target=self._run, args=(sink,), name="sound-capture", daemon=True)
        self._thread.start()

    def _run(self, sink: FrameSink) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        chunk = round(SOUND_RATE * CHUNK_SECONDS) * SOUND_CHANNELS * 2
        anchor: float | None = None  # wall time of sample 0 of this run
        counted = 0
        out = self._proc.stdout
        while not self._stop.is_set():
            data = out.read(chunk)
            if not data:
                break
            frames = len(data) // (2 * SOUND_CHANNELS)
            if not frames:
                continue
            now = time.time()
            start_guess = now - frames / SOUND_RATE
            if anchor is None or abs(anchor + counted / SOUND_RATE - start_guess) > DRIFT_SECONDS:
                anchor, counted = start_guess, 0
            when = anchor + counted / SOUND_RATE
            counted += frames
            self.samples += frames
            pcm = np.frombuffer(data[:frames * 2 * SOUND_CHANNELS], np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="stereo")
            frame.sample_rate = SOUND_RATE
            sink(frame, when)
        if not self._stop.is_set():
            code = self._proc.poll()
            self.error = f"parec ended (code {code})"

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(5)
