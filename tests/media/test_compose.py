"""Compositor and audio mixer: the right colour in the right window, every sample in the mix."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from capstan.media.layouts import Feed, Window, grid
from capstan.media.pipeline.compose import AudioMixer, Compositor, Overlay, Picture, frame_planes, rgb_to_yuv

SIZE = (640, 360)
RED, GREEN, BLUE, WHITE = (220, 30, 30), (30, 200, 40), (30, 40, 220), (255, 255, 255)


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (320, 180)) -> av.VideoFrame:
    w, h = size
    return av.VideoFrame.from_ndarray(np.full((h, w, 3), rgb, np.uint8), format="rgb24").reformat(format="yuv420p")


def rgb_at(frame: av.VideoFrame, x: int, y: int) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")[y, x].astype(int)


def close_to(pixel: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.abs(pixel - np.array(rgb)).max() <= tol)


def test_grid_of_four_puts_each_anchors_colour_in_its_window_on_the_background() -> None:
    feeds = [Feed("a"), Feed("b"), Feed("c"), Feed("d")]
    pictures = dict(zip(feeds, [solid(RED), solid(GREEN), solid(BLUE), solid(WHITE, (64, 48))], strict=True))
    out = Compositor(SIZE, background=(0, 0, 0)).compose(grid(SIZE, feeds), pictures)
    assert out.format.name == "yuv420p" and (out.width, out.height) == SIZE
    for (x, y), rgb in zip([(160, 90), (480, 90), (160, 270), (480, 270)], [RED, GREEN, BLUE, WHITE], strict=True):
        assert close_to(rgb_at(out, x, y), rgb), (x, y)


def test_crop_fills_the_window_and_fit_letterboxes_it() -> None:
    wide = solid(RED, (640, 180))  # 32:9 into a 16:9 window
    window = Window(Feed("a"), 0, 0, 320, 180, render_mode="crop")
    out = Compositor(SIZE, background=(0, 0, 255)).compose([window], {Feed("a"): wide})
    assert close_to(rgb_at(out, 160, 2), RED) and close_to(rgb_at(out, 160, 177), RED)
    fitted = Window(Feed("a"), 0, 0, 320, 180, render_mode="fit")
    out = Compositor(SIZE, background=(0, 0, 255)).compose([fitted], {Feed("a"): wide})
    assert close_to(rgb_at(out, 160, 90), RED)
    assert close_to(rgb_at(out, 160, 5), (0, 0, 0))  # the bars are black, not the background
    assert close_to(rgb_at(out, 500, 300), (0, 0, 255))


def test_higher_z_is_on_top_and_an_audio_only_anchor_gets_the_placeholder() -> None:
    compositor = Compositor(SIZE)
    compositor.set_placeholder((200, 200, 0))
    windows = [Window(Feed("a"), 0, 0, 640, 360, 1), Window(Feed("b"), 100, 100, 200, 100, 2),
               Window(Feed("c"), 400, 200, 100, 100, 3)]
    out = compositor.compose(windows, {Feed("a"): solid(RED), Feed("b"): solid(GREEN), Feed("c"): None})
    assert close_to(rgb_at(out, 200, 150), GREEN)
    assert close_to(rgb_at(out, 50, 50), RED)
    assert close_to(rgb_at(out, 450, 250), (200, 200, 0))


def test_an_unchanged_picture_is_not_scaled_again() -> None:
    compositor = Compositor(SIZE)
    windows = grid(SIZE, [Feed("a"), Feed("b")])
    a, b = solid(RED), solid(GREEN)
    compositor.compose(windows, {Feed("a"): a, Feed("b"): b})
    compositor.compose(windows, {Feed("a"): a, Feed("b"): solid(BLUE)})
    assert compositor.scaled == 3


def png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="image2pipe") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = rgba.shape[1], rgba.shape[0], "rgba"
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def test_a_png_watermark_is_blended_with_its_alpha() -> None:
    image = np.zeros((40, 80, 4), np.uint8)
    image[:, :40] = (255, 255, 255, 255)  # opaque white on the left
    image[:, 40:] = (255, 255, 255, 0)  # transparent on the right
    picture = Picture.from_image(png(image), (80, 40))
    out = Compositor(SIZE, background=(0, 0, 255)).compose([], {}, [Overlay(picture, 100, 60)])
    assert close_to(rgb_at(out, 110, 80), WHITE)
    assert close_to(rgb_at(out, 170, 80), (0, 0, 255))


def test_rgb_to_yuv_agrees_with_swscale() -> None:
    y, u, v = (p[0, 0] for p in frame_planes(solid(GREEN)))
    assert np.abs(np.array([y, u, v], int) - np.array(rgb_to_yuv(GREEN))).max() <= 1


def test_the_mixer_sums_every_lane_sample_exact_through_jitter_and_late_samples() -> None:
    mixer = AudioMixer(1, tolerance=48)
    mixer.start(1000)
    ones = np.full((1, 480), 0.25, np.float32)
    for i in range(10):
        mixer.place("a", 1000 + i * 480 + (7, -5)[i % 2] * (i > 0), ones)  # jittered positions: one run
        mixer.place("b", 1000 + i * 480, ones * 2)
    start, block = mixer.take(1000 + 4800)
    assert start == 1000 and block.shape == (1, 4800)
    assert np.allclose(block, 0.75)
    mixer.place("a", 1000, ones)  # a capture clock stepping back: the run goes on, nothing lost
    mixer.place("c", 900, ones)  # a new anchor whose first samples are late: heard from the cursor on
    assert mixer.take(1000 + 4800) is None
    start, block = mixer.take(1000 + 4800 + 480)
    assert start == 5800 and np.allclose(block, 0.5) and mixer.late_samples == 4900


@pytest.mark.parametrize("loud", [0.9])
def test_the_mix_is_clipped(loud: float) -> None:
    mixer = AudioMixer(1)
    mixer.start(0)
    for lane in "abc":
        mixer.place(lane, 0, np.full((1, 100), loud, np.float32))
    assert mixer.take(100)[1].max() == 1.0  # type: ignore[index]
