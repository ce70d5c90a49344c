"""Every setting of every service, read once from `FUSION_*` environment variables."""

import os
import socket
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, FilePath, SecretStr, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fusion.liveness import STUCK_AFTER_S

DEFAULT_HEALTH_PORTS: dict[str, int] = {
    "dispatcher": 8181,
    "panel-worker": 8182,
    "judge": 8183,
    "activity": 8184,
}
DEFAULT_DATABASE = Path(".cache/activity.sqlite")


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FUSION_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    catalog: Path | None = Field(default=None, description="A catalog file that extends the built-in one.")
    instance_id: str = Field(default_factory=_default_instance)

    health_host: str = "127.0.0.1"
    health_port: int | None = Field(
        default=None, description="0 picks a free port; unset, the service default."
    )

    kafka_fetch_max_wait_ms: int = Field(default=500, ge=0, description="Longest a service's fetch waits.")
    kafka_max_poll_interval_ms: int = Field(
        default=300_000, ge=1_000, description="A consumer that fetches nothing for longer leaves its group."
    )

    # How every Kafka client of every service connects (see fusion.kafka.security, docs/configuration.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = Field(default=None, description="The service's Kafka user.")
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: FilePath | None = Field(
        default=None,
        description="The password, from a file (a mounted Strimzi KafkaUser secret's `password`).",
    )
    kafka_ssl_ca_file: FilePath | None = Field(
        default=None, description="CA certificates (PEM) to trust for the brokers; unset, the system's."
    )
    kafka_ssl_cert_file: FilePath | None = Field(
        default=None, description="A client certificate (PEM), for mTLS."
    )
    kafka_ssl_key_file: FilePath | None = Field(
        default=None, description="The client certificate's key (PEM)."
    )
    kafka_ssl_key_password_file: FilePath | None = None
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Whether a broker's certificate must name the host connected to."
    )
    dispatcher_concurrency: int = Field(default=256, ge=1, description="Requests dispatched at once.")
    worker_concurrency: int = Field(default=1024, ge=1, description="Model calls at once per panel worker.")
    judge_concurrency: int = Field(default=128, ge=1, description="Fusions at once per judge.")
    judge_stale_s: float = Field(default=900.0, gt=0, description="Forget answers of a plan never seen.")
    judge_max_open: int = Field(
        default=10_000, ge=1, description="Open requests held in memory; past it the judge stops consuming."
    )
    reply_topics: list[str] = Field(
        default=["fusion.results", "fusion.replies.*"],
        description="Topics (fnmatch patterns) a request's reply_to may name; others get fusion.results.",
    )
    judge_markers_margin_s: float = Field(
        default=300.0,
        ge=0,
        description="Markers read on taking a partition over start this long before its oldest "
        "uncommitted answer (the clocks of the brokers that stamped them may differ).",
    )

    judge_transaction_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A result transaction unfinished after this long is given up on: a new producer "
        "under the partition's id settles it and the markers say what went out.",
    )

    stuck_after_s: float = Field(
        default=STUCK_AFTER_S,
        gt=0,
        description="A message or result unpublished for longer fails /health, so the service is restarted.",
    )

    partitions_requests: int = Field(default=4, ge=1)
    partitions_tasks: int = Field(default=12, ge=1)
    partitions_answers: int = Field(default=8, ge=1)
    partitions_results: int = Field(default=8, ge=1)
    partitions_dlq: int = Field(default=1, ge=1)

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_api_key: SecretStr | None = Field(
        default=None, description="When set, every API call needs `Authorization: Bearer <key>`."
    )
    gateway_api_keys: dict[str, SecretStr] = Field(
        default={},
        description='Named keys, as JSON ({"team-a": "sk-..."}): each is accepted like '
        "`gateway_api_key`, and the activity records which name a request came with.",
    )
    gateway_api_keys_file: Path | None = Field(
        default=None, description="Named keys from a file, a `name=key` per line (a mounted secret)."
    )
    gateway_max_in_flight: int = Field(default=512, ge=1, description="Concurrent requests; then 429.")
    gateway_max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Larger bodies get 413.")
    gateway_idempotency_ttl_s: float = Field(default=600.0, gt=0)
    gateway_idempotency_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="Kept responses beyond it go, oldest first."
    )
    gateway_drain_s: float = Field(
        default=130.0,
        ge=0,
        description="On SIGTERM, how long requests in flight may still finish; then they get a 503.",
    )
    gateway_reply_topic_stale_s: float = Field(
        default=1200.0,
        ge=0,
        description="Delete the reply topics of gateways silent for this long (0: never). Keep it "
        "above the longest deadline, 900 s.",
    )
    gateway_tool_rounds: int = Field(default=4, ge=1, description="Model turns in a fusion-as-tool loop.")

    fetch_allow_hosts: list[str] = Field(
        default=[],
        description="Private hosts web_fetch may reach on purpose: names, addresses or CIDR ranges, each "
        "optionally with :port. Everything private, loopback, link-local or metadata is refused otherwise.",
    )
    fetch_max_bytes: int = Field(default=2_000_000, ge=1024, description="A page larger is cut here.")
    fetch_timeout_s: float = Field(default=15.0, gt=0, description="A whole fetch, redirects included.")
    fetch_max_redirects: int = Field(default=5, ge=0)
    tool_result_chars: int = Field(
        default=8_000, ge=500, description="What a member reads of one tool result; the rest is cut."
    )
    document_index: Path = Field(
        default=Path(".cache/documents.sqlite"), description="The search_documents index (fusion index add)."
    )

    database_url: SecretStr | None = Field(
        default=None,
        description="The activity database, as an SQLAlchemy URL (postgresql+psycopg://user:pw@host/db); "
        f"unset, an SQLite file at {DEFAULT_DATABASE}.",
    )
    database_url_file: Path | None = Field(default=None, description="The same, read from a file.")
    activity_retention_days: float = Field(
        default=30.0, ge=0, description="Recorded requests older than this are deleted (0: kept for ever)."
    )

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    def activity_database_url(self) -> str:
        if self.database_url_file is not None:
            return self.database_url_file.read_text().strip()
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{DEFAULT_DATABASE}"

    def api_keys(self) -> dict[str, str]:
        """Every key the gateway accepts, by name (`gateway_api_key` is named `default`)."""
        keys = {name: key.get_secret_value() for name, key in self.gateway_api_keys.items()}
        if self.gateway_api_keys_file is not None:
            for line in self.gateway_api_keys_file.read_text().splitlines():
                name, sep, key = line.strip().partition("=")
                if sep and name.strip() and key.strip() and not name.startswith("#"):
                    keys[name.strip()] = key.strip()
        if self.gateway_api_key is not None:
            keys.setdefault("default", self.gateway_api_key.get_secret_value())
        return keys

    def health_port_for(self, service: str) -> int:
        if self.health_port is not None:
            return self.health_port
        return DEFAULT_HEALTH_PORTS.get(service, 0)

    @model_validator(mode="after")
    def _kafka_security_agrees(self) -> Self:
        """The Kafka security settings fit together. Raised as errors of the fields themselves: for an
        error of the whole model pydantic would print every input, passwords included."""
        if problems := _kafka_security_problems(self):
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("kafka_security", message),
                        loc=(name,),
                        input="**********" if "password" in name else getattr(self, name),
                    )
                    for name, message in problems
                ],
            )
        return self


