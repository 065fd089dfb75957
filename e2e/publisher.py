"""Synthetic anchors for the e2e scenarios, run inside the kind cluster (a Pod of the recorder image,
this file from a ConfigMap): each anchor publishes a solid colour and a tone of its own into a
LiveKit room through Capstan's own room port, for SECONDS seconds, so the recordings in MinIO can
be checked for who is where.

Env: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, ROOM, ANCHORS ("alice,bob"), SECONDS.
"""

from __future__ import annotations

import asyncio
import os
import time

import av
import numpy as np

from capstan.media.naming import MediaId
from capstan.rooms import backend_for
from capstan.rooms.tokens import publisher_token

COLOURS = [(220, 40, 40), (40, 60, 220), (40, 200, 60), (230, 200, 40)]
TONES = [440.0, 660.0, 880.0, 550.0]
FPS, RATE, CHUNK = 15, 48000, 480


async def anchor(index: int, identity: str, seconds: float) -> None:
    url, room = os.environ["LIVEKIT_URL"], os.environ["ROOM"]
    token = publisher_token(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"], identity, room)
    publisher = await backend_for("livekit").publish(url, room, identity, token)
    video = await publisher.add_video(MediaId.MAIN, 320, 240)
    audio = await publisher.add_audio(MediaId.MAIN, RATE, 1)
    await publisher.start()
    image = np.empty((240, 320, 3), np.uint8)
    image[:] = COLOURS[index % len(COLOURS)]
    picture = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    hz = TONES[index % len(TONES)]
    start = time.time()
    sent = 0
    next_picture = start
    while (now := time.time()) - start < seconds:
        if now >= next_picture:
            video.write(picture, now)
            next_picture += 1 / FPS
        n = np.arange(sent, sent + CHUNK)
        samples = (0.3 * 32767 * np.sin(2 * np.pi * hz * n / RATE)).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = RATE
        await audio.write(frame)  # paces the loop at real time
        sent += CHUNK
    await publisher.leave()


async def main() -> None:
    seconds = float(os.environ.get("SECONDS", "60"))
    anchors = [a for a in os.environ["ANCHORS"].split(",") if a]
    await asyncio.gather(*(anchor(i, a, seconds) for i, a in enumerate(anchors)))
    print(f"published {anchors} for {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
