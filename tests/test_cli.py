import subprocess
import sys


def test_capstan_lists_its_commands():
    out = subprocess.run([sys.executable, "-m", "capstan.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for command in ("operator", "worker", "merge", "crds"):
        assert command in out.stderr


def test_unknown_command_is_an_error():
    out = subprocess.run([sys.executable, "-m", "capstan.cli", "nope"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2


def test_crds_subcommand_writes_files(tmp_path):
    from capstan.cli import main

    assert main(["crds", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.yaml"))) == 3
