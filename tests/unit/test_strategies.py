"""The judge's strategies (synthesize, synthesize-once, select, vote) and the agreement early exit,
through `Judge.fuse` with a scripted judge model."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fusion.judge.fusing import ONCE_TOKENS_FACTOR, Judge
from fusion.models import ModelReply, ModelUnavailable, OnDelta
from fusion_contracts import ChatMessage, ModelSpec, PanelAnswer, PanelPlan, Strategy, Usage

MEMBERS = ["alpha", "beta", "gamma", "delta"]
USAGE = Usage(input_tokens=100, output_tokens=10)


@dataclass
class Seen:
    spec: ModelSpec
    messages: list[ChatMessage]
    json_schema: dict[str, Any] | None


@dataclass
class ScriptedJudge:
    """Replies by what is asked: a choice (`best` in the schema), a one-pass reply (`answer`), an
    analysis (any other schema) or a final answer (no schema). `choose` names an answer by the
    text it holds, since the judge sees the answers shuffled."""

    choose: str | None = None
    correction: str = ""
    once: str | None = None
    fail: Exception | None = None
    calls: list[Seen] = field(default_factory=list)

    async def complete(
        self,
        spec: ModelSpec,
        messages: list[ChatMessage],
        json_schema: dict[str, Any] | None = None,
        *,
        stop: Sequence[str] = (),
        on_delta: OnDelta | None = None,
        deadline: float | None = None,
    ) -> ModelReply:
        self.calls.append(Seen(spec, messages, json_schema))
        if self.fail is not None:
            raise self.fail
        properties = (json_schema or {}).get("properties", {})
        if "best" in properties:
            text = json.dumps({"best": self._label(messages), "reason": "r", "correction": self.correction})
        elif "answer" in properties:
            text = self.once or json.dumps({"consensus": ["Answer 1 agrees"], "answer": 'One "pass".'})
        elif json_schema is not None:
            text = json.dumps({"consensus": ["Answer 2 agrees"]})
        else:
            text = "Written by the judge."
        if on_delta is not None:
            for start in range(0, len(text), 4):
                await on_delta(text[start : start + 4])
        return ModelReply(text=text, usage=USAGE)

    def _label(self, messages: list[ChatMessage]) -> int:
        if self.choose is None:
            return 0
        fences = messages[1].content.split("<answer-")[1:]
        return next(n for n, fence in enumerate(fences, 1) if self.choose in fence)


def plan(strategy: Strategy, members: int = 3, analysis_temperature: float = 0.0) -> PanelPlan:
    now = datetime.now(UTC)
    return PanelPlan(
        request_id="r-1",
        messages=[ChatMessage(role="user", content="Capital of France?")],
        members=[ModelSpec(model=MEMBERS[i]) for i in range(members)],
        judge=ModelSpec(model="judge", temperature=0.7, max_tokens=100),
        quorum=1,
        grace_s=1.0,
        panel_deadline_at=now + timedelta(seconds=30),
        deadline_at=now + timedelta(seconds=60),
        submitted_at=now,
        dispatched_at=now,
        strategy=strategy,
        analysis_temperature=analysis_temperature,
    )


def answers(
    *texts: str | None, status: str = "error", error_status: int | None = None
) -> dict[int, PanelAnswer]:
    return {
        index: PanelAnswer(
            request_id="r-1",
            member_index=index,
            model=MEMBERS[index],
            status="ok" if text is not None else status,
            text=text,
            error=None if text is not None else "failed",
            error_status=None if text is not None else error_status,
            latency_ms=10.0,
            finished_at=datetime.now(UTC),
        )
        for index, text in enumerate(texts)
    }


async def fuse(judge: ScriptedJudge, strategy: Strategy, *texts: str | None, **plan_fields: Any) -> Any:
    plan_fields.setdefault("members", len(texts))
    return await Judge(judge).fuse(plan(strategy, **plan_fields), answers(*texts), "all", datetime.now(UTC))


# --- vote ------------------------------------------------------------------------------------------


async def test_vote_majority_wins_without_a_judge_call() -> None:
    judge = ScriptedJudge()
    result = await fuse(judge, "vote", "Lyon", "Paris", "The capital is Paris.")
    assert judge.calls == []
    assert (result.status, result.answer_source, result.selected_member) == ("complete", "vote", 1)
    assert result.answer == "Paris"
    assert result.strategy == "vote"
    assert result.judge.calls == 0


async def test_vote_tie_is_broken_by_the_judge_among_the_tied_answers_only() -> None:
    judge = ScriptedJudge(choose="Rome")
    result = await fuse(judge, "vote", "Paris", "Rome", "Paris, France", "Rome, Italy")
    assert result.answer == "Rome"
    assert (result.answer_source, result.selected_member, result.status) == ("vote", 1, "complete")
    (call,) = judge.calls
    assert call.spec.temperature == 0.0  # a decision runs at the analysis temperature
    assert call.messages[1].content.count("<answer-") == 2  # one representative per tied group


async def test_vote_tie_with_a_failed_judge_still_answers_but_says_so() -> None:
    judge = ScriptedJudge(fail=ModelUnavailable("judge down"))
    result = await fuse(judge, "vote", "Paris", "Rome", "Berlin")
    assert result.answer in {"Paris", "Rome", "Berlin"}
    assert (result.status, result.failure_reason, result.answer_source) == (
        "partial",
        "judge_upstream_error",
        "vote",
    )
    assert result.judge.status == "error"


async def test_a_unanimous_vote_is_agreement_with_no_judge() -> None:
    judge = ScriptedJudge()
    result = await fuse(judge, "vote", "Paris", "It is Paris.", "paris")
    assert judge.calls == []
    assert (result.answer_source, result.answer, result.judge) == ("agreement", "Paris", None)
    assert result.status == "complete"


# --- agreement for the other strategies ------------------------------------------------------------


async def test_identical_answers_skip_the_judge_for_every_strategy() -> None:
    for strategy in ("synthesize", "synthesize-once", "select"):
        judge = ScriptedJudge()
        result = await fuse(judge, strategy, "The sky is blue.", "the sky is blue", "The sky is BLUE!")
        assert judge.calls == [], strategy
        assert (result.answer_source, result.selected_member, result.status) == ("agreement", 0, "complete")
        assert result.cost.judge_usd == 0


async def test_answers_that_differ_in_words_are_not_agreement_outside_vote() -> None:
    judge = ScriptedJudge()
    result = await fuse(judge, "synthesize", "Paris", "It is Paris.", "Paris")
    assert len(judge.calls) == 2
    assert result.answer_source == "judge"


async def test_agreement_of_the_members_that_answered_is_partial() -> None:
    judge = ScriptedJudge()
    result = await fuse(judge, "vote", "Paris", None, "Paris")
    assert (result.answer_source, result.status, result.failure_reason) == (
        "agreement",
        "partial",
        "some_members_failed",
    )


# --- select ----------------------------------------------------------------------------------------


async def test_select_returns_the_chosen_answer_unchanged() -> None:
    judge = ScriptedJudge(choose="Rome")
    result = await fuse(judge, "select", "Paris", "Rome", "Berlin")
    assert (result.answer, result.answer_source, result.selected_member) == ("Rome", "selected", 1)
    assert result.status == "complete"
    assert result.judge.calls == 1


async def test_select_with_a_correction_is_written_by_the_judge() -> None:
    judge = ScriptedJudge(
        choose="Rome is the capital of France", correction="Paris is the capital of France."
    )
    result = await fuse(judge, "select", "Paris", "Rome is the capital of France", "Berlin")
    assert (result.answer, result.answer_source, result.selected_member) == (
        "Paris is the capital of France.",
        "judge",
        1,
    )


async def test_select_ignores_a_correction_that_is_no_edit_of_the_chosen_answer() -> None:
    judge = ScriptedJudge(choose="Rome", correction="This correction makes the reply one JSON object.")
    result = await fuse(judge, "select", "Paris", "Rome", "Berlin")
    assert (result.answer, result.answer_source, result.selected_member) == ("Rome", "selected", 1)


async def test_select_abstaining_gives_the_most_central_answer_as_a_complete_result() -> None:
    judge = ScriptedJudge(choose=None)
    result = await fuse(judge, "select", "Paris is big", "Paris is old", "Bananas")
    assert result.answer_source == "best_member"
    assert result.answer in {"Paris is big", "Paris is old"}
    assert (result.status, result.failure_reason) == ("complete", None)


async def test_select_that_names_no_answer_is_degraded() -> None:
    judge = ScriptedJudge(once=None)
    judge.choose = None

    async def bad(*args: Any, **kwargs: Any) -> ModelReply:
        return ModelReply(text='{"best": 7}', usage=USAGE)

    judge.complete = bad  # type: ignore[method-assign]
    result = await fuse(judge, "select", "Paris", "Rome", "Berlin")
    assert (result.status, result.failure_reason, result.answer_source) == (
        "partial",
        "judge_schema_mismatch",
        "best_member",
    )


# --- synthesize-once -------------------------------------------------------------------------------


async def test_once_is_one_call_with_the_answer_and_the_analysis() -> None:
    judge = ScriptedJudge()
    result = await fuse(judge, "synthesize-once", "Paris", "Rome", "Berlin")
    (call,) = judge.calls
    assert call.spec.max_tokens == 100 * ONCE_TOKENS_FACTOR
    assert call.spec.temperature == 0.0
    assert result.answer == 'One "pass".'
    assert result.answer_source == "judge"
    assert result.analysis is not None
    assert result.analysis.consensus[0].startswith("member ")
    assert result.judge.calls == 1
    assert result.judge.usage == USAGE
    assert result.status == "complete"


async def test_once_streams_only_the_answer() -> None:
    deltas: list[str] = []

    async def collect(delta: str) -> None:
        deltas.append(delta)

    judge = ScriptedJudge()
    result = await Judge(judge).fuse(
        plan("synthesize-once"), answers("Paris", "Rome", "Berlin"), "all", datetime.now(UTC), collect
    )
    assert "".join(deltas) == result.answer == 'One "pass".'


async def test_once_without_json_falls_back_and_says_why() -> None:
    judge = ScriptedJudge(once="I think Paris.")
    result = await fuse(judge, "synthesize-once", "Paris", "Rome", "Berlin")
    assert (result.status, result.failure_reason, result.answer_source) == (
        "partial",
        "judge_invalid_json",
        "best_member",
    )
    assert result.judge.status == "ok"  # the call worked; its reply did not


async def test_once_with_an_answer_but_no_analysis_is_degraded() -> None:
    judge = ScriptedJudge(once='{"consensus": [], "answer": "Paris."}')
    result = await fuse(judge, "synthesize-once", "Paris", "Rome", "Berlin")
    assert (result.answer, result.answer_source) == ("Paris.", "judge")
    assert (result.status, result.failure_reason) == ("partial", "judge_schema_mismatch")
    assert result.judge.analysis_error is not None


# --- synthesize ------------------------------------------------------------------------------------


async def test_synthesize_analyses_at_the_analysis_temperature_and_writes_at_the_judges() -> None:
    judge = ScriptedJudge()
    result = await fuse(judge, "synthesize", "Paris", "Rome", "Berlin", analysis_temperature=0.4)
    assert [call.spec.temperature for call in judge.calls] == [0.4, 0.7]
    assert result.answer == "Written by the judge."
    assert result.judge.calls == 2


# --- failures --------------------------------------------------------------------------------------


async def test_every_member_rate_limited_is_rate_limited() -> None:
    result = await Judge(ScriptedJudge()).fuse(
        plan("vote"), answers(None, None, None, error_status=429), "all", datetime.now(UTC)
    )
    assert (result.status, result.failure_reason) == ("failed", "rate_limited")
    assert [member.error_status for member in result.members] == [429, 429, 429]


async def test_every_member_timed_out_is_deadline() -> None:
    result = await Judge(ScriptedJudge()).fuse(
        plan("vote"), answers(None, None, None, status="timeout"), "deadline", datetime.now(UTC)
    )
    assert (result.status, result.failure_reason) == ("failed", "deadline")


async def test_mixed_member_failures_are_all_members_failed() -> None:
    result = await Judge(ScriptedJudge()).fuse(
        plan("vote"), answers(None, None, error_status=429), "all", datetime.now(UTC)
    )
    assert (result.status, result.failure_reason) == ("failed", "all_members_failed")  # member 2 timed out
