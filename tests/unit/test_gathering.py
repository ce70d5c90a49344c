"""fusion.judge.gathering: when a request is ready to fuse. Pure rules with an explicit clock."""

from datetime import UTC, datetime, timedelta

from fusion.judge.gathering import Gathering, Gatherings
from fusion_contracts import CallStatus, ChatMessage, ModelSpec, PanelAnswer, PanelPlan

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
PANEL_DEADLINE = T0 + timedelta(seconds=60)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def plan(
    request_id: str = "r-1", members: int = 3, quorum: int | None = None, grace_s: float = 2.0
) -> PanelPlan:
    return PanelPlan(
        request_id=request_id,
        messages=[ChatMessage(role="user", content="question")],
        members=[ModelSpec(model=f"m{index}") for index in range(members)],
        judge=ModelSpec(model="judge"),
        quorum=quorum if quorum is not None else members,
        grace_s=grace_s,
        panel_deadline_at=PANEL_DEADLINE,
        deadline_at=PANEL_DEADLINE + timedelta(seconds=30),
        submitted_at=T0,
        dispatched_at=T0,
    )


def answer(
    index: int, status: CallStatus = "ok", request_id: str = "r-1", text: str | None = None
) -> PanelAnswer:
    return PanelAnswer(
        request_id=request_id,
        member_index=index,
        model=f"m{index}",
        status=status,
        text=(text or f"answer {index}") if status == "ok" else None,
        error=None if status == "ok" else "boom",
        latency_ms=1.0,
        finished_at=T0,
    )


def gathering_with_plan(members: int = 3, quorum: int | None = None, grace_s: float = 2.0) -> Gathering:
    gathering = Gathering("r-1", first_seen=T0)
    assert gathering.add(plan(members=members, quorum=quorum, grace_s=grace_s), T0)
    return gathering


def test_no_release_without_a_plan_even_with_every_answer_and_past_any_deadline() -> None:
    gathering = Gathering("r-1", first_seen=T0)
    for index in range(3):
        gathering.add(answer(index), at(1))
    assert gathering.release_reason(at(10_000)) is None
    assert gathering.wake_at() is None
    assert gathering.quorum_at is None


def test_all_when_every_member_answered() -> None:
    gathering = gathering_with_plan(members=3)
    gathering.add(answer(0), at(1))
    gathering.add(answer(1), at(2))
    assert gathering.release_reason(at(2)) is None
    gathering.add(answer(2), at(3))
    assert gathering.release_reason(at(3)) == "all"


def test_all_when_every_member_answered_with_an_error() -> None:
    gathering = gathering_with_plan(members=2)
    gathering.add(answer(0, "error"), at(1))
    gathering.add(answer(1, "timeout"), at(1))
    assert gathering.ok_count == 0
    assert gathering.release_reason(at(1)) == "all"


def test_all_takes_precedence_over_deadline() -> None:
    gathering = gathering_with_plan(members=1)
    gathering.add(answer(0), at(100))
    assert gathering.release_reason(at(100)) == "all"


def test_plan_after_answers_releases_all() -> None:
    gathering = Gathering("r-1", first_seen=T0)
    gathering.add(answer(0), at(1))
    gathering.add(answer(1), at(1))
    assert gathering.release_reason(at(1)) is None
    gathering.add(plan(members=2), at(2))
    assert gathering.release_reason(at(2)) == "all"


def test_deadline_exactly_at_panel_deadline_not_before() -> None:
    gathering = gathering_with_plan(members=3)
    gathering.add(answer(0), at(1))
    just_before = PANEL_DEADLINE - timedelta(microseconds=1)
    assert gathering.release_reason(just_before) is None
    assert gathering.release_reason(PANEL_DEADLINE) == "deadline"
    assert gathering.release_reason(PANEL_DEADLINE + timedelta(seconds=5)) == "deadline"


def test_deadline_with_no_answers_at_all() -> None:
    gathering = gathering_with_plan(members=2)
    assert gathering.release_reason(PANEL_DEADLINE) == "deadline"


def test_quorum_only_after_grace() -> None:
    gathering = gathering_with_plan(members=3, quorum=2, grace_s=2.0)
    gathering.add(answer(0), at(1))
    assert gathering.quorum_at is None
    gathering.add(answer(1), at(5))
    assert gathering.quorum_at == at(5)
    assert gathering.release_reason(at(5)) is None
    assert gathering.release_reason(at(6.999)) is None
    assert gathering.release_reason(at(7)) == "quorum"


