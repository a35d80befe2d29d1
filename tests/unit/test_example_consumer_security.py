"""examples/score_consumer.py reads the broker's security from the same INTENTFLOW_KAFKA_*
variables as intentflow, and refuses what intentflow refuses."""

from __future__ import annotations

import pytest

from tests.unit.test_example_consumer import load_example

example = load_example()


def test_plaintext_by_default() -> None:
    assert example.security_options({}) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_scram_and_a_ca_file() -> None:
    options = example.security_options(
        {
            "INTENTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "INTENTFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "INTENTFLOW_KAFKA_SASL_USERNAME": "marketing",
            "INTENTFLOW_KAFKA_SASL_PASSWORD": "s3cret",
            "INTENTFLOW_KAFKA_SSL_CAFILE": "/etc/ca.pem",
        }
    )
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "marketing",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/ca.pem",
    }


def test_mutual_tls_files() -> None:
    options = example.security_options(
        {
            "INTENTFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
            "INTENTFLOW_KAFKA_SSL_CAFILE": "ca.pem",
            "INTENTFLOW_KAFKA_SSL_CERTFILE": "me.pem",
            "INTENTFLOW_KAFKA_SSL_KEYFILE": "me-key.pem",
        }
    )
    assert options["ssl_certfile"] == "me.pem" and options["ssl_keyfile"] == "me-key.pem"
    assert "sasl_mechanism" not in options


def test_plain_over_plaintext_is_refused_unless_allowed() -> None:
    env = {
        "INTENTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "INTENTFLOW_KAFKA_SASL_MECHANISM": "PLAIN",
        "INTENTFLOW_KAFKA_SASL_USERNAME": "marketing",
        "INTENTFLOW_KAFKA_SASL_PASSWORD": "s3cret",
    }
    with pytest.raises(ValueError, match="ALLOW_PLAIN_OVER_PLAINTEXT") as refused:
        example.security_options(env)
    assert "s3cret" not in str(refused.value)
    allowed = example.security_options(
        env | {"INTENTFLOW_KAFKA_ALLOW_PLAIN_OVER_PLAINTEXT": "true"}
    )
    assert allowed["sasl_mechanism"] == "PLAIN"


def test_a_sasl_protocol_without_credentials_names_the_variables() -> None:
    with pytest.raises(ValueError, match="INTENTFLOW_KAFKA_SASL_PASSWORD"):
        example.security_options({"INTENTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(ValueError, match="INTENTFLOW_KAFKA_SECURITY_PROTOCOL"):
        example.security_options({"INTENTFLOW_KAFKA_SECURITY_PROTOCOL": "TLS"})
