"""The stage a page plays on: its own X display (Xvfb) and its own sound server (PulseAudio with
one null sink, whose monitor is what the page sounds like).

Each recording gets a free display number and a PulseAudio instance on a socket in its work
directory, so several workers on one machine (the devstack's pod runner, a bench) never hear or
see each other. :meth:`Stage.close` always ends both (TERM, then KILL after a bound).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger("capstan.panorama.stage")

SINK = "capstan"
START_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 5.0
X_LOCK = "/tmp/.X{n}-lock"
X_SOCKET = "/tmp/.X11-unix/X{n}"


class StageError(RuntimeError):
    """Xvfb or PulseAudio did not come up."""


def xvfb_command(display: int, size: tuple[int, int]) -> list[str]:
    return ["Xvfb", f":{display}", "-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten", "tcp",
            "-noreset", "-dpi", "96"]


def pulse_command(runtime: Path) -> list[str]:
    """A private PulseAudio: no default script, no autospawn, no idle exit, one null sink."""
    return ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
            "--use-pid-file=no", "--disable-shm=yes", "--log-target=stderr",
            f"--load=module-native-protocol-unix socket={runtime / 'native'} auth-anonymous=1",
            f"--load=module-null-sink sink_name={SINK} rate=48000 channels=2 "
            f"sink_properties=device.description={SINK}",
            "--load=module-always-sink"]


def die_with_parent() -> None:
    """``preexec_fn``: the child is sent SIGTERM when the thread that started it dies, so a worker
    that is SIGKILLed (outside a Pod, where nothing else ends its children) leaves no Xvfb,
    PulseAudio or parec behind. Linux only; elsewhere a no-op."""
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_display(start: int = 90, end: int = 1000) -> int:
    """A display number whose lock file and socket are absent (Xvfb takes the lock itself)."""
    for n in range(start + os.getpid() % 97, end):
        if not os.path.exists(X_LOCK.format(n=n)) and not os.path.exists(X_SOCKET.format(n=n)):
            return n
    raise StageError("no free X display number")


class Stage:
    def __init__(self, work_dir: Path, size: tuple[int, int]) -> None:
        self.work_dir, self.size = work_dir, size
        self.display = -1
        # PulseAudio's socket and Chromium's singleton socket (TMPDIR) live here: a short path (a UNIX
        # socket path has at most 107 bytes; a task's work directory may be longer), removed at close
        short = "/tmp" if os.access("/tmp", os.W_OK) else None
        self.runtime = Path(tempfile.mkdtemp(prefix="capstan-stage-", dir=short))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """What the browser and the sound capture need to find this stage."""
        return {"DISPLAY": f":{self.display}", "PULSE_SERVER": f"unix:{self.runtime / 'native'}",
                "PULSE_SINK": SINK, "PULSE_RUNTIME_PATH": str(self.runtime), "TMPDIR": str(self.runtime)}

    @property
    def monitor(self) -> str:
        return f"{SINK}.monitor"

    def open(self) -> Stage:
        try:
            self._start_xvfb()
            self._start_pulse()
        except BaseException:
            self.close()
            raise
        return self

    def _start_xvfb(self) -> None:
        for _ in range(5):  # a racing Xvfb may take the number between our check and its start
            self.display = free_display()
            proc = self._spawn(xvfb_command(self.display, self.size), "xvfb.log")
            if self._wait(lambda: os.path.exists(X_SOCKET.format(n=self.display)), proc):
                return
            self._end(proc)
        raise StageError(f"Xvfb did not start (see {self.work_dir / 'xvfb.log'})")

    def _start_pulse(self) -> None:
        self.runtime.mkdir(parents=True, exist_ok=True)
        socket_path = self.runtime / "native"
        socket_path.unlink(missing_ok=True)
        proc = self._spawn(pulse_command(self.runtime), "pulse.log", {"PULSE_RUNTIME_PATH": str(self.runtime),
                                                                      "HOME": str(self.runtime)})
        if not self._wait(lambda: socket_path.exists() and self._pactl_ok(), proc):
            tail = (self.work_dir / "pulse.log").read_text(errors="replace")[-500:]
            raise StageError(f"PulseAudio did not start: {tail.strip()}")

    def _pactl_ok(self) -> bool:
        try:
            done = subprocess.run(["pactl", "list", "short", "sinks"], env={**os.environ, **self.env},
                                  capture_output=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0 and SINK.encode() in done.stdout

    def _spawn(self, cmd: list[str], log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / log_name, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, start_new_session=True,
                                    preexec_fn=die_with_parent)
        self.procs.append(proc)
        return proc

    @staticmethod
    def _wait(ready: object, proc: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if callable(ready) and ready():
                return True
            time.sleep(0.1)
        return False

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_TIMEOUT_SECONDS)
        if proc in self.procs:
            self.procs.remove(proc)

    def alive(self) -> str | None:
        """None while both run, else which one died."""
        for proc, name in zip(self.procs, ("Xvfb", "PulseAudio"), strict=False):
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            self._end(proc)
        shutil.rmtree(self.runtime, ignore_errors=True)
