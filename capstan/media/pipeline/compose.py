"""Mixed-stream processing: a compositor (many pictures → one canvas) and an audio mixer (many
anchors' sound → one track).

The compositor works on yuv420p, the encoder's pixel format: each anchor's picture is scaled by
swscale (one reusable :class:`~av.video.reformatter.VideoReformatter` per window) straight to its
window's size, then its three planes are pasted into the canvas's planes with numpy slicing; no
Python loop runs over pixels. A picture that did not change since the last canvas is not scaled
again; the background is copied only where no window covers the canvas (nowhere in a full grid),
and a compositor made with ``reuse=True`` paints into a few canvases it keeps instead of a new one
per picture (for an encoder that copies its input, as libx264 does). Render modes: ``crop``
(fill the window, cut the overflow evenly), ``fit`` (the whole picture, black bars), ``stretch``.
A window whose anchor has no picture (audio only, or no frame yet) shows the placeholder: a
colour or an image. Watermarks are blended with their alpha.

The mixer places every anchor's samples on one sample clock (positions from capture times;
a block not later than ``tolerance`` samples after its anchor's last one continues it, so jitter
never drops or doubles a sample; a run that starts before the span already mixed is moved to
the mix's cursor rather than lost) and sums what falls in each span it is asked for. Each anchor
has one buffer its 10 ms blocks are copied into, so a span is one numpy addition per anchor,
however many blocks it was delivered in.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from capstan.media.layouts import Feed, Window
from capstan.media.pipeline.processing import BLACK_UV, BLACK_Y, fit

Planes = tuple[np.ndarray, np.ndarray, np.ndarray]


def rgb_to_yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 limited range, as swscale converts RGB to yuv420p."""
    r, g, b = rgb
    y = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    u = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    v = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256
    return tuple(int(min(255, max(0, round(c)))) for c in (y, u, v))  # type: ignore[return-value]


def parse_colour(text: str) -> tuple[int, int, int]:
    """``#RRGGBB`` → (r, g, b)."""
    value = text.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def frame_planes(frame: av.VideoFrame) -> Planes:
    """Views (no copy) of a yuv420p frame's Y, U and V planes, without the line padding."""
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        out.append(rows[:plane.height, :plane.width])
    return out[0], out[1], out[2]


