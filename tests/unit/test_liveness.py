"""A service is stuck when work it must finish soon has waited too long, and only then."""

from fusion.liveness import Progress


def test_stuck_only_while_the_oldest_unfinished_work_is_older_than_the_limit() -> None:
    now = [0.0]
    progress = Progress(stuck_after_s=10, clock=lambda: now[0])
    assert progress.stuck() is None

    first = progress.begin("publishing answer")
    now[0] = 5.0
    second = progress.begin("publishing request")
    now[0] = 9.9
    assert progress.stuck() is None
    now[0] = 10.0
    assert progress.stuck() == "publishing answer unfinished for 10 s (2 waiting)"

    progress.end(first)  # the oldest is done: the next one is only 5 s old
    assert progress.stuck() is None
    now[0] = 15.0
    assert progress.stuck() == "publishing request unfinished for 10 s (1 waiting)"
    progress.end(second)
    assert progress.stuck() is None


def test_work_watched_by_a_block_ends_with_it_even_when_it_raises() -> None:
    now = [0.0]
    progress = Progress(stuck_after_s=1, clock=lambda: now[0])
    try:
        with progress.watching("publishing result"):
            now[0] = 2.0
            assert progress.stuck() is not None
            raise RuntimeError("broker away")
    except RuntimeError:
        pass
    assert progress.stuck() is None
