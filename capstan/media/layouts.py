"""Mixed-stream layouts: where each anchor's window goes on the canvas (seed 002, exact numbers).

Pure geometry, no I/O. A layout takes the canvas size and the feeds in room-entry order (an
anchor's camera ``main`` and, when it shares its screen, ``aux``; an anchor that publishes audio
only still has a feed, so it still gets a window) and returns :class:`Window` s in drawing order
(lowest z first). Positions are in canvas pixels, rounded to even numbers so every window starts
and ends on a yuv420p chroma sample (at most 1 px from the seed's exact fraction).

- **grid**: 1 → the canvas; 2 → halves, full height; 3-4 → 2x2; 5-9 → 3x3; 10-16 → 4x4;
  17-25 → 5x5; cells filled row by row. Up to 25.
- **floating**: the main anchor (given, else the first) fills the canvas; the others float over it
  from the bottom-left, left to right, rows upwards, in entry order. Up to 17 videos: tiles 23.5%
  of the canvas, 1.2% gaps and margins, 4 per row; more: 18.8%, 1% gaps and margins, 5 per row.
  Up to 25.
- **screenShare**: the main anchor large on the left (the canvas background when none is given or
  it is absent: its window is then not drawn), the others on the right top to bottom in up to two
  columns of 8, then along the bottom from the left. The sizes depend on the number of videos
  (the large one included): ≤5 small 1/5 W x 1/4 H, large 4/5 W; 6-7 1/7 W x 1/6 H, large 6/7 W;
  8-9 1/9 W x 1/8 H, large 8/9 W; 10-17 1/10 W x 1/8 H, large 4/5 W; >17 the same small size,
  large 4/5 W x 7/8 H. Up to 24. The main anchor's screen share (``aux``) is the large picture
  when it has one.
- **custom**: the given regions (``MixLayoutList``), clipped to the canvas, by z-order; a region
  whose feed is not in the room is not drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

MAX_GRID = 25
MAX_FLOATING = 25
MAX_SCREEN_SHARE = 24
MAIN, AUX = "main", "aux"


@dataclass(frozen=True)
class Feed:
    """One anchor's video stream (``main`` camera or ``aux`` screen share)."""

    user_id: str
    media_id: str = MAIN


@dataclass(frozen=True)
class Window:
    feed: Feed
    left: int
    top: int
    width: int
    height: int
    z: int = 0
    render_mode: str = "crop"  # crop (fill, cut the overflow), fit (whole picture, bars) or stretch

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


@dataclass(frozen=True)
class Region:
    """A custom-layout window as the task gives it (canvas pixels)."""

    feed: Feed
    left: int
    top: int
    width: int
    height: int
    z: int = 1
    render_mode: str = "crop"


def even(value: Fraction | float | int) -> int:
    """Nearest even integer (yuv420p: chroma is sampled every 2 pixels)."""
    return round(Fraction(value) / 2) * 2


def _box(feed: Feed, left: Fraction, top: Fraction, width: Fraction, height: Fraction, z: int = 0) -> Window:
    x0, y0 = even(left), even(top)
    return Window(feed, x0, y0, even(left + width) - x0, even(top + height) - y0, z)


def grid_dimensions(count: int) -> tuple[int, int]:
    """(columns, rows) of the grid for ``count`` videos."""
    if count <= 1:
        return 1, 1
    if count == 2:
        return 2, 1
    for side in (2, 3, 4, 5):
        if count <= side * side:
            return side, side
    return 5, 5


