"""The deployment files hold together: Kubernetes manifests valid against the API
schema, and the timings and settings they state agree with what the server does."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from vantum.config import Config
from vantum.server.connections import CLOSE_GRACE_S
from vantum.server.workers import STOP_MARGIN_S

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S_VERSION = "1.30.0"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in _documents(path):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def test_every_manifest_validates_against_the_kubernetes_schema() -> None:
    manifests = _k8s()
    assert {"Deployment/vantum", "Service/vantum", "HorizontalPodAutoscaler/vantum"} <= set(
        manifests
    )
    for doc in manifests.values():
        # Raises ValidationError naming the field; strict refuses unknown fields.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_pod_gets_longer_than_its_drain_and_reads_readiness_from_health() -> None:
    manifests = _k8s()
    env = manifests["ConfigMap/vantum"]["data"]
    config = Config.from_env(env)  # every setting the ConfigMap gives is one the server takes
    pod = manifests["Deployment/vantum"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    needed = float(pre_stop[1]) + config.graceful_timeout + CLOSE_GRACE_S + STOP_MARGIN_S
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"  # 503 while draining
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > config.graceful_timeout
    hpa = manifests["HorizontalPodAutoscaler/vantum"]["spec"]
    (metric,) = hpa["metrics"]
    assert metric["pods"]["metric"]["name"] == "vantum_sessions_active"


def test_compose_stops_each_worker_after_its_drain_and_nginx_passes_websockets() -> None:
    (compose,) = _documents(DEPLOY / "compose.yaml")
    service = compose["services"]["vantum"]
    env = {k: v for k, v in service["environment"].items() if "${" not in str(v)}
    config = Config.from_env(env)
    assert config.redis_url and config.records_url and config.records_url.startswith("postgres")
    grace = float(re.fullmatch(r"(\d+)s", service["stop_grace_period"]).group(1))  # type: ignore[union-attr]
    assert grace >= config.graceful_timeout + CLOSE_GRACE_S
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_set_header Upgrade $http_upgrade;" in nginx
    assert "proxy_http_version 1.1;" in nginx
