"""When is a request ready to fuse? Pure state and rules, no I/O and no clock of its own."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from fusion_contracts import PanelAnswer, PanelPlan, ReleaseReason


def _differ(first: str | None, second: str | None) -> bool:
    """Two digests of distinct requests; a missing one (an older producer) matches any."""
    return first is not None and second is not None and first != second


@dataclass
class Gathering:
    """One request's plan and the answers received so far (the first answer per member wins)."""

    request_id: str
    first_seen: datetime
    plan: PanelPlan | None = None
    answers: dict[int, PanelAnswer] = field(default_factory=dict)
    quorum_at: datetime | None = None
    """When the quorum-th successful answer arrived."""

    def add(self, message: PanelPlan | PanelAnswer, now: datetime) -> bool:
        """Records the message; False when it repeats one already recorded."""
        if isinstance(message, PanelPlan):
            if self.plan is not None:
                return False
            self.plan = message
            # answers that came first may belong to another request with the same id
            self.answers = {
                i: a for i, a in self.answers.items() if not _differ(a.request_digest, message.request_digest)
            }
        else:
            if message.member_index in self.answers:
                return False
            self.answers[message.member_index] = message
        self._note_quorum(now)
        return True

    @property
    def ok_count(self) -> int:
        members = len(self.plan.members) if self.plan else 0
        return sum(1 for i, answer in self.answers.items() if answer.status == "ok" and i < members)

    def _note_quorum(self, now: datetime) -> None:
        if self.plan is not None and self.quorum_at is None and self.ok_count >= self.plan.quorum:
            self.quorum_at = now

    def release_reason(self, now: datetime) -> ReleaseReason | None:
        plan = self.plan
        if plan is None:
            return None
        expected = set(range(len(plan.members)))
        if expected <= self.answers.keys():
            return "all"
        if now >= plan.panel_deadline_at:
            return "deadline"
        if self.quorum_at is not None and now >= self.quorum_at + timedelta(seconds=plan.grace_s):
            return "quorum"
        return None

    def wake_at(self) -> datetime | None:
        """The next instant at which `release_reason` can change without a new message."""
        if self.plan is None:
            return None
        instants = [self.plan.panel_deadline_at]
        if self.quorum_at is not None:
            instants.append(self.quorum_at + timedelta(seconds=self.plan.grace_s))
        return min(instants)


LATE_ANSWERS_S = 120.0
"""How long past its deadline a released request is remembered, so its late answers are ignored."""

Seen = Literal["done", "fusing", "duplicate", "foreign"]
"""What `Gatherings.add` says of a message it did not add: its request's result is out (or another
judge's), or it is being fused here; a plan of another request that shares the id of one already
planned (`duplicate`: it gets a `rejected` result of its own); an answer of such another request
(`foreign`: ignored)."""


def duplicate_key(request_id: str, digest: str) -> str:
    """The name under which a duplicate (another request with a used id) is remembered and marked
    released once rejected: its id and its digest."""
    return f"{request_id}#{digest}"