def test_quorum_with_zero_grace_releases_at_once() -> None:
    gathering = gathering_with_plan(members=3, quorum=1, grace_s=0.0)
    gathering.add(answer(2), at(4))
    assert gathering.release_reason(at(4)) == "quorum"


def test_errors_do_not_count_toward_quorum() -> None:
    gathering = gathering_with_plan(members=3, quorum=2, grace_s=1.0)
    gathering.add(answer(0, "error"), at(1))
    gathering.add(answer(1, "timeout"), at(1))
    gathering.add(answer(2), at(2))
    # every member answered: released as "all", but quorum (2 ok) was never reached
    assert gathering.ok_count == 1
    assert gathering.quorum_at is None


def test_errors_do_not_count_toward_quorum_before_all_are_in() -> None:
    gathering = gathering_with_plan(members=4, quorum=2, grace_s=1.0)
    gathering.add(answer(0, "error"), at(1))
    gathering.add(answer(1), at(1))
    assert gathering.quorum_at is None
    assert gathering.release_reason(at(30)) is None
    gathering.add(answer(2), at(31))
    assert gathering.quorum_at == at(31)
    assert gathering.release_reason(at(32)) == "quorum"


def test_quorum_instant_is_when_the_plan_arrives_if_answers_came_first() -> None:
    gathering = Gathering("r-1", first_seen=T0)
    gathering.add(answer(0), at(1))
    gathering.add(plan(members=3, quorum=1, grace_s=3.0), at(10))
    assert gathering.quorum_at == at(10)
    assert gathering.release_reason(at(12)) is None
    assert gathering.release_reason(at(13)) == "quorum"


def test_duplicate_answer_ignored_first_wins() -> None:
    gathering = gathering_with_plan(members=2)
    assert gathering.add(answer(0, text="first"), at(1)) is True
    assert gathering.add(answer(0, text="second"), at(2)) is False
    assert gathering.add(answer(0, "error"), at(3)) is False
    assert gathering.answers[0].text == "first"
    assert len(gathering.answers) == 1
    assert gathering.release_reason(at(3)) is None


def test_duplicate_plan_ignored_first_wins() -> None:
    gathering = gathering_with_plan(members=2)
    assert gathering.add(plan(members=5), at(1)) is False
    assert gathering.plan is not None
    assert len(gathering.plan.members) == 2


def test_duplicate_error_does_not_hide_a_later_ok_from_another_member() -> None:
    gathering = gathering_with_plan(members=2, quorum=1, grace_s=0.0)
    gathering.add(answer(0, "error"), at(1))
    gathering.add(answer(0), at(2))  # a retry's ok for the same member: ignored
    assert gathering.ok_count == 0
    gathering.add(answer(1), at(3))
    assert gathering.release_reason(at(3)) == "all"


def test_wake_at_is_the_panel_deadline_before_quorum() -> None:
    gathering = gathering_with_plan(members=3, quorum=2, grace_s=2.0)
    assert gathering.wake_at() == PANEL_DEADLINE
    gathering.add(answer(0), at(1))
    assert gathering.wake_at() == PANEL_DEADLINE


def test_wake_at_is_quorum_plus_grace_when_earlier() -> None:
    gathering = gathering_with_plan(members=3, quorum=1, grace_s=2.0)
    gathering.add(answer(0), at(5))
    assert gathering.wake_at() == at(7)


def test_wake_at_is_the_deadline_when_the_grace_would_end_later() -> None:
    gathering = gathering_with_plan(members=3, quorum=1, grace_s=30.0)
    gathering.add(answer(0), at(50))
    assert gathering.wake_at() == PANEL_DEADLINE


def test_gatherings_group_by_request_id() -> None:
    gatherings = Gatherings()
    first = gatherings.add(plan("a", members=1), T0)
    second = gatherings.add(answer(0, request_id="b"), T0)
    assert first is not None
    assert second is not None
    assert first is not second
    assert len(gatherings) == 2
    assert gatherings.get("a") is first
    assert gatherings.add(answer(0, request_id="a"), at(1)) is first
    assert first.release_reason(at(1)) == "all"


def test_a_released_request_is_fusing_then_done_and_its_messages_are_not_gathered() -> None:
    gatherings = Gatherings()
    gathering = gatherings.add(plan(members=2), T0)
    assert isinstance(gathering, Gathering)
    gatherings.add(answer(0), at(1))
    released = gatherings.release("r-1")
    assert released is gathering
    assert len(gatherings) == 0
    assert gatherings.get("r-1") is None
    assert gatherings.add(answer(1), at(2)) == "fusing"
    gatherings.published("r-1", forget_after=at(100))
    assert gatherings.add(answer(1), at(3)) == "done"
    assert gatherings.add(plan(members=2), at(3)) == "done"
    assert len(gatherings) == 0
    assert len(gathering.answers) == 1


