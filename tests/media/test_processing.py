"""Scale: a picture fitted into the stored size keeps its aspect ratio."""

from __future__ import annotations

import pytest

from capstan.media.pipeline.processing import even, fit


@pytest.mark.parametrize(("source", "target", "placed"), [
    ((1280, 720), (1280, 720), (1280, 720, 0, 0)),
    ((640, 360), (1280, 720), (1280, 720, 0, 0)),  # same shape: scaled up, edge to edge
    ((640, 480), (1280, 720), (960, 720, 160, 0)),  # 4:3 in 16:9: pillarbox
    ((720, 1280), (1280, 720), (404, 720, 438, 0)),  # a phone turned upright
    ((1920, 1080), (640, 480), (640, 360, 0, 60)),  # letterbox
])
def test_fit(source: tuple[int, int], target: tuple[int, int], placed: tuple[int, int, int, int]) -> None:
    w, h, left, top = fit(source, target)
    assert (w, h, left, top) == placed
    assert w % 2 == h % 2 == left % 2 == top % 2 == 0 and left + w <= target[0] and top + h <= target[1]


def test_even() -> None:
    assert even((641, 361)) == (640, 360) and even((1, 1)) == (2, 2)
