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


def test_a_reused_canvas_shows_the_background_where_a_window_went_away_and_nothing_stale() -> None:
    compositor = Compositor(SIZE, background=(0, 0, 255), reuse=True)
    feeds = [Feed("a"), Feed("b"), Feed("c"), Feed("d")]
    pictures = dict(zip(feeds, [solid(RED), solid(GREEN), solid(BLUE), solid(WHITE)], strict=True))
    for _ in range(Compositor.CANVASES):  # every canvas of the ring painted with four windows
        full = compositor.compose(grid(SIZE, feeds), pictures)
        assert close_to(rgb_at(full, 480, 270), WHITE)
    for _ in range(Compositor.CANVASES):  # d leaves: its quadrant is the background on every canvas again
        out = compositor.compose(grid(SIZE, feeds[:3]), pictures)
        assert close_to(rgb_at(out, 480, 270), (0, 0, 255)) and close_to(rgb_at(out, 480, 90), GREEN)
    out = compositor.compose([Window(Feed("a"), 100, 60, 200, 100)], pictures)  # one small window
    assert close_to(rgb_at(out, 200, 110), RED)
    for x, y in ((50, 30), (320, 180), (630, 350), (200, 200)):
        assert close_to(rgb_at(out, x, y), (0, 0, 255)), (x, y)


def test_a_see_through_placeholder_image_shows_the_background_under_it() -> None:
    image = np.zeros((36, 64, 4), np.uint8)  # fully transparent
    compositor = Compositor(SIZE, background=(0, 0, 255), reuse=True)
    compositor.set_placeholder((200, 200, 0), png(image))
    windows = grid(SIZE, [Feed("a")])
    for _ in range(Compositor.CANVASES + 1):
        compositor.compose(windows, {Feed("a"): solid(RED)})
    out = compositor.compose(windows, {Feed("a"): None})
    assert close_to(rgb_at(out, 320, 180), (0, 0, 255))


def test_the_mixer_keeps_every_sample_of_many_small_blocks_across_spans() -> None:
    mixer = AudioMixer(1, tolerance=480)
    mixer.start(0)
    ramp = np.arange(48000, dtype=np.float32).reshape(1, -1) / 48000
    got = []
    for i in range(100):  # 10 ms blocks, a span taken every 3 blocks, 60 ms behind
        mixer.place("a", i * 480, ramp[:, i * 480:(i + 1) * 480])
        mixer.place("b", 10_000_000 + i * 480, ramp[:, :480])  # far ahead: held, never heard here
        if i % 3 == 2 and i * 480 > 2880:
            taken = mixer.take(i * 480 - 2880)
            if taken is not None:
                got.append(taken[1])
    taken = mixer.take(100 * 480)
    assert taken is not None
    got.append(taken[1])
    assert np.array_equal(np.concatenate(got, axis=1), ramp[:, :100 * 480])


def test_a_picture_of_its_windows_size_is_pasted_without_a_scaling_pass() -> None:
    compositor = Compositor((1280, 720))
    windows = grid((1280, 720), [Feed(f"u{i}") for i in range(4)])
    colours = (RED, GREEN, BLUE, (200, 200, 0))
    pictures = {}
    for window, colour in zip(windows, colours, strict=True):
        pictures[window.feed] = av.VideoFrame.from_ndarray(
            np.full((window.height, window.width, 3), colour, np.uint8), format="rgb24").reformat(format="yuv420p")
    out = compositor.compose(windows, pictures)
    assert compositor.scaled == 0
    for window, colour in zip(windows, colours, strict=True):
        assert close_to(rgb_at(out, window.left + window.width // 2, window.top + window.height // 2), colour)
