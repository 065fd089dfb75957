"""The push source: an http(s) media file (vod) or an rtmp(s) live stream, opened through the URL
policy, and what it holds (:class:`SourceInfo`), which decides pass-through or re-encode.

Every open and read has a deadline (PyAV's interrupt timeout), so an unreachable or silent source
fails instead of hanging; error messages name the source (userinfo dropped) and say what failed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import av

from capstan.net.urlpolicy import Resolver, UrlPolicy, UrlRefused, Use, redact_userinfo
from capstan.pusher.httpfile import HttpFile

OPEN_TIMEOUT = 10.0
READ_TIMEOUT = 10.0
LIVE_READ_TIMEOUT = 3.0  # a live stream silent this long has dropped: reconnect
PROBE_PACKETS = 90  # video packets looked at for B-frames (pts out of decode order)


class SourceError(Exception):
    """The source cannot be pushed; the message names it."""


@dataclass(frozen=True)
class SourceInfo:
    duration: float | None = None
    video_codec: str | None = None
    size: tuple[int, int] | None = None
    b_frames: bool = False
    audio_rate: int | None = None
    audio_channels: int | None = None
    fps: float | None = None  # the video's frame rate, where the container says

    @property
    def has_video(self) -> bool:
        return self.size is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_rate is not None

    def passes_through(self, accepts_encoded_h264: bool) -> bool:
        """H.264 without B-frames goes to a publisher that takes encoded H.264 as it is: WebRTC sends
        access units in decode order with one timestamp each, which only holds when decode order is
        presentation order."""
        return accepts_encoded_h264 and self.video_codec == "h264" and not self.b_frames


def describe(url: str) -> str:
    """The source as messages name it: no userinfo, no query (signed URLs carry tokens there)."""
    return redact_userinfo(url.split("?", 1)[0])


def check(url: str, policy: UrlPolicy, resolve: Resolver | None = None) -> Any:
    try:
        return policy.check(url, Use.media, resolve)
    except UrlRefused as exc:
        raise SourceError(f"spec.videoSrc {describe(url)} refused: {exc}") from None


def _host(address: str) -> str:
    return f"[{address}]" if isinstance(ipaddress.ip_address(address.split("%", 1)[0]), ipaddress.IPv6Address) \
        else address


def pinned_rtmp(target: Any) -> str:
    """An rtmp(s) URL on the address the policy checked, in place of the name."""
    return f"{target.scheme}://{_host(target.addresses[0])}:{target.port}{target.request_target}"


def open_container(url: str, policy: UrlPolicy, *, live: bool, resolve: Resolver | None = None) -> Any:
    """A demuxer on the source, connected to the address the policy checked."""
    target = check(url, policy, resolve)
    read_timeout = LIVE_READ_TIMEOUT if live else READ_TIMEOUT
    try:
        if target.scheme in ("http", "https"):
            try:
                fetched = HttpFile(target, timeout=READ_TIMEOUT)
            except OSError as exc:  # HttpError too: nothing is media yet, the fetch itself failed
                raise SourceError(f"spec.videoSrc {describe(url)} cannot be fetched: {exc}") from None
            return av.open(fetched, "r", timeout=(OPEN_TIMEOUT, read_timeout))
        # rtmp(s): FFmpeg's RTMP client, given the checked address instead of the name
        return av.open(pinned_rtmp(target), "r", format="flv" if target.scheme == "rtmp" else None,
                       timeout=(OPEN_TIMEOUT, read_timeout), options={"rtmp_live": "live"})
    except (av.FFmpegError, OSError) as exc:
        raise SourceError(f"spec.videoSrc {describe(url)} cannot be opened as media: {exc}") from None


def probe(container: Any, *, look_ahead: bool) -> SourceInfo:
    """What the source holds. ``look_ahead`` (a file) also reads the first video packets for
    B-frames; the caller seeks afterwards."""
    video = container.streams.video[0] if container.streams.video else None
    audio = container.streams.audio[0] if container.streams.audio else None
    if video is None and audio is None:
        raise SourceError("has neither video nor audio")
    duration = float(container.duration) / av.time_base if container.duration else None
    b_frames = False
    size = None
    if video is not None:
        ctx = video.codec_context
        size = (ctx.width, ctx.height)
        if not size[0] or not size[1]:
            raise SourceError("video stream without a picture size")
        b_frames = bool(getattr(ctx, "has_b_frames", 0))
        if look_ahead and not b_frames:
            b_frames = _reordered(container, video)
    rate = (video.average_rate or video.guessed_rate) if video is not None else None
    return SourceInfo(duration=duration, video_codec=video.codec_context.name if video is not None else None,
                      size=size, b_frames=b_frames, fps=float(rate) if rate else None,
                      audio_rate=audio.codec_context.sample_rate if audio is not None else None,
                      audio_channels=min(2, audio.codec_context.layout.nb_channels or 1) if audio is not None else None)


def _reordered(container: Any, video: Any) -> bool:
    last: int | None = None
    for n, packet in enumerate(container.demux(video)):
        if n >= PROBE_PACKETS:
            break
        if packet.pts is None:
            continue
        if last is not None and packet.pts < last:
            return True
        last = packet.pts
    return False
