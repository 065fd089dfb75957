"""Layout geometry against seed 002's numbers, for every count from 1 to 25."""

from __future__ import annotations

import pytest

from capstan.media.layouts import Feed, Region, Window, arrange, custom, floating, grid, screen_share

SIZE = (1280, 720)
W, H = SIZE


def feeds(n: int) -> list[Feed]:
    return [Feed(f"u{i}") for i in range(n)]


def near(window: Window, left: float, top: float, width: float, height: float) -> None:
    """Within 1 px of the seed's fractions of the canvas (windows are even-aligned), on every edge."""
    got = (window.left, window.top, window.right, window.bottom)
    want = (left * W, top * H, (left + width) * W, (top + height) * H)
    assert all(abs(g - x) <= 1 for g, x in zip(got, want, strict=True)), (window, want)


def no_overlap(windows: list[Window]) -> None:
    for i, a in enumerate(windows):
        for b in windows[i + 1:]:
            assert a.right <= b.left or b.right <= a.left or a.bottom <= b.top or b.bottom <= a.top, (a, b)


SEED_GRID = {1: (1, 1), 2: (2, 1), 3: (2, 2), 4: (2, 2), **{n: (3, 3) for n in range(5, 10)},
             **{n: (4, 4) for n in range(10, 17)}, **{n: (5, 5) for n in range(17, 26)}}


@pytest.mark.parametrize("n", range(1, 26))
def test_grid_splits_the_canvas_evenly_as_the_seed_says(n: int) -> None:
    windows = grid(SIZE, feeds(n))
    cols, rows = SEED_GRID[n]
    assert [w.feed for w in windows] == feeds(n)
    for i, window in enumerate(windows):
        near(window, (i % cols) / cols, (i // cols) / rows, 1 / cols, 1 / rows)
    no_overlap(windows)


def test_grid_shows_25_at_most_and_nothing_for_nobody() -> None:
    assert len(grid(SIZE, feeds(30))) == 25
    assert grid(SIZE, []) == []


@pytest.mark.parametrize("n", range(1, 26))
def test_floating_fills_with_the_first_and_floats_the_rest_from_the_bottom_left(n: int) -> None:
    windows = floating(SIZE, feeds(n))
    assert windows[0] == Window(Feed("u0"), 0, 0, W, H, 0)
    tile, gap, per_row = (0.235, 0.012, 4) if n <= 17 else (0.188, 0.01, 5)
    small = windows[1:]
    assert [w.feed for w in small] == feeds(n)[1:]
    for i, window in enumerate(small):
        col, row = i % per_row, i // per_row
        near(window, gap + col * (tile + gap), 1 - gap - tile - row * (tile + gap), tile, tile)
        assert window.z > windows[0].z
    no_overlap(small)
    if small:  # the margins: the last column's right edge and the top row's top edge
        assert all(w.right <= W - gap * W + 1 and w.top >= gap * H - 1 for w in small)


def test_floating_puts_the_given_anchor_full_and_keeps_entry_order_for_the_others() -> None:
    windows = floating(SIZE, feeds(4), main_user="u2")
    assert windows[0].feed == Feed("u2") and (windows[0].width, windows[0].height) == SIZE
    assert [w.feed.user_id for w in windows[1:]] == ["u0", "u1", "u3"]
    # a main user who is not there: the first anchor is large
    assert floating(SIZE, feeds(2), main_user="gone")[0].feed == Feed("u0")


SEED_SCREEN = {  # videos -> (small w, small h, large w, large h)
    **{n: (1 / 5, 1 / 4, 4 / 5, 1) for n in range(1, 6)}, **{n: (1 / 7, 1 / 6, 6 / 7, 1) for n in (6, 7)},
    **{n: (1 / 9, 1 / 8, 8 / 9, 1) for n in (8, 9)}, **{n: (1 / 10, 1 / 8, 4 / 5, 1) for n in range(10, 18)},
    **{n: (1 / 10, 1 / 8, 4 / 5, 7 / 8) for n in range(18, 25)},
}


@pytest.mark.parametrize("n", range(1, 25))
def test_screen_share_sizes_and_places_every_count_as_the_seed_says(n: int) -> None:
    sw, sh, lw, lh = SEED_SCREEN[n]
    windows = screen_share(SIZE, feeds(n), main_user="u0")
    assert windows[0].feed == Feed("u0")
    near(windows[0], 0, 0, lw, lh)
    small = windows[1:]
    assert [w.feed for w in small] == feeds(n)[1:]
    per_column = round(1 / sh)
    for i, window in enumerate(small):
        if i < 2 * per_column:  # right side, top to bottom, up to two columns of 8
            near(window, lw + (i // per_column) * sw, (i % per_column) * sh, sw, sh)
        else:  # then along the bottom, left to right
            near(window, (i - 2 * per_column) * sw, lh, sw, sh)
        assert window.right <= W and window.bottom <= H
    no_overlap(windows)


def test_screen_share_without_a_main_anchor_leaves_the_large_window_to_the_background() -> None:
    windows = screen_share(SIZE, feeds(3))
    assert [w.feed.user_id for w in windows] == ["u0", "u1", "u2"]
    assert all(w.left >= 4 / 5 * W - 1 for w in windows)  # nobody large on the left
    assert len(screen_share(SIZE, feeds(30), main_user="u0")) == 24


def test_screen_share_shows_the_main_anchors_screen_large_and_its_camera_small() -> None:
    f = [Feed("u0"), Feed("u1"), Feed("u1", "aux")]
    windows = screen_share(SIZE, f, main_user="u1")
    assert windows[0].feed == Feed("u1", "aux")
    assert [w.feed for w in windows[1:]] == [Feed("u0"), Feed("u1")]


def test_custom_regions_are_drawn_by_z_order_clipped_even_and_only_for_anchors_present() -> None:
    regions = [Region(Feed("a"), 0, 0, 1280, 720, z=1), Region(Feed("c"), 100, 100, 300, 200, z=3, render_mode="fit"),
               Region(Feed("b"), 41, 61, 401, 301, z=2), Region(Feed("gone"), 0, 0, 10, 10, z=5),
               Region(Feed("b", "aux"), 1200, 700, 400, 400, z=4)]
    windows = custom(SIZE, [Feed("a"), Feed("b"), Feed("c"), Feed("b", "aux")], regions)
    assert [w.feed for w in windows] == [Feed("a"), Feed("b"), Feed("c"), Feed("b", "aux")]
    assert windows[1] == Window(Feed("b"), 40, 60, 402, 302, 2, "crop")
    assert windows[2].render_mode == "fit"
    assert (windows[3].right, windows[3].bottom) == SIZE  # clipped to the canvas
    assert arrange("custom", SIZE, [Feed("a")], regions=regions) == [Window(Feed("a"), 0, 0, 1280, 720, 1, "crop")]


def test_arrange_defaults_to_grid() -> None:
    assert arrange("grid", SIZE, feeds(2)) == grid(SIZE, feeds(2))
