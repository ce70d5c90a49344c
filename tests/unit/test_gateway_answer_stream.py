"""fusion.gateway.answer_stream: one judge's stream at a time, never two answers joined."""

from datetime import UTC, datetime

from fusion.gateway.answer_stream import JUDGE_FAILED_NOTICE, MAX_LEFT_BEHIND, RESTART_NOTICE, AnswerStream
from fusion_contracts import AnswerChunk, FusedResult, Timings
from fusion_contracts.result import AnswerSource


def chunk(seq: int, delta: str, stream_id: str | None = "a") -> AnswerChunk:
    return AnswerChunk(request_id="req-1", seq=seq, delta=delta, stream_id=stream_id)


def result(answer: str, source: AnswerSource = "judge") -> FusedResult:
    now = datetime.now(UTC)
    return FusedResult(
        request_id="req-1",
        status="complete" if source == "judge" else "partial",
        release="all",
        answer=answer,
        answer_source=source,
        timings=Timings(submitted_at=now, completed_at=now, total_ms=1.0),
    )


def shown(stream: AnswerStream, *chunks: AnswerChunk) -> str:
    return "".join(stream.chunk(c) for c in chunks)


def test_one_stream_goes_through_and_duplicates_are_dropped() -> None:
    stream = AnswerStream()
    text = shown(stream, chunk(0, "The "), chunk(1, "answer"), chunk(1, "answer"), chunk(0, "The "))
    assert text == "The answer"
    assert stream.result(result("The answer.")) == "."
    assert stream.restarts == 0


def test_a_new_stream_that_diverges_is_shown_from_its_start_after_a_notice() -> None:
    stream = AnswerStream()
    text = shown(stream, chunk(0, "Red "), chunk(1, "sky."), chunk(0, "Blue ", "b"), chunk(1, "sea.", "b"))
    assert text == "Red sky." + RESTART_NOTICE + "Blue sea."
    assert stream.result(result("Blue sea.")) == ""
    assert stream.restarts == 1


def test_a_new_stream_that_repeats_the_text_catches_up_silently() -> None:
    stream = AnswerStream()
    text = shown(
        stream,
        chunk(0, "The quick "),
        chunk(1, "brown"),
        chunk(0, "The", "b"),
        chunk(1, " quick br", "b"),
        chunk(2, "own fox", "b"),
    )
    assert text == "The quick brown fox"


def test_a_stream_left_behind_stays_behind() -> None:
    stream = AnswerStream()
    text = shown(
        stream, chunk(0, "A0 "), chunk(0, "B0 ", "b"), chunk(1, "A1 "), chunk(1, "B1", "b"), chunk(2, "A2")
    )
    assert text == "A0 " + RESTART_NOTICE + "B0 B1"


def test_streams_left_behind_are_bounded() -> None:
    stream = AnswerStream()
    for n in range(MAX_LEFT_BEHIND * 3):
        stream.chunk(chunk(0, f"attempt {n}", f"s{n}"))
    assert len(stream._left_behind) == MAX_LEFT_BEHIND


def test_chunks_without_a_stream_id_restart_at_seq_0() -> None:
    """Judges older than `stream_id`: a new judge's stream is told apart by its seq going back to 0."""
    stream = AnswerStream()
    text = shown(stream, chunk(0, "Old ", None), chunk(1, "text", None), chunk(0, "New ", None))
    text += shown(stream, chunk(1, "text", None))
    assert text == "Old text" + RESTART_NOTICE + "New text"


def test_a_gap_stops_the_stream_until_the_result() -> None:
    stream = AnswerStream()
    assert shown(stream, chunk(0, "The "), chunk(2, "lost?"), chunk(3, " more")) == "The "
    assert stream.result(result("The answer, whole.")) == "answer, whole."


def test_a_result_that_does_not_continue_the_text_follows_a_notice_that_says_why() -> None:
    judge_failed = AnswerStream()
    shown(judge_failed, chunk(0, "The judge began"))
    assert judge_failed.result(result("Best member.", "best_member")) == JUDGE_FAILED_NOTICE + "Best member."

    restarted = AnswerStream()
    shown(restarted, chunk(0, "One judge began"))
    assert restarted.result(result("Another judge's answer.")) == RESTART_NOTICE + "Another judge's answer."


def test_a_result_with_nothing_streamed_is_sent_whole() -> None:
    assert AnswerStream().result(result("All of it.", "best_member")) == "All of it."
