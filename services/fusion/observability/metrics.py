"""Each service's Prometheus metrics: FastStream's per-message metrics plus Fusion's own."""

from decimal import Decimal

from fusion_contracts import Usage
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320)


class FusionMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("fusion_requests", "Requests by final status", ["status"], registry=r)
        self.member_latency = Histogram(
            "fusion_member_latency_seconds",
            "Model call latency by model and outcome",
            ["model", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.tokens = Counter(
            "fusion_tokens", "Tokens by model and direction", ["model", "direction"], registry=r
        )
        self.cost = Counter("fusion_cost_usd", "US dollars spent by model", ["model"], registry=r)
        self.releases = Counter("fusion_judge_releases", "Judge releases by reason", ["reason"], registry=r)
        self.in_flight = Gauge("fusion_in_flight", "Requests or calls in flight in this process", registry=r)
        self.deadline_misses = Counter(
            "fusion_deadline_misses", "Results completed after their deadline", registry=r
        )
        self.tool_calls = Histogram(
            "fusion_tool_call_seconds",
            "Research tool calls of panel members, by tool and outcome (ok or error)",
            ["tool", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self._published = Counter(
            "fusion_messages_published",
            "Messages a service published (through its own producer) by topic and outcome",
            ["topic", "status"],
            registry=r,
        )
        self._children: dict[tuple[str, str], tuple[Histogram, Counter, Counter, Counter]] = {}
        self._published_children: dict[tuple[str, bool], Counter] = {}

    def published(self, topic: str, ok: bool) -> None:
        child = self._published_children.get((topic, ok))
        if child is None:
            child = self._published.labels(topic=topic, status="ok" if ok else "error")
            self._published_children[(topic, ok)] = child
        child.inc()

    def tool_call(self, tool: str, ok: bool, seconds: float) -> None:
        self.tool_calls.labels(tool=tool, outcome="ok" if ok else "error").observe(seconds)

    def model_call(self, model: str, status: str, seconds: float, usage: Usage, cost: Decimal) -> None:
        latency, input_tokens, output_tokens, cost_usd = self._model_children(model, status)
        latency.observe(seconds)
        input_tokens.inc(usage.input_tokens)
        output_tokens.inc(usage.output_tokens)
        cost_usd.inc(float(cost))

    def _model_children(self, model: str, status: str) -> tuple[Histogram, Counter, Counter, Counter]:
        """The labelled metrics of one model and outcome, looked up once: each `labels()` call checks
        its labels under a lock, four per model call."""
        children = self._children.get((model, status))
        if children is None:
            children = self._children[(model, status)] = (
                self.member_latency.labels(model=model, status=status),
                self.tokens.labels(model=model, direction="input"),
                self.tokens.labels(model=model, direction="output"),
                self.cost.labels(model=model),
            )
        return children
