"""The deployment files (docker-compose, Dockerfile, Prometheus, Grafana) are valid for the tools
that read them, agree with each other, and only use metrics the worker really exposes.

promtool and docker-compose come from Debian (`.ci/run` installs them); a test skips, saying
so, only when its tool is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.settings import ENV_PREFIX, Settings, load_settings
from streams.worker.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
PROM_DIR = REPO / "deploy" / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "intentflow.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "intentflow.yml"

WORKER_JOB = "intentflow-worker"
# streams.worker.app passes this name_prefix to faust's setup_prometheus_sensors.
FAUST_PREFIX = "intentflow"
# Series Prometheus itself makes: `up` per target, `ALERTS` per pending or firing alert.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` is not installed (Debian: apt-get install {name}; .ci/run does)")
    return path


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, (
        f"`{' '.join(cmd)}` exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# docker-compose and Dockerfile ---------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (paths absolute, anchors merged)."""
    tool = _tool("docker-compose")
    out = _run(tool, "-f", str(COMPOSE), "config").stdout
    resolved: dict[str, Any] = yaml.safe_load(out)
    return resolved


def test_compose_config_is_valid_and_quiet() -> None:
    result = _run(_tool("docker-compose"), "-f", str(COMPOSE), "config", "-q")
    assert "WARNING" not in result.stderr, result.stderr