def test_release_of_an_unknown_request_gathers_nothing() -> None:
    gatherings = Gatherings()
    assert gatherings.release("never-seen") is None
    assert not gatherings.is_fusing("never-seen")


def test_an_abandoned_request_is_gathered_again_from_scratch() -> None:
    """Its partition went to another judge while it was fused: should its messages come back, it
    is a fresh gathering, not a request already done."""
    gatherings = Gatherings()
    gatherings.add(plan(members=1), T0)
    gatherings.release("r-1")
    gatherings.abandon("r-1")
    again = gatherings.add(plan(members=1), at(1))
    assert isinstance(again, Gathering)
    assert again.plan is not None


def test_marked_released_requests_stop_their_fusion_and_are_ignored() -> None:
    gatherings = Gatherings()
    gatherings.add(plan("fusing-here", members=1), T0)
    gatherings.release("fusing-here")
    gatherings.add(plan("open-here", members=2), T0)

    stopped = gatherings.mark_released({"fusing-here", "open-here", "elsewhere"}, forget_after=at(10))

    assert stopped == {"fusing-here"}
    assert gatherings.get("open-here") is None
    for request_id in ("fusing-here", "open-here", "elsewhere"):
        assert gatherings.add(answer(0, request_id=request_id), at(1)) == "done"


def test_drop_stale_removes_only_old_planless_gatherings() -> None:
    gatherings = Gatherings()
    gatherings.add(answer(0, request_id="old-orphan"), T0)
    gatherings.add(answer(0, request_id="new-orphan"), at(100))
    gatherings.add(plan("old-planned"), T0)
    gatherings.add(answer(0, request_id="old-then-planned"), T0)
    gatherings.add(plan("old-then-planned"), at(100))

    dropped = gatherings.drop_stale(older_than=at(50))

    assert dropped == ["old-orphan"]
    assert gatherings.get("old-orphan") is None
    assert gatherings.get("new-orphan") is not None
    assert gatherings.get("old-planned") is not None
    assert gatherings.get("old-then-planned") is not None
    assert len(gatherings) == 3


def test_drop_stale_is_strictly_older() -> None:
    gatherings = Gatherings()
    gatherings.add(answer(0, request_id="x"), T0)
    assert gatherings.drop_stale(older_than=T0) == []
    assert gatherings.drop_stale(older_than=at(0.001)) == ["x"]


def test_dropped_request_is_not_remembered_as_released() -> None:
    gatherings = Gatherings()
    gatherings.add(answer(0, request_id="x"), T0)
    gatherings.drop_stale(older_than=at(1))
    assert gatherings.add(answer(0, request_id="x"), at(2)) is not None


def test_done_requests_are_remembered_by_time_not_by_count() -> None:
    gatherings = Gatherings()
    for index in range(1_000):
        request_id = f"r-{index}"
        gatherings.add(plan(request_id, members=1), T0)
        gatherings.release(request_id)
        gatherings.published(request_id, forget_after=at(60 if index % 2 else 120))
    assert gatherings.remembered == 1_000
    assert gatherings.add(answer(0, request_id="r-0"), at(1)) == "done"

    assert gatherings.expire(at(59)) == 0
    assert gatherings.expire(at(60)) == 500
    assert gatherings.add(answer(0, request_id="r-1"), at(61)) != "done"  # forgotten: gathered anew
    assert gatherings.add(answer(0, request_id="r-2"), at(61)) == "done"
    assert gatherings.expire(at(120)) == 500
    assert gatherings.remembered == 0


def test_only_planned_requests_count_as_held() -> None:
    """Answers whose plan never comes must not fill the judge (they are swept later)."""
    gatherings = Gatherings()
    gatherings.add(answer(0, request_id="orphan"), T0)
    gatherings.add(plan("a", members=2), T0)
    gatherings.add(plan("a", members=2), T0)  # a repeated plan counts once
    gatherings.add(answer(0, request_id="b"), T0)
    gatherings.add(plan("b", members=2), at(1))
    assert (len(gatherings), gatherings.planned) == (3, 2)
    gatherings.release("a")
    gatherings.drop("b")
    gatherings.drop_stale(older_than=at(5))
    assert (len(gatherings), gatherings.planned) == (0, 0)
