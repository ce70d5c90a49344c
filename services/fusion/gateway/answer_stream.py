"""What a client sees of a streamed answer: the judge's chunks, one stream at a time, and the result.

A request can be streamed more than once. A judge that takes a request over (its first judge died,
or lost the partition) writes the answer again from `seq` 0 under a new `stream_id`, and a judge paused
past its session timeout may even go on streaming beside its successor. The rules, so that the client
never gets two answers joined into one:

- One stream is followed at a time. A chunk of a new stream switches to it for good, and the chunks of
  every stream left behind are dropped.
- A restarted stream that repeats what the client already has (a judge writing the same words) is
  caught up silently and continues where the client is; one that diverges is shown again from its
  start, after a notice saying so.
- A gap in the followed stream (a chunk lost or dropped) stops the live text: the result fills in.
- The result is authoritative: the rest of its answer follows what was shown, or, when it does not
  continue it, the whole answer after a notice: that the judge failed (`best_member`) or that the
  answer restarted.

Chunks of judges older than `stream_id` (None) are one stream, restarted by a `seq` 0.
"""

from fusion_contracts import AnswerChunk, FusedResult

RESTART_NOTICE = "\n\n[Another judge took this request over; its answer follows from the start.]\n\n"
JUDGE_FAILED_NOTICE = "\n\n[The judge failed; the best panel answer follows.]\n\n"
MAX_LEFT_BEHIND = 64
"""Streams left behind that are remembered (a request has as many as judges that took it over)."""


class AnswerStream:
    def __init__(self) -> None:
        self.shown = ""
        """The answer as the client has it, since the last notice."""
        self.restarts = 0
        self._started = False
        self._stream: str | None = None
        self._text = ""
        """The followed stream's text so far."""
        self._next_seq = 0
        self._gap = False
        self._left_behind: list[str] = []

    def chunk(self, chunk: AnswerChunk) -> str:
        """The text to send the client now for `chunk`; empty for none."""
        stream = chunk.stream_id
        if stream is not None and stream in self._left_behind:
            return ""
        if not self._started:
            self._started = True
            self._stream = stream
        elif stream != self._stream or (stream is None and chunk.seq == 0 and self._next_seq > 0):
            self._switch(stream)
        if chunk.seq < self._next_seq:
            return ""  # delivered again
        if chunk.seq > self._next_seq:
            self._gap = True
        if self._gap:
            return ""
        self._next_seq = chunk.seq + 1
        in_step = self._text == self.shown
        self._text += chunk.delta
        if in_step:
            self.shown = self._text
            return chunk.delta
        return self._show(self._text)

    def _switch(self, stream: str | None) -> None:
        if self._stream is not None:
            self._left_behind.append(self._stream)
            del self._left_behind[:-MAX_LEFT_BEHIND]
        self._stream = stream
        self._text = ""
        self._next_seq = 0
        self._gap = False
        self.restarts += 1

    def _show(self, text: str) -> str:
        if text.startswith(self.shown):
            piece = text[len(self.shown) :]
            self.shown = text
            return piece
        if self.shown.startswith(text):
            return ""  # a restart still repeating what the client has
        self.shown = text
        return RESTART_NOTICE + text

    def result(self, result: FusedResult) -> str:
        """What to send the client before the end, once the result is in: the rest of its answer, or
        all of it after a notice."""
        answer = result.answer or ""
        if answer.startswith(self.shown):
            rest = answer[len(self.shown) :]
            self.shown = answer
            return rest
        self.shown = answer
        notice = JUDGE_FAILED_NOTICE if result.answer_source == "best_member" else RESTART_NOTICE
        return notice + answer