def grid(size: tuple[int, int], feeds: Sequence[Feed]) -> list[Window]:
    feeds = list(feeds)[:MAX_GRID]
    if not feeds:
        return []
    w, h = size
    cols, rows = grid_dimensions(len(feeds))
    cw, ch = Fraction(w, cols), Fraction(h, rows)
    return [_box(f, (i % cols) * cw, (i // cols) * ch, cw, ch) for i, f in enumerate(feeds)]


def floating_tiles(count: int) -> tuple[Fraction, Fraction, int]:
    """(tile side, gap and margin, tiles per row) as fractions of the canvas, for ``count`` videos."""
    if count <= 17:
        return Fraction(235, 1000), Fraction(12, 1000), 4
    return Fraction(188, 1000), Fraction(10, 1000), 5


def _main_first(feeds: Sequence[Feed], main_user: str | None) -> tuple[Feed | None, list[Feed]]:
    """The large feed (the main user's screen share if it has one, else its camera) and the rest."""
    if main_user is None:
        return None, list(feeds)
    mine = [f for f in feeds if f.user_id == main_user]
    if not mine:
        return None, list(feeds)
    large = next((f for f in mine if f.media_id == AUX), mine[0])
    return large, [f for f in feeds if f != large]


def floating(size: tuple[int, int], feeds: Sequence[Feed], main_user: str | None = None) -> list[Window]:
    feeds = list(feeds)
    large, rest = _main_first(feeds, main_user)
    if large is None:
        if not feeds:
            return []
        large, rest = feeds[0], feeds[1:]
    rest = rest[:MAX_FLOATING - 1]
    w, h = size
    windows = [Window(large, 0, 0, w, h, 0)]
    tile, gap, per_row = floating_tiles(1 + len(rest))
    for i, feed in enumerate(rest):
        col, row = i % per_row, i // per_row  # row 0 is the bottom one
        left = (gap + col * (tile + gap)) * w
        top = (1 - gap - tile - row * (tile + gap)) * h
        windows.append(_box(feed, left, top, tile * w, tile * h, 1))
    return windows


def screen_share_sizes(count: int) -> tuple[Fraction, Fraction, Fraction, Fraction]:
    """(small width, small height, large width, large height) as fractions of the canvas for
    ``count`` videos, the large one included."""
    if count <= 5:
        return Fraction(1, 5), Fraction(1, 4), Fraction(4, 5), Fraction(1)
    if count <= 7:
        return Fraction(1, 7), Fraction(1, 6), Fraction(6, 7), Fraction(1)
    if count <= 9:
        return Fraction(1, 9), Fraction(1, 8), Fraction(8, 9), Fraction(1)
    if count <= 17:
        return Fraction(1, 10), Fraction(1, 8), Fraction(4, 5), Fraction(1)
    return Fraction(1, 10), Fraction(1, 8), Fraction(4, 5), Fraction(7, 8)


def screen_share(size: tuple[int, int], feeds: Sequence[Feed], main_user: str | None = None) -> list[Window]:
    large, rest = _main_first(feeds, main_user)
    rest = rest[:MAX_SCREEN_SHARE - 1]
    if large is None and not rest:
        return []
    w, h = size
    sw, sh, lw, lh = screen_share_sizes(1 + len(rest))
    windows = [] if large is None else [_box(large, Fraction(0), Fraction(0), lw * w, lh * h)]
    per_column = int(1 / sh)  # 4, 6 or 8
    for i, feed in enumerate(rest):
        if i < 2 * per_column:
            column, row = i // per_column, i % per_column
            left, top = lw + column * sw, row * sh
        else:  # along the bottom, under the large picture, from the left
            left, top = (i - 2 * per_column) * sw, lh
        windows.append(_box(feed, left * w, top * h, sw * w, sh * h, 1))
    return windows


def custom(size: tuple[int, int], feeds: Sequence[Feed], regions: Sequence[Region]) -> list[Window]:
    present = set(feeds)
    w, h = size
    windows = []
    for region in sorted(regions, key=lambda r: r.z):  # stable: equal z keeps the given order
        if region.feed not in present:
            continue
        x0, y0 = min(max(0, region.left - region.left % 2), w), min(max(0, region.top - region.top % 2), h)
        x1, y1 = min(w, even(region.left + region.width)), min(h, even(region.top + region.height))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            windows.append(Window(region.feed, x0, y0, x1 - x0, y1 - y0, region.z, region.render_mode))
    return windows


def arrange(mode: str, size: tuple[int, int], feeds: Sequence[Feed], *, main_user: str | None = None,
            regions: Sequence[Region] = ()) -> list[Window]:
    """The windows of ``mode`` (grid, floating, screenShare, custom) in drawing order."""
    if mode == "floating":
        return floating(size, feeds, main_user)
    if mode == "screenShare":
        return screen_share(size, feeds, main_user)
    if mode == "custom":
        return custom(size, feeds, regions)
    return grid(size, feeds)
