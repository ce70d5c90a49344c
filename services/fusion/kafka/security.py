"""How every Kafka client of Fusion authenticates and encrypts: the security settings as aiokafka's
keyword arguments (`client_options`), as FastStream's `security` object (`broker_security`), and with
the bootstrap servers as one value for the clients made from a bootstrap string (`KafkaConnection`).

The password is read here, when a client is made, never at import; it lives only in the options given
to the client, which no repr shows.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from ssl import SSLContext
from typing import Any, Self

from aiokafka.helpers import create_ssl_context
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from fusion.settings import Settings

__all__ = ["KafkaConnection", "KafkaSecurityError", "broker_security", "client_options", "connection"]

_TLS = ("SSL", "SASL_SSL")
_SASL = ("SASL_PLAINTEXT", "SASL_SSL")

_SASL_SECURITY: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
    "PLAIN": SASLPlaintext,
    "SCRAM-SHA-256": SASLScram256,
    "SCRAM-SHA-512": SASLScram512,
}
"""FastStream's security class for each SASL mechanism Fusion's settings accept."""


class KafkaSecurityError(RuntimeError):
    """A credential or certificate file named in the settings cannot be used (unreadable, empty)."""


def client_options(settings: Settings) -> dict[str, Any]:
    """The security keyword arguments of aiokafka's producers, consumers and admin clients."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in _TLS:
        options["ssl_context"] = ssl_context(settings)
    if protocol in _SASL:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = sasl_password(settings)
    return options


def broker_security(settings: Settings) -> BaseSecurity | None:
    """The same options in the form FastStream's `KafkaBroker(security=...)` takes (None: PLAINTEXT)."""
    options = client_options(settings)
    context: SSLContext | None = options.get("ssl_context")
    if "sasl_mechanism" in options:
        security = _SASL_SECURITY[options["sasl_mechanism"]]
        return security(
            options["sasl_plain_username"],
            options["sasl_plain_password"],
            ssl_context=context,
            use_ssl=context is not None,
        )
    if context is not None:
        return BaseSecurity(ssl_context=context)
    return None


def ssl_context(settings: Settings) -> SSLContext:
    """Verifies the brokers' certificates against the CA file (the system's CAs without one), and
    presents the client certificate when one is set (mutual TLS)."""
    key_password_file = settings.kafka_ssl_key_password_file
    key_password = (
        _read(key_password_file, "FUSION_KAFKA_SSL_KEY_PASSWORD_FILE") if key_password_file else None
    )
    try:
        context: SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_ca_file,
            certfile=settings.kafka_ssl_cert_file,
            keyfile=settings.kafka_ssl_key_file,
            password=key_password,
        )
    except (OSError, ValueError) as error:  # ssl.SSLError is an OSError; the message names no secret
        raise KafkaSecurityError(f"the Kafka TLS files cannot be used: {error}") from None
    # create_ssl_context always checks the host name; a broker reached by an address its
    # certificate does not name (a port-forward, say) needs the check off, the chain still verified.
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def sasl_password(settings: Settings) -> str:
    """The SASL password: from its file when one is set (read now, so a rotated secret is used by
    the next client made), else from the setting."""
    if settings.kafka_sasl_password_file is not None:
        return _read(settings.kafka_sasl_password_file, "FUSION_KAFKA_SASL_PASSWORD_FILE")
    if settings.kafka_sasl_password is None:
        raise KafkaSecurityError("no Kafka password: set FUSION_KAFKA_SASL_PASSWORD(_FILE)")
    return settings.kafka_sasl_password.get_secret_value()


def _read(path: Path, env: str) -> str:
    """A secret from a file, without the line end an editor or `echo` adds."""
    try:
        secret = path.read_text().rstrip("\r\n")
    except OSError as error:
        raise KafkaSecurityError(f"{env} ({path}) cannot be read: {error.strerror}") from None
    if not secret:
        raise KafkaSecurityError(f"{env} ({path}) is empty")
    return secret


@dataclass(frozen=True)
class KafkaConnection:
    """Where a client connects and how: the bootstrap servers and `client_options`. A bare bootstrap
    string where one of these is taken means PLAINTEXT (tests and tools on the local broker)."""

    bootstrap: str
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)  # holds the password

    @classmethod
    def of(cls, settings: Settings) -> Self:
        return cls(settings.kafka_bootstrap, client_options(settings))

    def client_args(self) -> dict[str, Any]:
        """The keyword arguments that connect an aiokafka client."""
        return {"bootstrap_servers": self.bootstrap, **self.options}


def connection(kafka: "str | KafkaConnection") -> KafkaConnection:
    return kafka if isinstance(kafka, KafkaConnection) else KafkaConnection(kafka)
