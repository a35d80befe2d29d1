"""One error hierarchy for intentflow.

Every subclass names the operator's action in its docstring, and every message names the
thing involved (topic, file, address, expected and got). The CLI prints ``str(error)`` and
exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class IntentflowError(Exception):
    """Root of every error intentflow raises on purpose. Read the message: it says what to do."""

    exit_code: int = 2


class ConfigError(IntentflowError):
    """A setting is invalid. Fix the named INTENTFLOW_* variable (see the README's table)."""


class ToolMissingError(IntentflowError):
    """A required program (java, mvn, promtool, ...) is not installed. Install the named package."""


class BrokerUnreachableError(IntentflowError):
    """No Kafka broker answered at the bootstrap address. Start one (`intentflow kafka start`)
    or point INTENTFLOW_KAFKA_BOOTSTRAP at a running broker."""


class KafkaTlsError(IntentflowError):
    """TLS with the broker failed. Point INTENTFLOW_KAFKA_SSL_CAFILE at the CA that signed the
    broker's certificate, give the client certificate and key the broker trusts (mutual TLS),
    or fix INTENTFLOW_KAFKA_SECURITY_PROTOCOL to what the listener speaks."""


class KafkaAuthenticationError(IntentflowError):
    """The broker refused the SASL credentials. Check INTENTFLOW_KAFKA_SASL_USERNAME,
    INTENTFLOW_KAFKA_SASL_PASSWORD and INTENTFLOW_KAFKA_SASL_MECHANISM against the cluster's
    users."""


class KafkaAuthorizationError(IntentflowError):
    """The broker authenticated the client, but an ACL it needs is missing. Ask the cluster's
    admin to grant the ACLs the message lists (the README's "Secured clusters" has them all)."""


class LocalKafkaError(IntentflowError):
    """The local development broker failed to start or stop. Read the log file it names."""


class TopicConfigError(IntentflowError):
    """A topic exists with a layout the worker cannot use (for example a different partition
    count than the table needs). Recreate the topic or change INTENTFLOW_PARTITIONS to match."""


class ModelError(IntentflowError):
    """A model bundle cannot be served. The previous model, if any, keeps serving."""


class ModelNotFoundError(ModelError):
    """No model bundle at the configured path. Train one (`intentflow train`) or fix
    INTENTFLOW_MODEL_PATH."""


class ModelCorruptError(ModelError):
    """A bundle file is missing, unreadable or inconsistent. Re-export the bundle."""


class FeatureSpecMismatchError(ModelError):
    """The bundle was trained on a different feature spec than this worker computes. Retrain
    the model with this version of intentflow, or deploy the worker version it was built for."""


class ExportParityError(ModelError):
    """The ONNX export does not match the Keras model within tolerance. Do not ship it; check
    the tf2onnx/onnxruntime versions and the opset."""


class ProduceError(IntentflowError):
    """Some produced records were not acknowledged by Kafka. Check the broker's log and the
    topic's configuration (message.max.bytes, min.insync.replicas), then run it again."""


class DataError(IntentflowError):
    """An input data file is unreadable or has no usable rows. Check the named file."""


class ProfileDecodeError(DataError):
    """A stored user profile cannot be decoded (unknown format version, or truncated bytes).
    Deploy a worker that knows the named version, or drop the profile table (and its changelog)
    so profiles rebuild from new events."""
