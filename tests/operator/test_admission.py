from capstan.operator.admission import QueueEntry, queue_position


def entries(n, admitted=0):
    return [QueueEntry(uid=f"u{i}", created=f"2026-01-01T00:00:{i:02d}Z", name=f"t{i}", admitted=i < admitted,
                       terminal=False) for i in range(n)]


def test_first_come_first_served_under_the_limit():
    es = entries(5, admitted=2)
    assert queue_position(es, "u2", 3, set()) == 0
    assert queue_position(es, "u3", 3, set()) == 1
    assert queue_position(es, "u4", 3, set()) == 2


def test_reservation_prevents_double_admission():
    es = entries(5, admitted=2)
    assert queue_position(es, "u3", 3, {"u2"}) == 1


def test_terminal_tasks_free_their_place():
    es = entries(3, admitted=3)
    es[0] = QueueEntry("u0", es[0].created, "t0", admitted=True, terminal=True)
    es.append(QueueEntry("u9", "2026-01-01T00:01:00Z", "t9", admitted=False, terminal=False))
    assert queue_position(es, "u9", 3, set()) == 0


def test_a_stale_view_cannot_admit_twice_or_give_the_place_away():
    from capstan.operator.admission import Quota

    quota = Quota(max_tasks=2)
    es = entries(4, admitted=1)
    assert quota.place(es, es[1]) == 0
    quota.admit("u1")  # admitted here; the watch still shows u1 waiting
    assert quota.place(es, es[1]) == 0  # still holds its place: nothing new
    assert quota.place(es, es[2]) == 1 and quota.place(es, es[3]) == 2  # the stale view gives u1's place to no one
    quota.end("u0")  # ended here, the watch still shows it running
    assert quota.place(es, es[2]) == 0


def test_a_task_the_index_has_not_seen_yet_still_queues():
    from capstan.operator.admission import Quota

    quota = Quota(max_tasks=1)
    es = entries(2, admitted=1)
    late = QueueEntry("u9", "2026-01-01T00:09:00Z", "t9", admitted=False, terminal=False)
    assert quota.place(es, late) == 2


def test_the_shown_place_is_rewritten_a_bounded_number_of_times():
    from capstan.operator.admission import place_worth_showing

    shown, writes = None, 0
    for place in range(900, 0, -1):  # a queue of 900 draining one by one
        if place_worth_showing(shown, place):
            shown, writes = place, writes + 1
    assert shown == 1 and writes == 4  # 900, 99, 9, 1
    assert not place_worth_showing(5, 7)  # never upwards


def test_the_worker_and_the_operator_agree_on_the_could_not_report_exit_code():
    from capstan.operator.phases import EXIT_REPORT_FAILED
    from capstan.worker import base

    assert base.EXIT_REPORT_FAILED == EXIT_REPORT_FAILED


def test_the_one_pass_place_agrees_with_the_sorted_queue():
    """`Quota.place` and `has_free_place_for_someone` count in one pass; the reference sorts the
    overlaid view, as the queue is defined (first come first served, the operator's marks applied)."""
    import random

    from capstan.operator.admission import Quota

    rng = random.Random(11)
    for _ in range(300):
        quota = Quota(max_tasks=rng.randint(0, 6))
        es = [QueueEntry(uid=f"u{i}", created=f"2026-01-01T00:00:{rng.randint(0, 5):02d}Z",
                         name=f"t{rng.randint(0, 9)}", admitted=rng.random() < 0.3, terminal=rng.random() < 0.2)
              for i in range(rng.randint(0, 12))]
        quota.admitted = {e.uid for e in es if rng.random() < 0.2}
        quota.ended = {e.uid for e in es if rng.random() < 0.1}
        view = quota.view(list(es))  # the reference drops the shown marks first, as `place` does
        free, waiting = quota.free(view), quota.waiting(view)
        assert quota.has_free_place_for_someone(es) == (free > 0 and bool(waiting))
        for e in es:
            i = next((n for n, w in enumerate(waiting) if w.uid == e.uid), None)
            expected = 0 if i is None or i < free else i - free + 1
            assert quota.place(es, e) == expected, (e, es, quota)
