"""The shared audio framer: fixed-size frames on a sample clock, silence in holes, overlaps dropped."""

from __future__ import annotations

import numpy as np
import pytest

from capstan.media.audio import AudioChunk, AudioFramer


def ramp(start: int, count: int, channels: int = 1) -> np.ndarray:
    """Samples whose value is their own position, so where each one ended up can be read back."""
    return np.tile(np.arange(start, start + count, dtype=np.float32), (channels, 1))


def joined(chunks: list[AudioChunk]) -> tuple[int, np.ndarray]:
    return chunks[0].pts, np.concatenate([c.samples for c in chunks], axis=1)


def test_fixed_size_frames_with_exact_timestamps() -> None:
    framer = AudioFramer(4, 2)
    chunks = [c for part in (ramp(10, 3, 2), ramp(13, 6, 2)) for c in framer.place(int(part[0, 0]), part)]
    assert [(c.pts, c.samples.shape) for c in chunks] == [(10, (2, 4)), (14, (2, 4))]
    assert chunks[0].new_run and not chunks[1].new_run
    assert framer.cursor == 19
    [last] = framer.flush(pad=True)
    assert last.pts == 18 and last.samples.tolist() == [[18, 0, 0, 0]] * 2
    assert all(c.samples.flags["C_CONTIGUOUS"] for c in chunks)


def test_a_hole_is_filled_with_silence() -> None:
    framer = AudioFramer(4, 1)
    chunks = [*framer.place(0, ramp(0, 6)), *framer.place(13, ramp(13, 3)), *framer.flush(pad=False)]
    pts, samples = joined(chunks)
    assert pts == 0 and all(c.samples.shape[1] == 4 for c in chunks[:-1])
    assert samples[0].tolist() == [0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 13, 14, 15]


def test_a_long_hole_needs_no_memory_of_its_length() -> None:
    framer = AudioFramer(1152, 1)
    list(framer.place(0, ramp(0, 10)))
    count = 0
    for chunk in framer.place(48000 * 3600, ramp(0, 1)):  # an hour later
        count += 1
        assert chunk.samples.shape == (1, 1152)
    assert framer.cursor == 48000 * 3600 + 1
    assert count == (48000 * 3600) // 1152


def test_a_hole_without_fill_is_a_new_run() -> None:
    framer = AudioFramer(4, 1, fill_gaps=False, tolerance=2)
    first = list(framer.place(0, ramp(0, 6)))
    after = list(framer.place(20, ramp(20, 8)))
    assert [(c.pts, c.new_run) for c in first] == [(0, True)]
    # the pending two samples are padded to a whole frame, then the run continues at 20
    assert [(c.pts, c.new_run) for c in after] == [(4, False), (20, True), (24, False)]
    assert after[0].samples.tolist() == [[4, 5, 0, 0]]


def test_an_overlap_is_dropped_and_jitter_ignored() -> None:
    framer = AudioFramer(4, 1, tolerance=1)
    chunks = [*framer.place(0, ramp(0, 8)), *framer.place(5, ramp(5, 7)), *framer.place(13, ramp(12, 4)),
              *framer.flush(pad=False)]
    _, samples = joined(chunks)
    # 5..7 were already placed: dropped; 12 placed at 13 is within the tolerance: it continues the run
    assert samples[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]


def test_start_and_limit_give_an_exact_length() -> None:
    framer = AudioFramer(4, 1, start=0, limit=10)
    chunks = [*framer.place(3, ramp(3, 20)), *framer.fill_to(10), *framer.flush(pad=False)]
    pts, samples = joined(chunks)
    assert pts == 0 and samples[0].tolist() == [0, 0, 0, 3, 4, 5, 6, 7, 8, 9]


def test_live_capture_keeps_every_sample_when_the_clock_steps_back() -> None:
    framer = AudioFramer(4, 1, fill_gaps=False, trim_overlaps=False, tolerance=1)
    chunks = [*framer.place(0, ramp(0, 8)), *framer.place(5, ramp(8, 4)), *framer.flush(pad=False)]
    _, samples = joined(chunks)
    assert samples[0].tolist() == list(range(12))


@pytest.mark.parametrize("pieces", [[480] * 10, [1, 1023, 1024, 2048, 7], [4800]])
def test_any_input_sizes_give_the_same_frames(pieces: list[int]) -> None:
    framer = AudioFramer(1024, 1)
    position, chunks = 0, []
    for size in pieces:
        chunks += framer.place(position, ramp(position, size))
        position += size
    assert [c.pts for c in chunks] == list(range(0, sum(pieces) // 1024 * 1024, 1024))
    _, samples = joined(chunks)
    assert samples[0].tolist() == list(range(len(samples[0])))
