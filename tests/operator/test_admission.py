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
