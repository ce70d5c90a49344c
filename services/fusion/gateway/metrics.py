"""The gateway's Prometheus metrics, in a registry of its own."""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fusion_gateway_requests", "Chat completion requests", ["kind", "stream"], registry=self.registry
        )
        self.results = Counter(
            "fusion_gateway_results", "Fused results by status", ["status"], registry=self.registry
        )
        self.errors = Counter(
            "fusion_gateway_errors", "Error responses by HTTP status", ["status"], registry=self.registry
        )
        self.in_flight = Gauge("fusion_gateway_in_flight", "Requests being handled", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
