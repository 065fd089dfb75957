"""The e2e tier cannot run here (no Docker): what can be checked here is. The scenario checks of what
MinIO must hold accept a complete listing and name what a broken one lacks; the scripts parse; the
workflow runs e2e/run.sh; the images come from images/Dockerfile, one per extra, non-root."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

from capstan.media import naming
from e2e import scenarios

ROOT = Path(__file__).resolve().parents[1]
SDK = scenarios.SDKAPPID


def single_listing(task: str, room: str, users: list[str]) -> set[str]:
    keys = set()
    for user in users:
        for track in ("video", "audio"):
            keys.add(f"e2e/{task}/{naming.single_playlist_name(SDK, room, user, 'main', track)}")
            stem = naming.single_playlist_name(SDK, room, user, "main", track).removesuffix(".m3u8")
            keys.add(f"e2e/{task}/{stem}_20260101120000000.ts")
        keys.add(f"e2e/{task}/{naming.single_mp4_name(SDK, room, user, 'main', 1)}")
    return keys


def test_single_stream_check_accepts_a_complete_recording_and_names_what_is_missing():
    keys = single_listing("t1", "e2e-single", ["alice", "bob"])
    assert scenarios.missing_single(keys, "t1", "e2e-single", ["alice", "bob"], "e2e") == []
    mp4 = f"e2e/t1/{naming.single_mp4_name(SDK, 'e2e-single', 'bob', 'main', 1)}"
    audio = {k for k in keys if "UserId_e_main_audio" in k and k.endswith(".ts") and naming.encode_id("alice") in k}
    missing = scenarios.missing_single(keys - {mp4} - audio, "t1", "e2e-single", ["alice", "bob"], "e2e")
    assert any(m.endswith("_1.mp4") for m in missing) and any(m.endswith("_audio_<utc>.ts") for m in missing)
    assert scenarios.missing_single(keys, "other-task", "e2e-single", ["alice"], "e2e")  # another task's files


def test_mixed_and_web_checks():
    room = "e2e-mix"
    keys = {f"e2e/t2/{naming.mixed_playlist_name(SDK, room)}", f"e2e/t2/{naming.mixed_mp4_name(SDK, room, 1)}",
            f"e2e/t2/{naming.mixed_playlist_name(SDK, room).removesuffix('.m3u8')}_20260101120000000.ts"}
    assert scenarios.missing_mixed(keys, "t2", room, "e2e") == []
    assert len(scenarios.missing_mixed({k for k in keys if not k.endswith(".ts")}, "t2", room, "e2e")) == 1
    assert scenarios.missing_web({"web/e2e/page.mp4"}, "web/e2e") == []
    assert scenarios.missing_web({"web/e2e/x.m3u8", "web/e2e/x_1.ts"}, "web/e2e") == []
    assert scenarios.missing_web({"web/e2e/x.m3u8", "web/other/y.mp4"}, "web/e2e") != []
    assert scenarios.short_media({"a.mp4": 19.5, "b.mp4": 3.0}, 14) == ["b.mp4: 3.0 s < 14.0 s"]
    assert scenarios._ready({"conditions": [{"type": "Ready", "status": "True"}]}, "x") == []
    assert scenarios._ready({"conditions": [{"type": "Ready", "status": "False"}]}, "x") != []


def test_every_task_the_scenarios_apply_is_valid_for_the_api():
    """The same models the CRDs are generated from: a field the API renamed fails here, not on kind."""
    from capstan.api import KINDS

    models = {info.kind: info.spec_model for info in KINDS}
    bodies = [scenarios.recording("r", "room", "recordings"),
              scenarios.recording("m", "room", "recordings", mode="mix", mixLayout={"mode": "grid"}),
              scenarios.stream_push("p", "room"), scenarios.web_recording("w")]
    for body in bodies:
        models[body["kind"]].model_validate(body["spec"])
    assert {b["kind"] for b in bodies} == set(models)


def test_the_push_source_clip_is_a_real_mp4():
    import io

    import av

    with av.open(io.BytesIO(scenarios._clip(2)), "r") as container:
        assert round(float(container.duration or 0) / av.time_base) == 2
        assert {s.type for s in container.streams} == {"video", "audio"}


def test_scripts_parse_and_the_workflow_runs_them():
    for script in ("e2e/run.sh", "e2e/build-images.sh"):
        subprocess.run(["bash", "-n", str(ROOT / script)], check=True, timeout=30)
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "e2e.yml").read_text())
    runs = " ".join(step.get("run", "") for step in workflow["jobs"]["kind"]["steps"])
    assert "bash e2e/run.sh" in runs
    run = (ROOT / "e2e" / "run.sh").read_text()
    assert "set -euo pipefail" in run and "python -m e2e.scenarios" in run and "helm test" in run
    for manifest in (ROOT / "e2e" / "manifests").glob("*.yaml"):
        assert [d for d in yaml.safe_load_all(manifest.read_text()) if d]


def test_one_dockerfile_builds_each_extra_non_root():
    dockerfile = (ROOT / "images" / "Dockerfile").read_text()
    assert re.search(r"^ARG EXTRA$", dockerfile, re.M)
    assert 'pip install ".[${EXTRA}]"' in dockerfile
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)
    # only panorama and the pusher get Debian packages: the programs they start (capstan/panorama;
    # the pusher's FFmpeg, which feeds its Go publisher, built in a stage of its own)
    panorama = re.search(r"panorama\) packages=\"([^\"]+)\"", dockerfile)
    assert panorama and {"chromium", "xvfb", "pulseaudio"} <= set(panorama.group(1).split())
    assert re.search(r"operator\|recorder\) packages=\"\"", dockerfile)
    assert re.search(r"pusher\) packages=\"ffmpeg\"", dockerfile)
    assert "COPY --from=lkpublish /capstan-lkpublish /usr/local/bin/capstan-lkpublish" in dockerfile
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    built = re.search(r"for component in ([a-z ]+); do", (ROOT / "e2e" / "build-images.sh").read_text())
    assert built and set(built.group(1).split()) == {"operator", "recorder", "pusher", "panorama"} <= extras
    values = yaml.safe_load((ROOT / "charts" / "capstan" / "values.yaml").read_text())
    assert values["workerUid"] == 10001
    assert set(values["images"]) - {"pullPolicy", "pullSecrets"} == set(built.group(1).split())
    # nothing points at the per-component Dockerfiles any more
    tracked = subprocess.run(["git", "ls-files", "*.md", "*.yml", "*.yaml", "*.sh", "*.py", "Makefile"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    stale = [f for f in tracked if (ROOT / f).exists()
             and re.search(r"images/[^/\s]+/Dockerfile", (ROOT / f).read_text())]
    assert stale == []