class Gatherings:
    """Every open request, those being fused, and those done, remembered for a while by time (not
    by count): their late answers, and their messages read again after a rebalance, are ignored."""

    def __init__(self) -> None:
        self._open: dict[str, Gathering] = {}
        self._planned = 0
        self._fusing: set[str] = set()
        self._done: dict[str, datetime] = {}
        self._digests: dict[str, str | None] = {}
        """The digest of each request being fused or done here (not of those marked released by
        another judge, whose digest is unknown)."""

    def __len__(self) -> int:
        return len(self._open)

    @property
    def planned(self) -> int:
        """Open requests whose plan is in: those that will be released (answers without a plan wait
        for it, and are swept if it never comes)."""
        return self._planned

    @property
    def remembered(self) -> int:
        return len(self._done)

    def add(self, message: PanelPlan | PanelAnswer, now: datetime) -> Gathering | Seen:
        """The request's gathering after adding, or what became of the request."""
        request_id, digest = message.request_id, message.request_digest
        if isinstance(message, PanelPlan) and digest is not None:
            duplicate = duplicate_key(request_id, digest)
            if duplicate in self._done or duplicate in self._fusing:
                return "done"  # a duplicate rejected already, delivered again
        if request_id in self._done or request_id in self._fusing:
            if isinstance(message, PanelPlan) and _differ(self._digests.get(request_id), digest):
                return "duplicate"
            if isinstance(message, PanelAnswer) and _differ(self._digests.get(request_id), digest):
                return "foreign"
            return "done" if request_id in self._done else "fusing"
        gathering = self._open.get(request_id)
        plan = gathering.plan if gathering is not None else None
        if plan is not None and _differ(plan.request_digest, digest):
            return "duplicate" if isinstance(message, PanelPlan) else "foreign"
        if gathering is None:
            gathering = self._open[request_id] = Gathering(request_id, first_seen=now)
        had_plan = gathering.plan is not None
        gathering.add(message, now)
        self._planned += gathering.plan is not None and not had_plan
        return gathering

    def get(self, request_id: str) -> Gathering | None:
        return self._open.get(request_id)

    def release(self, request_id: str) -> Gathering | None:
        """Gathering ends, fusing starts."""
        gathering = self._pop(request_id)
        if gathering is not None:
            self._fusing.add(request_id)
            self._digests[request_id] = gathering.plan.request_digest if gathering.plan else None
        return gathering

    def add_rejection(self, request_id: str) -> str | None:
        """A request refused before it was dispatched: fused (as a rejection) unless done already;
        None when it is."""
        if request_id in self._done:
            return None
        self._pop(request_id)  # answers without a plan: they never had one
        self._fusing.add(request_id)
        return request_id

    def add_duplicate(self, request_id: str, digest: str) -> str | None:
        """A duplicate to reject: the name it is fused (rejected) and published under, None when it is
        being rejected already."""
        name = duplicate_key(request_id, digest)
        if name in self._done or name in self._fusing:
            return None
        self._fusing.add(name)
        return name

    def published(self, request_id: str, forget_after: datetime) -> None:
        self._fusing.discard(request_id)
        self._done[request_id] = forget_after

    def abandon(self, request_id: str) -> None:
        """Forgets a request entirely (its partition went to another judge), so that it is gathered
        again should its messages come back."""
        self._pop(request_id)
        self._fusing.discard(request_id)
        self._digests.pop(request_id, None)

    def drop(self, request_id: str) -> None:
        """Forgets an open request without releasing it (its partition moved to another judge)."""
        self._pop(request_id)

    def is_fusing(self, request_id: str) -> bool:
        return request_id in self._fusing

    def mark_released(self, request_ids: set[str], forget_after: datetime) -> set[str]:
        """Requests already released by some judge: their messages, read again, are ignored. Returns
        those of them being fused here (their fusion must stop: another judge published it)."""
        stopped = request_ids & self._fusing
        for request_id in request_ids:
            self._pop(request_id)
            self._fusing.discard(request_id)
            self._done.setdefault(request_id, forget_after)
        return stopped

    def expire(self, now: datetime) -> int:
        """Forgets done requests past their time; returns how many."""
        expired = [request_id for request_id, until in self._done.items() if until <= now]
        for request_id in expired:
            del self._done[request_id]
            self._digests.pop(request_id, None)
        return len(expired)

    def drop_stale(self, older_than: datetime) -> list[str]:
        """Forgets answers whose plan never came; returns their request ids."""
        stale = [
            request_id
            for request_id, gathering in self._open.items()
            if gathering.plan is None and gathering.first_seen < older_than
        ]
        for request_id in stale:
            del self._open[request_id]  # planless: not counted in `planned`
        return stale

    def _pop(self, request_id: str) -> Gathering | None:
        gathering = self._open.pop(request_id, None)
        if gathering is not None and gathering.plan is not None:
            self._planned -= 1
        return gathering
