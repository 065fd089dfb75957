"""The audio schedule (capstan/pusher/pacing.py): where each block of sound lands in a backend's
own real-time queue, modelled on the wall clock — no stack needed."""

from __future__ import annotations

from capstan.pusher.pacing import AudioSchedule

RATE = 48000
BLOCK = RATE // 10  # 100 ms


def schedule() -> AudioSchedule:
    return AudioSchedule(RATE, lead=0.05, cushion=0.25)


def test_blocks_written_on_time_go_in_as_they_are_and_keep_the_cushion() -> None:
    s = schedule()
    due = 1000.0
    assert s.place(due, BLOCK, s.write_at(due) + 0.25) == (0, 0)  # the first one, as soon as it was read
    for k in range(1, 50):
        d = due + k * 0.1
        now = s.write_at(d)
        assert s.place(d, BLOCK, now) == (0, 0), k
        assert abs((s.tail - now) - (0.25 + 0.1)) < 1e-6  # cushion + the block just written
    assert s.skipped == s.padded == 0


def test_a_stall_shorter_than_the_cushion_changes_nothing() -> None:
    s = schedule()
    s.place(1000.0, BLOCK, 1000.0 - 0.05)
    for k in range(1, 10):
        d = 1000.0 + k * 0.1
        late = 0.2 if k == 5 else 0.0
        assert s.place(d, BLOCK, s.write_at(d) + late) == (0, 0), k


def test_a_stall_longer_than_the_cushion_drops_the_overdue_sound_and_stays_in_step() -> None:
    s = schedule()
    s.place(1000.0, BLOCK, 1000.0 - 0.05)
    for k in range(1, 5):
        d = 1000.0 + k * 0.1
        s.place(d, BLOCK, s.write_at(d))
    d = 1000.5
    now = d - 0.05 + 0.062  # the queue ran dry: this block would leave 62 ms late
    silence, skip = s.place(d, BLOCK, now)
    assert silence == 0 and skip == 3360  # 70 ms: whole 10 ms units, at least the lateness
    assert abs(s.tail - (now + (BLOCK - skip) / RATE)) < 1e-9
    nxt = d + 0.1
    assert s.place(nxt, BLOCK, s.write_at(nxt)) == (0, 0)  # back in step
    assert s.place(nxt + 0.1, BLOCK, nxt + 0.25) == (0, BLOCK)  # a block entirely overdue goes


def test_an_early_block_waits_behind_silence_up_to_its_time() -> None:
    s = schedule()
    d = 1000.0
    assert s.place(d, BLOCK, d - 0.3) == (RATE // 4, 0)  # an empty queue: the cushion is silence
    s = schedule()
    s.place(d, BLOCK, d - 0.05)
    for k in range(1, 3):
        s.place(d + k * 0.1, BLOCK, s.write_at(d + k * 0.1))
    gap = d + 0.3 + 0.05  # the next run starts 50 ms after this one's end
    assert s.place(gap, BLOCK, s.write_at(gap)) == (2400, 0)