def test_compose_has_the_whole_stack(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {"kafka", "topic-init", "model-init", "worker", "simulator", "prometheus", "grafana"}
    assert expected <= set(services), sorted(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "healthcheck" in services["kafka"]
    assert services["topic-init"]["command"][-2:] == ["topics", "create"]
    assert services["topic-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["model-init"]["build"]["target"] == "train"
    assert services["simulator"]["command"][:2] == ["intentflow", "simulate"]
    assert "--kafka" in services["simulator"]["command"]
    assert 9090 in _container_ports(services["prometheus"])
    assert 3000 in _container_ports(services["grafana"])
    grafana_env = services["grafana"]["environment"]
    assert grafana_env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_compose_worker_scales(compose: dict[str, Any]) -> None:
    """`--scale worker=N` needs no fixed host port, no container name and per-replica state."""
    worker = compose["services"]["worker"]
    assert "ports" not in worker, "a published host port makes `--scale worker=N` collide"
    assert "container_name" not in worker
    assert worker["build"]["target"] == "worker"
    env = worker["environment"]
    assert env["INTENTFLOW_WEB_HOST"] == "0.0.0.0"
    data_dir = env["INTENTFLOW_DATA_DIR"]
    per_replica = [_volume_target(v) for v in worker.get("volumes", []) if _is_anonymous(v)]
    per_replica += [t.split(":")[0] for t in worker.get("tmpfs", [])]
    assert any(data_dir.startswith(t.rstrip("/") + "/") or data_dir == t for t in per_replica), (
        f"INTENTFLOW_DATA_DIR={data_dir} is not on a tmpfs or anonymous volume: {per_replica}"
    )
    assert "/readyz" in " ".join(worker["healthcheck"]["test"])
    assert f":{env.get('INTENTFLOW_WEB_PORT', 6066)}/readyz" in " ".join(
        worker["healthcheck"]["test"]
    )
    deps = worker["depends_on"]
    assert deps["topic-init"]["condition"] == "service_completed_successfully"
    assert deps["model-init"]["condition"] == "service_completed_successfully"


def _container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["target"]))
        else:  # [host_ip:][host_port:]container_port[/protocol]
            ports.add(int(str(port).rsplit(":", 1)[-1].split("/")[0]))
    return ports


def _is_anonymous(volume: Any) -> bool:
    if isinstance(volume, dict):
        return volume.get("type") == "volume" and not volume.get("source")
    return ":" not in volume


def _volume_target(volume: Any) -> str:
    if isinstance(volume, dict):
        return str(volume["target"])
    parts = str(volume).split(":")
    return parts[0] if len(parts) == 1 else parts[1]


def _bind_sources(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                yield volume["source"], volume["target"]
        else:
            parts = str(volume).split(":")
            if len(parts) >= 2 and parts[0].startswith(("/", ".", "~")):
                yield parts[0], parts[1]


def test_everything_compose_mounts_or_builds_exists_in_the_repo(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = Path(build["context"]).resolve()
            assert context.is_dir() and context.is_relative_to(REPO), f"{name}: {context}"
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
            if "target" in build:
                assert build["target"] in _dockerfile_stages(dockerfile), (
                    f"{name}: no stage {build['target']!r} in {dockerfile}"
                )
            checked += 1
        for source, target in _bind_sources(service):
            path = Path(source).resolve()
            assert path.is_relative_to(REPO), f"{name} mounts {path}, outside the repository"
            assert path.exists(), f"{name} mounts {source} at {target}, which does not exist"
            checked += 1
    assert checked >= 7  # 4 builds, 3 bind mounts


def test_compose_intentflow_variables_are_real_settings(compose: dict[str, Any]) -> None:
    """Settings ignore unknown variables, so a misspelt INTENTFLOW_* would be silently lost."""
    fields = {name.upper() for name in Settings.model_fields}
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        for key in ours:
            assert key.removeprefix(ENV_PREFIX) in fields, f"{name}: unknown setting {key}"
        if ours:
            load_settings(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in ours.items()})


@cache
def _dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, dict[str, Any]]:
    """name -> {"from": base, "lines": instructions, "copies_from": stages} of each stage."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if current is None and (m := re.match(r"ARG\s+(\w+)=(\S+)", line)):
            args[m[1]] = m[2]
        if m := re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE):
            base = re.sub(r"\$\{(\w+)\}", lambda a: args.get(a[1], a[0]), m[1])
            current = {"from": base, "lines": [], "copies_from": []}
            stages[m[2] or f"stage{len(stages)}"] = current
        elif current is not None:
            current["lines"].append(line)
            if m := re.match(r"COPY\s+--from=(\S+)", line):
                current["copies_from"].append(m[1])
    return stages


def _lineage(stage: str) -> set[str]:
    stages = _dockerfile_stages()
    seen: set[str] = set()
    todo = [stage]
    while todo:
        name = todo.pop()
        if name in seen or name not in stages:
            continue
        seen.add(name)
        todo.append(stages[name]["from"])
        todo.extend(stages[name]["copies_from"])
    return seen


def test_dockerfile_worker_has_no_tensorflow_and_runs_as_non_root() -> None:
    stages = _dockerfile_stages()
    assert {"worker", "train"} <= set(stages)
    lineage = _lineage("worker")
    base = [stages[s]["from"] for s in lineage if stages[s]["from"] not in stages]
    assert base and all(b == "python:3.11-slim" for b in base), base
    for name in lineage:
        for line in stages[name]["lines"]:
            assert "[train]" not in line and "tensorflow" not in line.lower(), (
                f"stage {name} (part of the worker image) installs the train extra: {line}"
            )
    assert any("[train]" in line for s in _lineage("train") for line in stages[s]["lines"])
    for target in ("worker", "train"):
        users = [ln.split()[1] for ln in stages[target]["lines"] if ln.upper().startswith("USER ")]
        assert users and users[-1] not in {"root", "0"}, f"{target} runs as {users or 'root'}"


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "an allow-list .dockerignore starts by excluding everything"
    allowed = {ln[1:] for ln in rules if ln.startswith("!")}
    assert {".venv", ".git", "models", "var", "data", ".cache"}.isdisjoint(allowed)
    for stage in _dockerfile_stages().values():
        for line in stage["lines"]:
            if line.startswith("COPY") and "--from=" not in line:
                for source in line.split()[1:-1]:
                    assert source in allowed, f"{line!r} copies {source}, which is ignored"


# Prometheus ----------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    _run(_tool("promtool"), "check", "config", str(PROM_CONFIG))


def test_promtool_check_rules() -> None:
    _run(_tool("promtool"), "check", "rules", str(ALERTS))


def test_promtool_test_rules() -> None:
    result = _run(_tool("promtool"), "test", "rules", str(ALERTS_TEST))
    assert "SUCCESS" in result.stdout


def test_prometheus_scrapes_every_worker_replica(compose: dict[str, Any]) -> None:
    config = _yaml(PROM_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_job = jobs[WORKER_JOB]
    [sd] = worker_job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd.get("type", "SRV") == "A"
    worker_env = compose["services"]["worker"]["environment"]
    assert sd["port"] == int(worker_env.get("INTENTFLOW_WEB_PORT", 6066))
    assert worker_job.get("metrics_path", "/metrics") == "/metrics"
    assert "alerts.yml" in config["rule_files"]
    # The compose service mounts this directory where the server's command line looks.
    prometheus = compose["services"]["prometheus"]
    mounts = {target: Path(source) for source, target in _bind_sources(prometheus)}
    assert mounts.get("/etc/prometheus") == PROM_DIR
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), Counter(names).most_common(3)
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"] and notes["threshold"], name
        assert notes["runbook"].startswith("https://github.com/intentflow/intentflow#"), name
        assert "user_id" not in rule["expr"], f"{name}: aggregate without user-level labels"


def test_the_required_alerts_exist() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    assert "intentflow_consumer_lag_messages" in exprs["IntentflowConsumerLagGrowing"]
    assert "intentflow_dlq_writes_total" in exprs["IntentflowDeadLetterRateHigh"]
    latency = exprs["IntentflowScoreLatencyHigh"]
    assert "histogram_quantile(0.99" in latency
    assert "intentflow_event_to_score_latency_seconds_bucket" in latency
    assert 'outcome=~"missing|corrupt|spec_mismatch"' in exprs["IntentflowModelReloadFailed"]
    assert f'up{{job="{WORKER_JOB}"}} == 0' in exprs["IntentflowWorkerDown"]
    assert "intentflow_scores_published_total" in exprs["IntentflowNoScoresPublished"]
    budget = next(r for r in _alert_rules() if r["alert"] == "IntentflowScoreLatencyHigh")
    assert "0.5s" in budget["annotations"]["budget"]


def test_every_alert_has_tests_that_fire_and_tests_that_stay_quiet() -> None:
    fires: Counter[str] = Counter()
    quiet: Counter[str] = Counter()
    for case in _yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet)[check["alertname"]] += 1
    for name in (rule["alert"] for rule in _alert_rules()):
        assert fires[name] >= 1, f"no test makes {name} fire"
        assert quiet[name] >= 1, f"no test checks that {name} stays quiet"


# Grafana -------------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_dashboard_is_provisionable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    panels = list(_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {Counter(ids).most_common(3)}"
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"{panel['title']} has no query"
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_defaults_to_the_provisioned_datasource() -> None:
    [source] = _yaml(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    assert datasource["current"]["value"] == source["uid"]


def test_grafana_provisioning_matches_the_compose_mounts(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {target: Path(source) for source, target in _bind_sources(grafana)}
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    [provider] = _yaml(DASHBOARD_PROVIDERS)["providers"]
    dashboards_dir = provider["options"]["path"]
    assert mounts[dashboards_dir] == DASHBOARD.parent
    home = grafana["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home == f"{dashboards_dir}/{DASHBOARD.name}"


def test_dashboard_has_the_operations_panels() -> None:
    text = " ".join(
        t["expr"] for p in _panels(_dashboard()["panels"]) for t in p.get("targets", [])
    )
    for needle in (
        "intentflow_events_consumed_total",
        "intentflow_scores_published_total",
        "intentflow_dlq_writes_total",
        "intentflow_event_to_score_latency_seconds_bucket",
        "intentflow_ingest_to_score_latency_seconds_bucket",
        "intentflow_consumer_lag_messages",
        "intentflow_inference_batch_events_bucket",
        "intentflow_inference_duration_seconds",
        "intentflow_model_info",
        "intentflow_model_reloads_total",
        "intentflow_profile_table_users",
        "intentflow_purchase_probability_bucket",
        "intentflow_worker_ready",
        "up{",
    ):
        assert needle in text, f"no panel queries {needle}"
    for p in (0.5, 0.95, 0.99):
        assert f"histogram_quantile({p}" in text


# PromQL: names and syntax --------------------------------------------------------------------


def _family_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        elif family.type == "summary":
            names |= {family.name, f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


@cache
def known_metric_names() -> frozenset[str]:
    """Every series name a worker exposes: intentflow's metrics and Faust's sensors."""
    from faust.sensors.prometheus import FaustMetrics

    faust_registry = CollectorRegistry()
    FaustMetrics.create(faust_registry, FAUST_PREFIX)
    return frozenset(
        _family_names(Metrics().registry) | _family_names(faust_registry) | PROMETHEUS_SERIES
    )


_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_CLAUSES = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:.])[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "atan2"}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords dropped)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    expr = _CLAUSES.sub(" ", _RANGES.sub(" ", _BRACES.sub(" ", _STRINGS.sub('""', expr))))
    names = set()
    for match in _IDENT.finditer(expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match[0].lower() in _KEYWORDS:
            continue  # a function or aggregation, or an operator keyword
        names.add(match[0])
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="x", le=~"0.5|1"}[5m])))'
        " > 0.5 and on (instance) b_total offset 10m unless sum(c) without (d) or vector(1)"
        ' or label_replace(e, "f", "$1", "g", "(.*)") / ignoring(h) group_left(i) j'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "e", "j"}


def _dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = _dashboard()
    out = [
        (f"{p['title']} [{t['refId']}]", t["expr"])
        for p in _panels(dashboard["panels"])
        for t in p.get("targets", [])
    ]
    out += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"] if "expr" in a]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            selector = query[len("label_values(") : query.rindex(",")]
            out.append((f"variable {variable['name']}", selector))
    return out


def test_promql_only_references_metrics_the_worker_exposes() -> None:
    known = known_metric_names()
    exprs = _dashboard_exprs() + [(r["alert"], r["expr"]) for r in _alert_rules()]
    assert len(exprs) > 30
    unknown = {
        name: sorted(metric_names(expr) - known)
        for name, expr in exprs
        if metric_names(expr) - known
    }
    assert not unknown, f"unknown metric names (see streams/metrics.py): {unknown}"
    used = set().union(*(metric_names(e) for _, e in exprs))
    assert "intentflow_event_to_score_latency_seconds_bucket" in used


def test_dashboard_promql_parses(tmp_path: Path) -> None:
    """promtool parses every dashboard query (as a recording rule) with Grafana's variables
    replaced; Grafana itself would only show a parse error on the panel."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _expand_for_promtool(expr)}
        for i, (_, expr) in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run(_tool("promtool"), "check", "rules", str(path))


def _expand_for_promtool(expr: str) -> str:
    for name, value in {**GRAFANA_VARIABLES, "$instance": ".*"}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"an unhandled Grafana variable in {expr!r}"
    return expr