@dataclass(frozen=True)
class Picture:
    """A still image in yuv420p planes; ``alpha`` (0-256, full and half size) when it has one."""

    planes: Planes
    alpha: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.planes[0].shape[1], self.planes[0].shape[0]

    @classmethod
    def solid(cls, size: tuple[int, int], rgb: tuple[int, int, int]) -> Picture:
        w, h = size
        y, u, v = rgb_to_yuv(rgb)
        return cls((np.full((h, w), y, np.uint8), np.full((h // 2, w // 2), u, np.uint8),
                    np.full((h // 2, w // 2), v, np.uint8)))

    @classmethod
    def from_image(cls, data: bytes, size: tuple[int, int], *, crop: bool = False) -> Picture:
        """A PNG (alpha kept) or JPEG scaled to ``size`` (stretched, or cropped to keep its aspect)."""
        with av.open(io.BytesIO(data), "r") as container:
            frame = next(container.decode(video=0))
        w, h = size = (size[0] - size[0] % 2, size[1] - size[1] % 2)
        if crop:
            frame = _crop_to_aspect(frame.reformat(format="rgba"), size)
        rgba: np.ndarray = np.asarray(frame.reformat(width=w, height=h, format="rgba").to_ndarray(), np.uint8)
        yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba[:, :, :3]), format="rgb24").reformat(
            format="yuv420p")
        planes = tuple(p.copy() for p in frame_planes(yuv))
        alpha: np.ndarray = np.asarray(rgba[:, :, 3], np.uint8)
        if bool((alpha == 255).all()):
            return cls(planes)  # type: ignore[arg-type]
        full = alpha.astype(np.uint16) + (alpha >> 7)  # 0..255 → 0..256, so opaque is exactly opaque
        half = full.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).round().astype(np.uint16)
        return cls(planes, (full, half))  # type: ignore[arg-type]


def _crop_to_aspect(frame: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    array: np.ndarray = np.asarray(frame.to_ndarray(), np.uint8)
    h, w = array.shape[:2]
    target = size[0] / size[1]
    if w / h > target:
        keep = max(1, round(h * target))
        array = array[:, (w - keep) // 2:(w - keep) // 2 + keep]
    else:
        keep = max(1, round(w / target))
        array = array[(h - keep) // 2:(h - keep) // 2 + keep]
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgba")


@dataclass(frozen=True)
class Overlay:
    """A watermark: a picture at (left, top) of the canvas."""

    picture: Picture
    left: int
    top: int


def paste(canvas: Planes, picture: Planes, left: int, top: int,
          alpha: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """``picture`` into ``canvas`` at an even (left, top), clipped to the canvas; blended when ``alpha``."""
    ch, cw = canvas[0].shape
    ph, pw = picture[0].shape
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(cw, left + pw), min(ch, top + ph)
    if x1 <= x0 or y1 <= y0:
        return
    for i, (dst, src) in enumerate(zip(canvas, picture, strict=True)):
        s = 1 if i == 0 else 2
        d = dst[y0 // s:y1 // s, x0 // s:x1 // s]
        p = src[(y0 - top) // s:(y1 - top) // s, (x0 - left) // s:(x1 - left) // s]
        if alpha is None:
            d[...] = p
        else:
            a = alpha[0 if i == 0 else 1][(y0 - top) // s:(y1 - top) // s, (x0 - left) // s:(x1 - left) // s]
            d[...] = ((d.astype(np.uint16) * (256 - a) + p.astype(np.uint16) * a) >> 8).astype(np.uint8)


def fill(canvas: Planes, left: int, top: int, width: int, height: int, yuv: tuple[int, int, int]) -> None:
    canvas[0][top:top + height, left:left + width] = yuv[0]
    canvas[1][top // 2:(top + height) // 2, left // 2:(left + width) // 2] = yuv[1]
    canvas[2][top // 2:(top + height) // 2, left // 2:(left + width) // 2] = yuv[2]


@dataclass
class _Tile:
    reformatter: VideoReformatter = field(default_factory=VideoReformatter)
    source: av.VideoFrame | None = None
    planes: Planes | None = None
    offset: tuple[int, int] = (0, 0)  # where the scaled picture goes inside the window (fit)
    scaled: av.VideoFrame | None = None  # the planes are views of it: kept alive with them


class Compositor:
    """Pictures of many feeds → one yuv420p canvas per call, as the windows say.

    ``reuse``: the canvases are a ring of :data:`CANVASES` frames painted over and over, so a canvas
    returned is valid until that many more calls (hand it to an encoder that copies it, or copy it).
    """

    CANVASES = 3

    def __init__(self, size: tuple[int, int], *, background: tuple[int, int, int] = (0, 0, 0),
                 reuse: bool = False) -> None:
        self.size = size
        self.background = Picture.solid(size, background)
        self.placeholder_rgb = (0, 0, 0)
        self.placeholder_colour = rgb_to_yuv(self.placeholder_rgb)
        self.placeholder_image: bytes | None = None
        self._placeholders: dict[tuple[int, int], Picture] = {}
        self._tiles: dict[Window, _Tile] = {}
        self._reuse = reuse
        self._canvases: list[tuple[av.VideoFrame, Planes]] = []
        self._next_canvas = 0
        self._uncovered: tuple[tuple[object, ...], tuple[int, int, int, int] | None] | None = None
        self.scaled = 0  # pictures scaled so far (a picture shown unchanged is not scaled again)

    def set_background(self, colour: tuple[int, int, int], image: Picture | None = None) -> None:
        self.background = image if image is not None and image.size == self.size else Picture.solid(self.size, colour)

    def set_placeholder(self, colour: tuple[int, int, int], image: bytes | None = None) -> None:
        self.placeholder_rgb, self.placeholder_colour, self.placeholder_image = colour, rgb_to_yuv(colour), image
        self._placeholders.clear()

    def compose(self, windows: Sequence[Window], pictures: Mapping[Feed, av.VideoFrame | None],
                overlays: Iterable[Overlay] = ()) -> av.VideoFrame:
        """One canvas: the background, each window in order (lowest z first), then the overlays."""
        out, canvas = self._canvas()
        uncovered = self._background_box(windows, pictures)
        if uncovered is not None:
            x0, y0, x1, y1 = uncovered
            for i, (dst, src) in enumerate(zip(canvas, self.background.planes, strict=True)):
                s = 1 if i == 0 else 2
                dst[y0 // s:y1 // s, x0 // s:x1 // s] = src[y0 // s:y1 // s, x0 // s:x1 // s]
        used = set()
        for window in windows:
            used.add(window)
            picture = pictures.get(window.feed)
            if picture is None:
                self._placeholder(canvas, window)
                continue
            tile = self._tiles.get(window)
            if tile is None:
                tile = self._tiles[window] = _Tile()
            if tile.source is not picture:
                self._scale(tile, window, picture)
            assert tile.planes is not None
            if window.render_mode == "fit" and tile.planes[0].shape != (window.height, window.width):
                fill(canvas, window.left, window.top, window.width, window.height, (BLACK_Y, BLACK_UV, BLACK_UV))
            paste(canvas, tile.planes, window.left + tile.offset[0], window.top + tile.offset[1])
        if len(self._tiles) > len(used):
            for stale in set(self._tiles) - used:
                del self._tiles[stale]
        for overlay in overlays:
            paste(canvas, overlay.picture.planes, overlay.left, overlay.top, overlay.picture.alpha)
        return out

    def _canvas(self) -> tuple[av.VideoFrame, Planes]:
        w, h = self.size
        if not self._reuse:
            out = av.VideoFrame(w, h, "yuv420p")
            return out, frame_planes(out)
        if len(self._canvases) < self.CANVASES:
            out = av.VideoFrame(w, h, "yuv420p")
            self._canvases.append((out, frame_planes(out)))
        chosen = self._canvases[self._next_canvas % len(self._canvases)]
        self._next_canvas += 1
        return chosen

    def _background_box(self, windows: Sequence[Window],
                        pictures: Mapping[Feed, av.VideoFrame | None]) -> tuple[int, int, int, int] | None:
        """The smallest box (x0, y0, x1, y1) holding every canvas pixel no window paints over, or None
        when the windows cover the canvas. A window paints all of its (clipped) box -- a picture
        cropped or stretched to it, fitted on black, or the placeholder colour -- except a placeholder
        image, which may be transparent. Worked out again only when the windows change."""
        see_through = self.placeholder_image is not None
        key = (tuple(windows), see_through and tuple(pictures.get(w.feed) is None for w in windows))
        if self._uncovered is not None and self._uncovered[0] == key:
            return self._uncovered[1]
        w, h = self.size
        covered = np.zeros((h, w), bool)
        for window in windows:
            if see_through and pictures.get(window.feed) is None:
                continue
            covered[max(0, window.top):max(0, window.bottom), max(0, window.left):max(0, window.right)] = True
        box: tuple[int, int, int, int] | None = None
        if not covered.all():
            rows = np.flatnonzero(~covered.all(axis=1))
            cols = np.flatnonzero(~covered.all(axis=0))
            y0, y1 = int(rows[0]) // 2 * 2, min(h, -(-(int(rows[-1]) + 1) // 2) * 2)
            x0, x1 = int(cols[0]) // 2 * 2, min(w, -(-(int(cols[-1]) + 1) // 2) * 2)
            box = (x0, y0, x1, y1)
        self._uncovered = (key, box)
        return box

    def _scale(self, tile: _Tile, window: Window, picture: av.VideoFrame) -> None:
        sw, sh = picture.width, picture.height
        tile.source = picture
        if (sw, sh) == (window.width, window.height) and picture.format.name == "yuv420p":
            # already the window's size and the canvas's format (a 2x2 grid of 640x360 anchors in 1280x720):
            # pasted from the picture itself, no swscale pass and no copy
            tile.planes, tile.offset, tile.scaled = frame_planes(picture), (0, 0), picture
            return
        self.scaled += 1
        if window.render_mode == "fit":
            w, h, left, top = fit((sw, sh), (window.width, window.height))
            scaled = tile.reformatter.reformat(picture, width=w, height=h, format="yuv420p")
            tile.planes, tile.offset = frame_planes(scaled), (left, top)
        elif window.render_mode == "stretch":
            scaled = tile.reformatter.reformat(picture, width=window.width, height=window.height, format="yuv420p")
            tile.planes, tile.offset = frame_planes(scaled), (0, 0)
        else:  # crop: cover the window, keep the middle
            scale = max(window.width / sw, window.height / sh)
            w = max(window.width, -(-round(sw * scale) // 2) * 2)
            h = max(window.height, -(-round(sh * scale) // 2) * 2)
            scaled = tile.reformatter.reformat(picture, width=w, height=h, format="yuv420p")
            y, u, v = frame_planes(scaled)
            x0, y0 = (w - window.width) // 4 * 2, (h - window.height) // 4 * 2
            tile.planes = (y[y0:y0 + window.height, x0:x0 + window.width],
                           u[y0 // 2:(y0 + window.height) // 2, x0 // 2:(x0 + window.width) // 2],
                           v[y0 // 2:(y0 + window.height) // 2, x0 // 2:(x0 + window.width) // 2])
            tile.offset = (0, 0)
        tile.scaled = scaled

    def _placeholder(self, canvas: Planes, window: Window) -> None:
        if self.placeholder_image is not None:
            key = (window.width, window.height)
            picture = self._placeholders.get(key)
            if picture is None:
                try:
                    picture = Picture.from_image(self.placeholder_image, key, crop=True)
                except Exception:  # noqa: BLE001 - an image that does not decode: the colour instead
                    self.placeholder_image = None
                    return self._placeholder(canvas, window)
                self._placeholders[key] = picture
            paste(canvas, picture.planes, window.left, window.top, picture.alpha)
        else:
            fill(canvas, window.left, window.top, window.width, window.height, self.placeholder_colour)


class _Run:
    """Contiguous samples of one anchor from ``start``: ``buffer[:, head:head + length]``; blocks that
    continue it are copied in after them (the buffer grows by doubling, the consumed front is reused)."""

    __slots__ = ("buffer", "head", "length", "start")

    def __init__(self, start: int, samples: np.ndarray) -> None:
        self.start, self.head, self.length = start, 0, 0
        self.buffer = np.empty((samples.shape[0], max(8192, 2 * samples.shape[1])), np.float32)
        self.append(samples)

    @property
    def end(self) -> int:
        return self.start + self.length

    def append(self, samples: np.ndarray) -> None:
        n = samples.shape[1]
        if self.head + self.length + n > self.buffer.shape[1]:
            live = self.buffer[:, self.head:self.head + self.length]
            if self.length + n > self.buffer.shape[1] // 2:
                grown = np.empty((self.buffer.shape[0], 2 * (self.length + n)), np.float32)
                grown[:, :self.length] = live
                self.buffer = grown
            else:
                self.buffer[:, :self.length] = live
            self.head = 0
        at = self.head + self.length
        self.buffer[:, at:at + n] = samples
        self.length += n

    def view(self, a: int, b: int) -> np.ndarray:
        return self.buffer[:, self.head + a - self.start:self.head + b - self.start]

    def drop_before(self, position: int) -> None:
        cut = min(self.length, position - self.start)
        if cut > 0:
            self.start, self.head, self.length = self.start + cut, self.head + cut, self.length - cut


@dataclass
class _Lane:
    runs: list[_Run] = field(default_factory=list)
    end: int | None = None  # position after its last sample


class AudioMixer:
    """Anchors' samples (float, ``channels`` x n) on one sample clock, summed span by span."""

    def __init__(self, channels: int, *, tolerance: int = 0) -> None:
        self.channels, self.tolerance = channels, tolerance
        self.cursor: int | None = None  # position of the next sample to hand out
        self._lanes: dict[object, _Lane] = {}
        self.late_samples = 0  # how far runs that started after their span was mixed were moved

    def start(self, position: int) -> None:
        if self.cursor is None:
            self.cursor = position

    def place(self, lane: object, position: int, samples: np.ndarray) -> None:
        """``samples`` of ``lane`` whose first one belongs at ``position``."""
        n = samples.shape[1]
        if n == 0:
            return
        state = self._lanes.get(lane)
        if state is None:
            state = self._lanes[lane] = _Lane()
        if state.end is not None and position <= state.end + self.tolerance:
            position = state.end  # the run continues: sample-exact, whatever the jitter (never a sample lost)
        elif self.cursor is not None and position < self.cursor:
            self.late_samples += self.cursor - position  # a run that starts late is heard from now on
            position = self.cursor
        if state.runs and state.runs[-1].end == position:
            state.runs[-1].append(samples)
        else:
            state.runs.append(_Run(position, samples))
        state.end = position + n

    def remove(self, lane: object) -> None:
        self._lanes.pop(lane, None)

    def take(self, until: int) -> tuple[int, np.ndarray] | None:
        """The mix of ``[cursor, until)`` (silence where nobody spoke), or None when there is nothing to take."""
        if self.cursor is None or until <= self.cursor:
            return None
        start, count = self.cursor, until - self.cursor
        out = np.zeros((self.channels, count), np.float32)
        for state in self._lanes.values():
            for run in state.runs:
                a, b = max(run.start, start), min(run.end, until)
                if b > a:
                    out[:, a - start:b - start] += run.view(a, b)
                run.drop_before(until)
            if state.runs and state.runs[0].length == 0:
                state.runs = [run for run in state.runs if run.length]
        np.clip(out, -1.0, 1.0, out=out)
        self.cursor = until
        return start, out
