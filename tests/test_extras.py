"""Each image installs only its extra (`pip install capstan[recorder]`, ...): every extra, alone in a
throwaway virtualenv, imports its entrypoints. The dev virtualenv has every extra, so without this
an operator image that cannot import (the room port pulling in PyAV) passes every other test.

The virtualenvs hold only the extra's dependencies (installed from pyproject.toml, cached under
~/.cache/capstan/extras/ by its hash); the source is imported from this checkout, so a new
top-level import anywhere is caught without reinstalling.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"

ENTRYPOINTS = {
    "operator": ["capstan.operator.__main__", "capstan.operator.handlers", "capstan.operator.phase_events"],
    "recorder": ["capstan.worker.__main__", "capstan.recorder.main", "capstan.rooms.livekit", "capstan.rooms.janus",
                 "capstan.rooms.janus_publisher"],
    "pusher": ["capstan.worker.__main__", "capstan.pusher.main", "capstan.rooms.livekit", "capstan.rooms.janus"],
    "panorama": ["capstan.worker.__main__", "capstan.panorama.main"],
    "merge": ["capstan.merge.cli"],
    "gateway": ["capstan.gateway.__main__", "capstan.gateway.http", "capstan.gateway.kube",
                "capstan.gateway.service"],
}
INSTALL_TIMEOUT = 900


def extras() -> list[str]:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    return sorted(set(declared) - {"dev"})


def test_every_extra_is_checked() -> None:
    assert sorted(ENTRYPOINTS) == extras()


def extra_venv(extra: str) -> Path:
    """A virtualenv with the base dependencies and `extra`'s, reused while pyproject.toml is unchanged."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"][extra]]
    digest = hashlib.sha1("\n".join([sys.version, *requirements]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("CAPSTAN_CACHE", Path.home() / ".cache" / "capstan")) / "extras"
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"{extra}-{digest}"
    with open(cache / f"{extra}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers: one installs, the others wait
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *requirements], check=True, timeout=INSTALL_TIMEOUT)
        (venv / ".complete").touch()
    return venv


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
@pytest.mark.parametrize("extra", sorted(ENTRYPOINTS))
def test_an_extra_alone_imports_its_entrypoints(extra: str) -> None:
    venv = extra_venv(extra)
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "HOME": os.environ.get("HOME", "/root")}
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code, *ENTRYPOINTS[extra]], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"capstan[{extra}] alone cannot import its entrypoints:\n{done.stderr[-3000:]}"
