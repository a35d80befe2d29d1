"""The Kubernetes base (deploy/kubernetes) renders, every object is valid offline, and the pieces
agree with each other and with the worker: the settings it sets are real settings, the probes
and the scrape hit the worker's web port, KEDA scales up to the partition count, and the
PrometheusRule carries exactly deploy/prometheus/alerts.yml.

Rendering needs `kubectl` (built-in kustomize) or `kustomize`; `make setup` installs kustomize
into .venv/bin when kubectl is missing, so a missing tool fails here instead of skipping.
"""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from streams.settings import ENV_PREFIX, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "kubernetes"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
CRD_SCHEMAS = Path(__file__).with_name("crd_schemas.yaml")

# The oldest Kubernetes minor this base is checked against, and the newest the package knows.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
BUILT_IN = {"ConfigMap", "Secret", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"}
CUSTOM = {"PodMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication"}
WORKER = "intentflow-worker"
DOCKERFILE_UID = 10001  # the `intentflow` user of both images
# What Prometheus calls the workers in alerts.yml and the dashboard (and in compose).
ALERT_JOB = "intentflow-worker"
# KEDA's Kafka scaler: trigger metadata and TriggerAuthentication parameters (KEDA 2.x docs).
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset",
    "excludePersistentLag", "limitToPartitionsWithLag", "version", "partitionLimitation",
    "sasl", "saslTokenProvider", "tls", "unsafeSsl", "awsRegion",
    # Read from the scale target's container environment instead of a literal.
    "bootstrapServersFromEnv", "consumerGroupFromEnv", "topicFromEnv",
}  # fmt: skip
KAFKA_AUTH_PARAMETERS = {"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}


# Rendering ------------------------------------------------------------------------------------


def kustomize_command() -> list[str]:
    """`kubectl kustomize BASE`, or `kustomize build BASE`; fail (never skip) without either."""
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize", str(BASE)]
    venv_bin = str(Path(sys.executable).parent)
    if kustomize := shutil.which("kustomize") or shutil.which("kustomize", path=venv_bin):
        return [kustomize, "build", str(BASE)]
    pytest.fail(
        "neither `kubectl` nor `kustomize` is installed, so deploy/kubernetes cannot be "
        "rendered: run `make setup` (it installs kustomize into .venv/bin with Go)"
    )


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    cmd = kustomize_command()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"`{' '.join(cmd)}` failed:\n{result.stderr}"
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs, "kustomize rendered nothing"
    return docs


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


@pytest.fixture(scope="module")
def statefulset(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "StatefulSet")


@pytest.fixture(scope="module")
def pod(statefulset: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = statefulset["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def worker(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod["containers"] if c["name"] == "worker"]
    return container


@pytest.fixture(scope="module")
def settings_map(objects: list[dict[str, Any]], worker: dict[str, Any]) -> dict[str, str]:
    """The ConfigMap the worker takes its environment from."""
    [ref] = [s["configMapRef"]["name"] for s in worker["envFrom"] if "configMapRef" in s]
    [config] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == ref]
    data: dict[str, str] = config["data"]
    return data


def secret_values(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    [secret] = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name]
    values = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    values.update(secret.get("stringData", {}))
    return values


# Offline schema validation --------------------------------------------------------------------


@cache
def crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    defs = yaml.safe_load(CRD_SCHEMAS.read_text())["$defs"]
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{kind}", "$defs": defs})


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of one object: Kubernetes' own schemas (strict: unknown fields
    are errors) for built-in kinds, crd_schemas.yaml for the custom resources."""
    kind = obj["kind"]
    if kind in CUSTOM:
        return [
            f"{kind}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in crd_validator(kind).iter_errors(obj)
        ]
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(
                f"{kind} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}"
            )
    return errors


def test_the_base_renders_exactly_the_expected_objects(objects: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(BUILT_IN | CUSTOM), kinds
    for obj in objects:
        assert "namespace" not in obj["metadata"], "the base leaves the namespace to overlays"


def test_every_object_is_valid_against_its_schema(objects: list[dict[str, Any]]) -> None:
    errors = [error for obj in objects for error in schema_errors(obj)]
    assert not errors, "\n".join(errors)


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node: Any = broken
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    return broken


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("StatefulSet", "spec.template.spec.containers.0.livenessprobe", {}),  # misspelt field
        ("StatefulSet", "spec.template.spec.containers.0.ports.0.containerPort", "6066"),
        ("NetworkPolicy", "spec.policyTypes", "Ingress"),
        ("ScaledObject", "spec.maxReplicaCount", "4"),
        ("ScaledObject", "spec.triggers.0.metadata.lagThreshold", 2000),
        ("ScaledObject", "spec.triggers.0.authenticationRef.kind", "Secret"),
        ("TriggerAuthentication", "spec.secretTargetRef.0.secret", "x"),
        ("PodMonitor", "spec.podMetricsEndpoints.0.interval", "15 seconds"),
        ("PodMonitor", "spec.podMetricsEndpoints.0.relabelings.0.action", "rename"),
        ("PrometheusRule", "spec.groups.0.rules.0.record", "also_a_recording_rule"),
        ("PrometheusRule", "spec.groups.0.rules.0.for", "2 minutes"),
    ],
)
def test_the_schema_checks_refuse_a_broken_object(
    objects: list[dict[str, Any]], kind: str, path: str, value: Any
) -> None:
    """The validation above can fail: one wrong field is enough."""
    original = one(objects, kind)
    assert not schema_errors(original)
    assert schema_errors(_set(original, path, value)), f"{kind}.{path}={value!r} was accepted"


# The worker's settings -----------------------------------------------------------------------


def unknown_settings(names: set[str]) -> set[str]:
    """Names that are not ENV_PREFIX + a Settings field, upper-cased (Settings ignores them)."""
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return names - fields


def test_unknown_settings_spots_a_typo() -> None:
    assert unknown_settings({"INTENTFLOW_WEB_PORT", "INTENTFLOW_WEB_PROT", "WEB_PORT"}) == {
        "INTENTFLOW_WEB_PROT",
        "WEB_PORT",
    }


def worker_environment(
    objects: list[dict[str, Any]], worker: dict[str, Any], settings_map: dict[str, str]
) -> dict[str, str]:
    """Every variable the worker container gets, with the values the base gives it."""
    env = dict(settings_map)
    for var in worker.get("env", []):
        assert var["name"] not in env, f"{var['name']} is set twice (ConfigMap and env)"
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            values = secret_values(objects, ref["name"])
            assert ref["key"] in values, f"{var['name']}: no key {ref['key']} in {ref['name']}"
            env[var["name"]] = values[ref["key"]]
    return env


def test_the_worker_gets_only_real_settings_and_they_validate(
    objects: list[dict[str, Any]],
    pod: dict[str, Any],
    worker: dict[str, Any],
    settings_map: dict[str, str],
) -> None:
    env = worker_environment(objects, worker, settings_map)
    assert not unknown_settings(set(env)), (
        f"not settings of the worker: {unknown_settings(set(env))}"
    )
    settings = load_settings(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()})
    assert settings.web_host == "0.0.0.0", "in a container the web server must listen on all"
    # Only the worker reads settings; the model init container gets none.
    for container in pod.get("initContainers", []):
        assert not container.get("env") and not container.get("envFrom"), container["name"]
    # No kubelet-injected service variables (INTENTFLOW_WEB_PORT=tcp://... from a Service named
    # intentflow-web would override a setting).
    assert pod["enableServiceLinks"] is False


def test_secrets_come_from_the_secret(
    worker: dict[str, Any], objects: list[dict[str, Any]]
) -> None:
    refs = {
        var["name"]: var["valueFrom"]["secretKeyRef"]
        for var in worker["env"]
        if "secretKeyRef" in var.get("valueFrom", {})
    }
    assert set(refs) == {
        "INTENTFLOW_KAFKA_SASL_USERNAME",
        "INTENTFLOW_KAFKA_SASL_PASSWORD",
        "INTENTFLOW_PSEUDONYM_KEYS",
    }
    [secret] = {ref["name"] for ref in refs.values()}
    found = one(objects, "Secret")
    assert found["metadata"]["name"] == secret
    assert {ref["key"] for ref in refs.values()} <= set(found["stringData"])
    # The placeholder is a well-formed key list, so a forgotten overlay fails loudly on
    # "CHANGE-ME" in review, not on a parse error in the pod.
    from pydantic import SecretStr

    from streams.privacy.pseudonyms import parse_keys

    assert parse_keys(SecretStr(found["stringData"]["pseudonym-keys"]))
    assert all(var.get("value") is None for var in worker["env"]), "a literal value in env"


# Probes, ports, volumes, security -----------------------------------------------------------


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_probes_hit_livez_and_readyz_on_the_web_port(
    worker: dict[str, Any], settings_map: dict[str, str]
) -> None:
    web_port = int(settings_map["INTENTFLOW_WEB_PORT"])
    expected = {"startupProbe": "/livez", "livenessProbe": "/livez", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        get = worker[probe]["httpGet"]
        assert get["path"] == path, probe
        assert container_port(worker, get["port"]) == web_port, probe


def test_the_worker_runs_the_images_command(worker: dict[str, Any]) -> None:
    # The same command as the Dockerfile's CMD and docker-compose.yml's worker.
    assert worker["command"] == ["intentflow", "worker"]
    assert worker["image"].split(":")[0].endswith("intentflow/worker")


def mounts(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def volume_at(container: dict[str, Any], path: str) -> dict[str, Any]:
    """The mount that holds `path` (the longest mount path that is a parent of it)."""
    holding = [m for at, m in mounts(container).items() if Path(path).is_relative_to(at)]
    assert holding, f"{path} is on no volume of {container['name']}"
    return max(holding, key=lambda m: len(m["mountPath"]))


def test_rocksdb_state_is_on_a_volume_per_pod(
    statefulset: dict[str, Any], worker: dict[str, Any], settings_map: dict[str, str]
) -> None:
    mount = volume_at(worker, settings_map["INTENTFLOW_DATA_DIR"])
    claims = {t["metadata"]["name"]: t for t in statefulset["spec"]["volumeClaimTemplates"]}
    assert mount["name"] in claims, f"INTENTFLOW_DATA_DIR is on {mount['name']}, not a PVC"
    assert not mount.get("readOnly")
    assert claims[mount["name"]]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_model_init_container_fills_the_model_path(
    pod: dict[str, Any], worker: dict[str, Any], settings_map: dict[str, str]
) -> None:
    model_path = settings_map["INTENTFLOW_MODEL_PATH"]
    [init] = [c for c in pod["initContainers"] if c["name"] == "model"]
    worker_mount = volume_at(worker, model_path)
    init_mount = volume_at(init, model_path)
    assert worker_mount["name"] == init_mount["name"]
    assert worker_mount["mountPath"] == init_mount["mountPath"]
    assert worker_mount.get("readOnly") is True, "the worker only reads the model"
    [volume] = [v for v in pod["volumes"] if v["name"] == worker_mount["name"]]
    assert "emptyDir" in volume
    script = " ".join(init["command"])
    assert f"mv /app/models/incoming {model_path}" in script
    assert "model.onnx" in script and "metadata.json" in script


def test_containers_run_as_the_images_user_with_a_read_only_root(
    pod: dict[str, Any], worker: dict[str, Any]
) -> None:
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == DOCKERFILE_UID
    assert security["fsGroup"] == DOCKERFILE_UID, "the PVC must be writable by the user"
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["initContainers"] + pod["containers"]:
        name = container["name"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name
    # With a read-only root, every path the worker writes is a volume.
    assert {"/app/var", "/app/models", "/tmp"} <= set(mounts(worker))


def test_the_statefulset_leaves_the_replica_count_to_keda(statefulset: dict[str, Any]) -> None:
    assert "replicas" not in statefulset["spec"], "a fixed count fights the autoscaler"


# Selectors and services -----------------------------------------------------------------------


def test_every_selector_picks_the_worker_pods(
    objects: list[dict[str, Any]], statefulset: dict[str, Any]
) -> None:
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "StatefulSet": statefulset["spec"]["selector"]["matchLabels"],
        "Service": one(objects, "Service")["spec"]["selector"],
        "PodDisruptionBudget": one(objects, "PodDisruptionBudget")["spec"]["selector"][
            "matchLabels"
        ],
        "NetworkPolicy": one(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
        "PodMonitor": one(objects, "PodMonitor")["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector, f"{kind} selects every pod"
        assert selector.items() <= labels.items(), f"{kind} selects {selector}, pods have {labels}"


def test_the_service_is_headless_and_named_by_the_statefulset(
    objects: list[dict[str, Any]], statefulset: dict[str, Any], worker: dict[str, Any]
) -> None:
    service = one(objects, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    [port] = service["spec"]["ports"]
    assert container_port(worker, port["targetPort"]) == port["port"]


def test_the_disruption_budget_allows_one_worker_down(objects: list[dict[str, Any]]) -> None:
    spec = one(objects, "PodDisruptionBudget")["spec"]
    assert spec == {"maxUnavailable": 1, "selector": spec["selector"]}


def bootstrap_ports(bootstrap: str) -> set[int]:
    return {int(server.rsplit(":", 1)[1]) for server in bootstrap.split(",")}


def test_the_network_policy_allows_the_web_port_in_and_kafka_and_dns_out(
    objects: list[dict[str, Any]], worker: dict[str, Any], settings_map: dict[str, str]
) -> None:
    spec = one(objects, "NetworkPolicy")["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    ingress = [
        (p["protocol"], container_port(worker, p["port"]))
        for r in spec["ingress"]
        for p in r["ports"]
    ]
    assert ingress == [("TCP", int(settings_map["INTENTFLOW_WEB_PORT"]))]
    egress = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    kafka = {("TCP", port) for port in bootstrap_ports(settings_map["INTENTFLOW_KAFKA_BOOTSTRAP"])}
    assert egress == kafka | {("UDP", 53), ("TCP", 53)}


# Prometheus Operator -------------------------------------------------------------------------


def alerts_yml_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(ALERTS.read_text())["groups"]
    return groups


def test_the_prometheus_rule_carries_exactly_alerts_yml(objects: list[dict[str, Any]]) -> None:
    groups = one(objects, "PrometheusRule")["spec"]["groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in alerts_yml_groups()]
    assert groups == alerts_yml_groups(), (
        "deploy/kubernetes/prometheusrule.yaml differs from deploy/prometheus/alerts.yml: "
        "run `make k8s-alerts`"
    )


def test_the_generated_rule_file_is_current() -> None:
    script = BASE / "sync_alerts.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_pod_monitor_scrapes_metrics_as_the_job_the_alerts_select(
    objects: list[dict[str, Any]], worker: dict[str, Any], settings_map: dict[str, str]
) -> None:
    [endpoint] = one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    assert container_port(worker, endpoint["port"]) == int(settings_map["INTENTFLOW_WEB_PORT"])
    [job] = [r for r in endpoint["relabelings"] if r["targetLabel"] == "job"]
    assert job["action"] == "replace" and "sourceLabels" not in job
    exprs = " ".join(rule["expr"] for group in alerts_yml_groups() for rule in group["rules"])
    assert set(re.findall(r'job="([^"]+)"', exprs)) == {job["replacement"]} == {ALERT_JOB}


# KEDA ----------------------------------------------------------------------------------------


def test_keda_scales_the_statefulset_up_to_the_partition_count(
    objects: list[dict[str, Any]], statefulset: dict[str, Any], settings_map: dict[str, str]
) -> None:
    spec = one(objects, "ScaledObject")["spec"]
    target = spec["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "StatefulSet",
        statefulset["metadata"]["name"],
    )
    assert spec["maxReplicaCount"] == int(settings_map["INTENTFLOW_PARTITIONS"])
    assert spec["minReplicaCount"] >= 1, "at zero workers nothing is scored"


def test_keda_watches_the_workers_group_on_the_input_topic(
    objects: list[dict[str, Any]], worker: dict[str, Any], settings_map: dict[str, str]
) -> None:
    spec = one(objects, "ScaledObject")["spec"]
    assert spec["scaleTargetRef"]["envSourceContainerName"] == worker["name"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KAFKA_TRIGGER_KEYS, set(meta) - KAFKA_TRIGGER_KEYS
    # Broker, group and topic come from the worker's own settings: KEDA resolves *FromEnv in
    # the target container's environment, and a literal value would take precedence over it.
    from_env = {
        "bootstrapServers": "INTENTFLOW_KAFKA_BOOTSTRAP",
        "consumerGroup": "INTENTFLOW_APP_ID",  # Faust's group id is the app id
        "topic": "INTENTFLOW_TOPIC_EVENTS",
    }
    for param, setting in from_env.items():
        assert meta.get(f"{param}FromEnv") == setting, param
        assert param not in meta, f"a literal {param} overrides {param}FromEnv"
        assert setting in settings_map, f"{setting} is not in the worker's environment"
    assert int(meta["lagThreshold"]) > 0
    assert meta["offsetResetPolicy"] == "earliest"  # as the workers' consumer
    assert meta.get("allowIdleConsumers", "false") == "false"
    # Kafka 4.x refuses protocol versions older than broker 2.1 (KIP-896); KEDA's default is 1.0.
    assert tuple(int(n) for n in meta["version"].split(".")[:2]) >= (2, 1)
    protocol = settings_map["INTENTFLOW_KAFKA_SECURITY_PROTOCOL"]
    assert meta.get("tls", "disable") == ("enable" if protocol.endswith("SSL") else "disable")
    if protocol.startswith("SASL"):
        mechanism = settings_map["INTENTFLOW_KAFKA_SASL_MECHANISM"]
        assert meta["sasl"] == KEDA_SASL[mechanism]
    else:
        assert meta.get("sasl", "none") == "none"


def test_keda_logs_in_with_the_workers_credentials(
    objects: list[dict[str, Any]], worker: dict[str, Any]
) -> None:
    [trigger] = one(objects, "ScaledObject")["spec"]["triggers"]
    auth = one(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) <= KAFKA_AUTH_PARAMETERS
    by_env = {
        var["name"]: (
            var["valueFrom"]["secretKeyRef"]["name"],
            var["valueFrom"]["secretKeyRef"]["key"],
        )
        for var in worker["env"]
    }
    assert refs["username"] == by_env["INTENTFLOW_KAFKA_SASL_USERNAME"]
    assert refs["password"] == by_env["INTENTFLOW_KAFKA_SASL_PASSWORD"]