_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
_TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_FIELDS = ("kafka_sasl_username", "kafka_sasl_password", "kafka_sasl_password_file")
_TLS_FIELDS = (
    "kafka_ssl_ca_file",
    "kafka_ssl_cert_file",
    "kafka_ssl_key_file",
    "kafka_ssl_key_password_file",
)


def _env(name: str) -> str:
    return f"FUSION_{name.upper()}"


def _kafka_security_problems(settings: Settings) -> list[tuple[str, str]]:
    """(field, message) for each Kafka security setting that is missing, or given but unused (a
    credential or a certificate the protocol would silently not send is a mistake worth stopping on)."""
    return _sasl_problems(settings) + _tls_problems(settings)


def _named_protocol(settings: Settings) -> str:
    return f"{_env('kafka_security_protocol')}={settings.kafka_security_protocol}"


def _sasl_problems(settings: Settings) -> list[tuple[str, str]]:
    named = _named_protocol(settings)
    if settings.kafka_security_protocol not in _SASL_PROTOCOLS:
        use = "use SASL_PLAINTEXT or SASL_SSL, or unset"
        return [
            (name, f"{named} sends no credentials: {use} {_env(name)}")
            for name in _SASL_FIELDS
            if getattr(settings, name) is not None
        ]
    problems: list[tuple[str, str]] = []
    if not settings.kafka_sasl_username:
        problems.append(("kafka_sasl_username", f"{named} needs {_env('kafka_sasl_username')}"))
    password = settings.kafka_sasl_password
    has_password = password is not None and password.get_secret_value() != ""
    has_file = settings.kafka_sasl_password_file is not None
    either = f"{_env('kafka_sasl_password')} or {_env('kafka_sasl_password_file')}"
    if not has_password and not has_file:
        problems.append(("kafka_sasl_password", f"{named} needs {either}"))
    elif has_password and has_file:
        problems.append(("kafka_sasl_password", f"set {either}, not both"))
    return problems


def _tls_problems(settings: Settings) -> list[tuple[str, str]]:
    named = _named_protocol(settings)
    given = [name for name in _TLS_FIELDS if getattr(settings, name) is not None]
    if settings.kafka_security_protocol not in _TLS_PROTOCOLS:
        return [
            (name, f"{named} does not use TLS: use SSL or SASL_SSL, or unset {_env(name)}") for name in given
        ]
    if settings.kafka_ssl_cert_file is not None:
        return []
    return [
        (name, f"{_env(name)} needs {_env('kafka_ssl_cert_file')}")
        for name in given
        if name in ("kafka_ssl_key_file", "kafka_ssl_key_password_file")
    ]
