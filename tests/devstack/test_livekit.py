"""LiveKit, a room server of the stack, in its own network namespace (devstack/livekit_server.py).

The media test joins with the Python SDK (``livekit`` rtc + ``livekit-api``) from the host side,
as the recorder does: a publisher sends a solid colour and a 440 Hz sine, a hidden subscriber
receives both, and RoomService DeleteRoom reaches the subscriber as ROOM_DELETED.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devstack import livekit_server
from devstack import stack as devstack

NET = livekit_server.NET
T = 10  # seconds, per request

COLOUR = (200, 60, 30)  # RGB
TONE_HZ = 440.0
W, H, FPS = 320, 240, 15
RATE = 48000


def test_keys_are_made_once_and_the_config_stays_in_the_namespace(tmp_path: Path) -> None:
    keys_file = tmp_path / "livekit-keys.json"
    key, secret = livekit_server.load_or_create_keys(keys_file)
    assert livekit_server.load_or_create_keys(keys_file) == (key, secret) == livekit_server.read_keys(keys_file)
    assert keys_file.stat().st_mode & 0o777 == 0o600 and len(secret) >= 32
    config = json.loads(livekit_server.config_files(key, secret)["config.yaml"])  # JSON is YAML
    assert config["keys"] == {key: secret}
    assert config["bind_addresses"] == [NET.address] == [config["rtc"]["node_ip"]]
    assert config["rtc"]["interfaces"] == {"includes": [NET.ns_if]}
    assert config["rtc"]["use_external_ip"] is False
    # the server hands clients these STUN servers (public ones when none is configured)
    assert [s.split(":")[0] for s in config["rtc"]["stun_servers"]] == [NET.address]
    assert NET.name.startswith("capstan-lk") and NET.address.startswith("10.214.")  # not Janus's /30


def test_livekit_is_healthy_and_named_by_the_sdk_variables(livekit: devstack.StackEnv) -> None:
    assert devstack.http_get(f"{livekit_server.HTTP_URL}/", timeout=T) == (200, b"OK")
    env = livekit.env()
    assert env["LIVEKIT_URL"] == f"ws://{NET.address}:7880" == os.environ["LIVEKIT_URL"]
    assert env["LIVEKIT_API_KEY"] == os.environ["LIVEKIT_API_KEY"]
    assert len(env["LIVEKIT_API_SECRET"]) >= 32


def test_livekit_runs_in_its_namespace_and_listens_only_there(livekit: devstack.StackEnv) -> None:
    pid = devstack.running_pid(devstack.Paths(), "livekit")
    assert pid
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{NET.name}").st_ino
    assert NET.name != devstack.ROOM_SERVERS["janus"].net.name

    def inside(*argv: str) -> str:
        res = subprocess.run(NET.exec_argv(*argv), capture_output=True, text=True, timeout=T)
        assert res.returncode == 0, res.stderr
        return res.stdout

    sockets = {line.split()[4] for line in inside("ss", "-lntuH").splitlines() if line.strip()}
    # ICE over TCP listens on every address of the namespace (livekit-server cannot bind it to one):
    # that is 10.214.N.1 and the namespace's own loopback, nothing the host or beyond can reach.
    assert {f"{NET.address}:7880", "*:7881"} <= sockets, sockets
    assert {a for a in sockets if a.rsplit(":", 1)[0] != NET.address} == {"*:7881"}, sockets
    assert inside("ip", "route", "show", "default").strip() == ""
    assert inside("ip", "-6", "addr").strip() == ""
    addrs = [line.split()[3] for line in inside("ip", "-4", "-o", "addr").splitlines() if line]
    assert sorted(addrs) == [f"{NET.address}/30", "127.0.0.1/8"]


def test_keys_are_made_once_and_kept_across_up(livekit: devstack.StackEnv) -> None:
    paths = devstack.Paths()
    assert paths.livekit_keys.stat().st_mode & 0o777 == 0o600
    config = json.loads((paths.livekit_conf / "config.yaml").read_text())
    assert config["keys"] == {livekit.livekit_api_key: livekit.livekit_api_secret}
    assert config["rtc"]["use_external_ip"] is False
    pid = devstack.running_pid(paths, "livekit")
    again = devstack.ensure_up(build_first=False)
    assert "livekit" in again.reused and "livekit" not in again.started
    assert devstack.running_pid(paths, "livekit") == pid
    assert (again.livekit_api_key, again.livekit_api_secret) == (livekit.livekit_api_key, livekit.livekit_api_secret)


def _token(env: devstack.StackEnv, room: str, identity: str, *, publish: bool) -> str:
    from livekit import api

    grants = api.VideoGrants(
        room_join=True, room=room, can_publish=publish, can_subscribe=not publish, hidden=not publish
    )
    return (
        api.AccessToken(env.livekit_api_key, env.livekit_api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .to_jwt()
    )


async def _publish(room: Any, stop: asyncio.Event) -> None:
    """A tiny anchor: a solid colour at FPS and a 440 Hz sine in 10 ms frames, until stop."""
    from livekit import rtc

    vsrc, asrc = rtc.VideoSource(W, H), rtc.AudioSource(RATE, 1)
    for track, source in (
        (rtc.LocalVideoTrack.create_video_track("cam", vsrc), rtc.TrackSource.SOURCE_CAMERA),
        (rtc.LocalAudioTrack.create_audio_track("mic", asrc), rtc.TrackSource.SOURCE_MICROPHONE),
    ):
        await room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=source))
    rgba = np.empty((H, W, 4), np.uint8)
    rgba[:] = (*COLOUR, 255)
    frame = rtc.VideoFrame(W, H, rtc.VideoBufferType.RGBA, rgba.tobytes())
    n = RATE // 100
    start, sent = time.monotonic(), 0
    while not stop.is_set():
        t = (sent + np.arange(n)) / RATE
        pcm = (np.sin(2 * np.pi * TONE_HZ * t) * 12000).astype(np.int16)
        await asrc.capture_frame(rtc.AudioFrame(pcm.tobytes(), RATE, 1, n))  # paces itself
        if sent % (RATE // FPS) < n:
            vsrc.capture_frame(frame)
        sent += n
        await asyncio.sleep(max(0.0, start + sent / RATE - time.monotonic() - 0.05))


def _peak_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / RATE)[int(np.argmax(spectrum))])


async def _round_trip(env: devstack.StackEnv) -> tuple[list[np.ndarray], np.ndarray, Any]:
    from livekit import api, rtc

    name = f"devstack-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = rtc.Room(), rtc.Room()
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    disconnected: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    streams: list[Any] = []
    tasks: list[asyncio.Task[None]] = []

    async def read_video(stream: Any) -> None:
        async for ev in stream:
            f = ev.frame
            frames.append(np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, 4)[:, :, :3].copy())

    async def read_audio(stream: Any) -> None:
        async for ev in stream:
            audio.append(np.frombuffer(ev.frame.data, np.int16).astype(np.float64))

    @subscriber.on("track_subscribed")
    def on_track(track: Any, publication: Any, participant: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            streams.append(rtc.VideoStream(track, format=rtc.VideoBufferType.RGBA))
            tasks.append(asyncio.ensure_future(read_video(streams[-1])))
        else:
            streams.append(rtc.AudioStream(track, sample_rate=RATE, num_channels=1))
            tasks.append(asyncio.ensure_future(read_audio(streams[-1])))

    @subscriber.on("disconnected")
    def on_disconnected(reason: Any) -> None:
        if not disconnected.done():
            disconnected.set_result(reason)

    stop = asyncio.Event()
    await subscriber.connect(env.livekit_url, _token(env, name, "recorder", publish=False))
    await publisher.connect(env.livekit_url, _token(env, name, "anchor", publish=True))
    sender = asyncio.ensure_future(_publish(publisher, stop))
    try:
        deadline = time.monotonic() + 20
        # two seconds of media once it flows (the first frames are the encoder warming up)
        while len(frames) < 2 * FPS + 10 or sum(map(len, audio)) < 2 * RATE:
            assert time.monotonic() < deadline, f"{len(frames)} frames, {sum(map(len, audio))} samples"
            assert not sender.done() or sender.result() is None
            await asyncio.sleep(0.1)
        # what arrived while the room was live (leaving may end the track with a black frame)
        media = frames[-FPS:], np.concatenate(audio)[-RATE:]
        async with api.LiveKitAPI(env.livekit_url, env.livekit_api_key, env.livekit_api_secret) as lk:
            await lk.room.delete_room(api.DeleteRoomRequest(room=name))
        reason = await asyncio.wait_for(disconnected, T)
    finally:
        stop.set()
        await asyncio.wait_for(sender, T)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()
        await publisher.disconnect()
        await subscriber.disconnect()
    return (*media, reason)


@pytest.mark.timeout(120)
def test_colour_and_tone_arrive_and_delete_room_disconnects_the_subscriber(livekit: devstack.StackEnv) -> None:
    from livekit import rtc

    frames, pcm, reason = asyncio.run(_round_trip(livekit))  # the last second of each
    mean = np.mean([f.reshape(-1, 3).mean(axis=0) for f in frames], axis=0)
    assert np.all(np.abs(mean - COLOUR) <= 3), mean
    assert abs(_peak_hz(pcm) - TONE_HZ) <= 2, _peak_hz(pcm)
    assert reason == rtc.DisconnectReason.ROOM_DELETED, reason

