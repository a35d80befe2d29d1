"""The settings object: defaults, validation messages, secrets, and Faust isolation."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.kafka.connection import connection
from streams.settings import ScoringPolicy, Settings, load_settings


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("INTENTFLOW_"):
            monkeypatch.delenv(name)
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert (s.topic_events, s.topic_scores, s.topic_dlq) == (
        "clickstream.v1",
        "purchase-scores.v1",
        "clickstream.dlq.v2",
    )
    assert str(s.model_path) == "models/current"
    assert s.scoring_policy is ScoringPolicy.EVERY_EVENT


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTENTFLOW_KAFKA_BOOTSTRAP", "a:1, b:2")
    monkeypatch.setenv("INTENTFLOW_SCORING_POLICY", "throttled")
    s = load_settings()
    assert s.bootstrap_servers == ["a:1", "b:2"]
    assert s.scoring_policy is ScoringPolicy.THROTTLED


def test_every_bad_setting_is_named_in_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTENTFLOW_KAFKA_BOOTSTRAP", "no-port")
    monkeypatch.setenv("INTENTFLOW_BATCH_MAX", "0")
    monkeypatch.setenv("INTENTFLOW_SCORING_POLICY", "sometimes")
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    for name in ("INTENTFLOW_KAFKA_BOOTSTRAP", "INTENTFLOW_BATCH_MAX", "INTENTFLOW_SCORING_POLICY"):
        assert name in text
    assert "'no-port' is not host:port" in text


def test_sasl_needs_credentials_and_keeps_the_password_secret() -> None:
    with pytest.raises(ConfigError, match="INTENTFLOW_KAFKA_SASL_MECHANISM"):
        load_settings(kafka_security_protocol="SASL_SSL")
    s = load_settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="hunter2",
    )
    assert "hunter2" not in repr(s)
    assert connection(s).kafka_python()["sasl_plain_password"] == "hunter2"


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(Exception, match="frozen"):
        s.batch_max = 5  # type: ignore[misc]


def test_faust_ignores_its_own_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """BROKER_URL and friends must not silently override the settings object."""
    from streams.model.server import ModelServer
    from streams.worker.app import create_app
    from streams.worker.metrics import Metrics

    monkeypatch.setenv("BROKER_URL", "kafka://evil:9999")
    monkeypatch.setenv("WEB_PORT", "1")
    monkeypatch.setenv("APP_DATADIR", "/nonexistent")
    settings = load_settings(kafka_bootstrap="127.0.0.1:9555", web_port=7001, data_dir=tmp_path)
    metrics = Metrics()
    worker = create_app(
        settings,
        models=ModelServer(settings.model_path, threads=1, on_outcome=metrics.model_outcome),
        metrics=metrics,
    )  # fmt: skip
    conf = worker.app.conf
    assert [str(u) for u in conf.broker] == ["kafka://127.0.0.1:9555"]
    assert conf.web_port == 7001
    assert str(conf.datadir).startswith(str(tmp_path))
    assert conf.topic_partitions == settings.partitions
    worker.executor.shutdown()


def test_client_options_use_each_librarys_key_names() -> None:
    s = load_settings(
        kafka_bootstrap="a:1,b:2",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="svc",
        kafka_sasl_password="pw",
        kafka_ssl_cafile="/etc/ca.pem",
    )
    assert connection(s).kafka_python() == {
        "bootstrap_servers": ["a:1", "b:2"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
        "ssl_cafile": "/etc/ca.pem",
    }
    assert connection(s).librdkafka() == {
        "bootstrap.servers": "a:1,b:2",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "svc",
        "sasl.password": "pw",
        "ssl.ca.location": "/etc/ca.pem",
    }
    plain = load_settings(kafka_bootstrap="h:9")
    assert connection(plain).librdkafka() == {
        "bootstrap.servers": "h:9",
        "security.protocol": "PLAINTEXT",
    }


def test_exploration_defaults_are_the_evaluated_policy_and_bad_knobs_name_the_variable() -> None:
    from streams.features.explore import ExploreConfig

    # The worker's defaults are the ones evaluate-explore measured (ExploreConfig()).
    assert load_settings().explore_config == ExploreConfig()
    assert load_settings(explore=False).explore_config is None
    custom = load_settings(explore_rate=0.25, explore_slots=3, explore_window_hours=2)
    assert custom.explore_config == ExploreConfig(rate=0.25, slots=3, window_s=7200.0)
    for overrides, variable in (
        ({"explore_policy": "ucb"}, "INTENTFLOW_EXPLORE_POLICY"),
        ({"explore_rate": 1.5}, "INTENTFLOW_EXPLORE_RATE"),
        ({"explore_slots": 0}, "INTENTFLOW_EXPLORE_SLOTS"),
        ({"explore_floor": -0.1}, "INTENTFLOW_EXPLORE_FLOOR"),
        ({"explore_window_hours": 0}, "INTENTFLOW_EXPLORE_WINDOW_HOURS"),
    ):
        with pytest.raises(ConfigError, match=variable):
            load_settings(**overrides)


def test_the_profile_format_written_is_the_current_one_or_the_one_before() -> None:
    from streams.features.encoding import PROFILE_FORMAT_VERSION, WRITABLE_VERSIONS

    assert load_settings().profile_format == PROFILE_FORMAT_VERSION
    for version in WRITABLE_VERSIONS:
        assert load_settings(profile_format=version).profile_format == version
    for bad in (min(WRITABLE_VERSIONS) - 1, PROFILE_FORMAT_VERSION + 1):
        with pytest.raises(ConfigError, match="INTENTFLOW_PROFILE_FORMAT"):
            load_settings(profile_format=bad)
