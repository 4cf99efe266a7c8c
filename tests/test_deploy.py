"""The deploy files are valid and agree with the gateway (issue 12).

No container engine runs here: the Kubernetes manifests are checked against the API's
own schemas (kubernetes-validate, strict: unknown fields are errors), the compose file
against the Compose specification's schema (check-jsonschema's copy), the HAProxy
configuration by HAProxy itself; tests/test_cluster.py runs the same topology with
processes.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.cluster.sessions import SessionRegistry
from gateway.config import Config
from gateway.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, Any]:
    [doc] = [d for d in manifests() if d["kind"] == kind]
    return doc


def test_manifests_match_the_kubernetes_schemas() -> None:
    kinds = set()
    for doc in manifests():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        kinds.add(doc["kind"])
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds
    # The check is real: a misspelt field is refused.
    broken = copy.deepcopy(by_kind("Deployment"))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 40
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_drains_within_its_grace_period() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    drain_s = float(env.get("GATEWAY_SERVER__DRAIN_TIMEOUT_S") or Config().server.drain_timeout_s)
    assert pod["terminationGracePeriodSeconds"] > drain_s + 5
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/api/health"
    assert "/api/health/drain" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert env["GATEWAY_CLUSTER__ENABLED"] == "true"
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_the_autoscaler_reads_a_metric_the_gateway_exports() -> None:
    [metric] = by_kind("HorizontalPodAutoscaler")["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]

    class State:
        sessions = SessionRegistry(10)

    from prometheus_client import generate_latest

    exported = generate_latest(Metrics(State()).registry).decode()
    assert re.search(rf"^{name}\{{transport=\"ws\"\}} 0\.0$", exported, re.M), exported


def test_compose_file_matches_the_compose_spec() -> None:
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema",
                           "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    gateway = compose["services"]["gateway"]
    assert gateway["deploy"]["replicas"] == 2
    assert gateway["environment"]["GATEWAY_CLUSTER__ENABLED"] == "true"
    assert set(compose["services"]) == {"postgres", "redis", "gateway", "lb"}


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_haproxy_config_is_valid() -> None:
    done = subprocess.run(["haproxy", "-c", "-f", str(DEPLOY / "haproxy.cfg")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    assert "option httpchk GET /api/health/ready" in cfg and "retry-on" in cfg


def test_image_is_multi_stage_portable_and_not_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    [user] = re.findall(r"^USER (\S+)", text, re.M)
    assert not user.startswith(("root", "0"))
    assert "-DGGML_NATIVE=OFF" in text and "GGML_CPU_ALL_VARIANTS=ON" in text
    assert "march=native" not in text
    assert re.search(r"^HEALTHCHECK .*\n?.*/api/health", text, re.M)
    final = text[text.rindex("\nFROM "):]
    assert "build-essential" not in final and "cmake" not in final  # no compilers
