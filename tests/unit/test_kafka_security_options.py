"""The Kafka security settings: what they check, and the options every client gets from them
(aiokafka's keyword arguments, and FastStream's security object that must come to the same)."""

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from faststream.kafka.security import parse_security
from faststream.security import SASLPlaintext, SASLScram256, SASLScram512
from fusion.kafka.security import (
    KafkaConnection,
    KafkaSecurityError,
    broker_security,
    client_options,
    connection,
)
from fusion.settings import Settings
from pydantic import ValidationError

SECRET = "s3cret-kafka-pw-71c9"


def sasl(**extra: Any) -> Settings:
    options: dict[str, Any] = {
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_username": "fusion-judge",
        "kafka_sasl_password": SECRET,
    }
    return Settings(**{**options, **extra})


def refusal(**options: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Settings(**options)
    return caught.value


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, and a client certificate it signed with its key in the clear and encrypted (openssl)."""
    folder = tmp_path_factory.mktemp("pki")

    commands = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=fusion-test-ca",
        "req -new -newkey rsa:2048 -nodes -keyout user.key -out user.csr -subj /CN=fusion-judge",
        "x509 -req -in user.csr -CA ca.crt -CAkey ca.key -out user.crt -days 2",
        "pkey -in user.key -aes256 -passout pass:key-pw-5d2e -out user.enc.key",
    ]
    for command in commands:
        subprocess.run(["openssl", *command.split()], cwd=folder, check=True, capture_output=True)
    (folder / "key.password").write_text("key-pw-5d2e\n")
    return {
        name: folder / name for name in ("ca.crt", "user.crt", "user.key", "user.enc.key", "key.password")
    }


# --- the options -------------------------------------------------------------------------------------


def test_by_default_clients_connect_over_plaintext_with_no_identity() -> None:
    settings = Settings()

    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert broker_security(settings) is None


def test_sasl_scram_gives_aiokafka_the_mechanism_and_the_credentials() -> None:
    assert client_options(sasl()) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "fusion-judge",
        "sasl_plain_password": SECRET,
    }


@pytest.mark.parametrize(
    ("mechanism", "security_class"),
    [("PLAIN", SASLPlaintext), ("SCRAM-SHA-256", SASLScram256), ("SCRAM-SHA-512", SASLScram512)],
)
def test_the_broker_gets_faststreams_security_object_for_the_mechanism(
    mechanism: str, security_class: type[Any]
) -> None:
    settings = sasl(kafka_sasl_mechanism=mechanism)

    security = broker_security(settings)

    assert type(security) is security_class
    assert parse_security(security) == {**client_options(settings), "ssl_context": None}


def test_the_password_file_is_read_when_a_client_is_made_so_a_rotated_secret_is_used(tmp_path: Path) -> None:
    secret = tmp_path / "password"  # as a Strimzi KafkaUser secret mounts it, or with echo's newline
    secret.write_text(SECRET + "\n")
    settings = sasl(kafka_sasl_password=None, kafka_sasl_password_file=secret)

    assert client_options(settings)["sasl_plain_password"] == SECRET
    secret.write_text("rotated")
    assert client_options(settings)["sasl_plain_password"] == "rotated"


def test_an_empty_or_vanished_password_file_is_a_clear_error(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("\n")
    settings = sasl(kafka_sasl_password=None, kafka_sasl_password_file=secret)

    with pytest.raises(KafkaSecurityError, match=r"FUSION_KAFKA_SASL_PASSWORD_FILE \(.*\) is empty"):
        client_options(settings)
    secret.unlink()
    with pytest.raises(KafkaSecurityError, match=r"FUSION_KAFKA_SASL_PASSWORD_FILE .* cannot be read"):
        client_options(settings)


def test_tls_trusts_the_ca_file_and_checks_the_brokers_host_name(pki: dict[str, Path]) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki["ca.crt"])

    options = client_options(settings)

    context = options["ssl_context"]
    assert options["security_protocol"] == "SSL"
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1
    parsed = parse_security(broker_security(settings))
    assert parsed["security_protocol"] == "SSL"
    assert isinstance(parsed["ssl_context"], ssl.SSLContext)


def test_the_host_name_check_can_be_turned_off_but_the_chain_is_still_verified(pki: dict[str, Path]) -> None:
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_ca_file=pki["ca.crt"], kafka_ssl_check_hostname=False
    )

    context = client_options(settings)["ssl_context"]

    assert not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_without_a_ca_file_tls_trusts_the_systems_cas() -> None:
    context = client_options(Settings(kafka_security_protocol="SSL"))["ssl_context"]

    assert context.verify_mode == ssl.CERT_REQUIRED


def test_sasl_over_tls_with_a_client_certificate_and_an_encrypted_key(pki: dict[str, Path]) -> None:
    settings = sasl(
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_ca_file=pki["ca.crt"],
        kafka_ssl_cert_file=pki["user.crt"],
        kafka_ssl_key_file=pki["user.enc.key"],
        kafka_ssl_key_password_file=pki["key.password"],
    )

    options = client_options(settings)
    security = broker_security(settings)

    assert options["security_protocol"] == "SASL_SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert isinstance(security, SASLScram512)
    assert security.use_ssl
    assert {**parse_security(security), "ssl_context": None} == {**options, "ssl_context": None}


def test_a_key_that_its_password_does_not_open_is_a_clear_error(pki: dict[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-key-password")
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cert_file=pki["user.crt"],
        kafka_ssl_key_file=pki["user.enc.key"],
        kafka_ssl_key_password_file=wrong,
    )

    with pytest.raises(KafkaSecurityError, match="the Kafka TLS files cannot be used") as caught:
        client_options(settings)
    assert "not-the-key-password" not in str(caught.value)


def test_a_client_certificate_with_its_key_in_the_clear(pki: dict[str, Path]) -> None:
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cert_file=pki["user.crt"], kafka_ssl_key_file=pki["user.key"]
    )

    assert isinstance(client_options(settings)["ssl_context"], ssl.SSLContext)


def test_a_connection_carries_the_bootstrap_and_the_options_and_a_bare_bootstrap_is_plaintext() -> None:
    settings = sasl(kafka_bootstrap="kafka-0:9092,kafka-1:9092")

    kafka = KafkaConnection.of(settings)

    assert kafka.client_args() == {
        "bootstrap_servers": "kafka-0:9092,kafka-1:9092",
        **client_options(settings),
    }
    assert connection(kafka) is kafka
    assert connection("127.0.0.1:9092").client_args() == {"bootstrap_servers": "127.0.0.1:9092"}


def test_no_secret_shows_in_a_repr() -> None:
    settings = sasl()

    for shown in (
        repr(settings),
        str(settings),
        repr(KafkaConnection.of(settings)),
        repr(broker_security(settings)),
    ):
        assert SECRET not in shown


# --- what the settings refuse ---------------------------------------------------------------------------


def test_the_settings_come_from_the_documented_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET)
    monkeypatch.setenv("FUSION_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FUSION_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("FUSION_KAFKA_SASL_USERNAME", "fusion-gateway")
    monkeypatch.setenv("FUSION_KAFKA_SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("FUSION_KAFKA_SSL_CHECK_HOSTNAME", "false")

    settings = Settings()

    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "fusion-gateway"
    assert options["sasl_plain_password"] == SECRET
    assert not options["ssl_context"].check_hostname


def test_sasl_without_a_user_or_a_password_is_refused_naming_what_to_set() -> None:
    error = refusal(kafka_security_protocol="SASL_SSL")

    assert {e["loc"] for e in error.errors()} == {("kafka_sasl_username",), ("kafka_sasl_password",)}
    text = str(error)
    assert "FUSION_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs FUSION_KAFKA_SASL_USERNAME" in text
    assert "needs FUSION_KAFKA_SASL_PASSWORD or FUSION_KAFKA_SASL_PASSWORD_FILE" in text


def test_an_empty_password_counts_as_none() -> None:
    error = refusal(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u", kafka_sasl_password="")

    assert [e["loc"] for e in error.errors()] == [("kafka_sasl_password",)]


def test_a_password_and_a_password_file_together_are_refused_without_showing_the_password(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-the-file")

    error = refusal(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password=SECRET,
        kafka_sasl_password_file=secret,
    )

    assert "set FUSION_KAFKA_SASL_PASSWORD or FUSION_KAFKA_SASL_PASSWORD_FILE, not both" in str(error)
    assert SECRET not in str(error)
    assert SECRET not in repr(error.errors())


def test_a_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    error = refusal(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="u",
        kafka_sasl_password_file=tmp_path / "missing",
        kafka_ssl_ca_file=tmp_path / "ca.crt",
    )

    not_files = [e["loc"] for e in error.errors() if e["type"] == "path_not_file"]
    assert sorted(not_files) == [("kafka_sasl_password_file",), ("kafka_ssl_ca_file",)]


def test_credentials_the_protocol_would_not_send_are_refused() -> None:
    error = refusal(kafka_sasl_username="fusion-judge", kafka_sasl_password=SECRET)

    assert "FUSION_KAFKA_SECURITY_PROTOCOL=PLAINTEXT sends no credentials" in str(error)
    assert "unset FUSION_KAFKA_SASL_PASSWORD" in str(error)
    assert SECRET not in str(error)


def test_tls_files_the_protocol_would_not_use_are_refused(pki: dict[str, Path]) -> None:
    error = refusal(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password=SECRET,
        kafka_ssl_ca_file=pki["ca.crt"],
    )

    assert "FUSION_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT does not use TLS" in str(error)
    assert [e["loc"] for e in error.errors()] == [("kafka_ssl_ca_file",)]


def test_a_key_without_its_certificate_is_refused(pki: dict[str, Path]) -> None:
    error = refusal(kafka_security_protocol="SSL", kafka_ssl_key_file=pki["user.key"])

    assert "FUSION_KAFKA_SSL_KEY_FILE needs FUSION_KAFKA_SSL_CERT_FILE" in str(error)


def test_an_unknown_protocol_or_mechanism_is_refused_with_the_choices() -> None:
    assert "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'" in str(refusal(kafka_security_protocol="TLS"))
    assert "'SCRAM-SHA-512'" in str(refusal(kafka_sasl_mechanism="GSSAPI"))
