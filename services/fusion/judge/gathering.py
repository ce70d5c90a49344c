"""When is a request ready to fuse? Pure state and rules, no I/O and no clock of its own."""

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fusion_contracts import PanelAnswer, PanelPlan, ReleaseReason


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


class Gatherings:
    """Every open request, and a bounded memory of released ones so late answers are dropped."""

    def __init__(self, remember_released: int = 100_000) -> None:
        self._open: dict[str, Gathering] = {}
        self._released: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_released

    def __len__(self) -> int:
        return len(self._open)

    def add(self, message: PanelPlan | PanelAnswer, now: datetime) -> Gathering | None:
        """The request's gathering after adding; None when the request was already released."""
        request_id = message.request_id
        if request_id in self._released:
            return None
        gathering = self._open.get(request_id)
        if gathering is None:
            gathering = self._open[request_id] = Gathering(request_id, first_seen=now)
        gathering.add(message, now)
        return gathering

    def get(self, request_id: str) -> Gathering | None:
        return self._open.get(request_id)

    def release(self, request_id: str) -> Gathering | None:
        gathering = self._open.pop(request_id, None)
        self._released[request_id] = None
        while len(self._released) > self._remember:
            self._released.popitem(last=False)
        return gathering

    def drop(self, request_id: str) -> None:
        """Forgets an open request without releasing it (its partition moved to another judge)."""
        self._open.pop(request_id, None)

    def mark_released(self, request_ids: set[str]) -> None:
        """Requests another judge already released: their messages, read again, are ignored."""
        for request_id in request_ids:
            self._open.pop(request_id, None)
            self._released[request_id] = None
        while len(self._released) > self._remember:
            self._released.popitem(last=False)

    def drop_stale(self, older_than: datetime) -> list[str]:
        """Forgets answers whose plan never came; returns their request ids."""
        stale = [
            request_id
            for request_id, gathering in self._open.items()
            if gathering.plan is None and gathering.first_seen < older_than
        ]
        for request_id in stale:
            del self._open[request_id]
        return stale
