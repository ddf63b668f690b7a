"""deploy/cassandra: the files parse and say what they must (3 nodes, the schema job runs the one
schema.cql through the migrate command, CI runs the contract suite against a real node).

Offline checks only: nothing is started. The Kubernetes manifests are also validated against the
API schemas when ``kubernetes-validate`` is installed (``pip install kubernetes-validate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "cassandra"
MIGRATE = "python -m mqchat.storage.cql migrate"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in load_all(path)]


def test_compose_runs_three_nodes_and_the_schema_job() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    nodes = [name for name, s in services.items() if s.get("image", "").startswith("cassandra:")]
    assert len(nodes) == 3
    for name in nodes:
        env = services[name]["environment"]
        assert env["CASSANDRA_CLUSTER_NAME"] == "mqchat"
        assert env["CASSANDRA_DC"] == "dc1"
    schema = services["schema"]
    assert MIGRATE in " ".join(schema["command"])
    assert schema["environment"]["MQCHAT_CASSANDRA__REPLICATION_FACTOR"] == "3"
    assert schema["depends_on"]["cassandra-3"]["condition"] == "service_healthy"
    # Published ports, if any, stay on loopback.
    for s in services.values():
        assert all(str(p).startswith("127.0.0.1:") for p in s.get("ports", []))


def test_kubernetes_statefulset_and_schema_job() -> None:
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in manifests()}
    sts = by_kind[("StatefulSet", "cassandra")]
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == "cassandra"
    assert by_kind[("Service", "cassandra")]["spec"]["clusterIP"] == "None"
    assert by_kind[("PodDisruptionBudget", "cassandra")]["spec"]["maxUnavailable"] == 1
    job = by_kind[("Job", "mqchat-schema")]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert " ".join(container["command"]) == MIGRATE
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MQCHAT_CASSANDRA__LOCAL_DC"] == "dc1"
    assert yaml.safe_load(env["MQCHAT_CASSANDRA__HOSTS"]) == [f"cassandra-{i}.cassandra" for i in range(3)]


def test_kubernetes_manifests_validate_against_the_api_schema() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    for doc in manifests():
        kv.validate(doc, "1.29.0", strict=True)  # raises on an unknown or mistyped field


def test_ci_workflow_runs_the_contract_suite_against_a_cassandra_service() -> None:
    workflow = yaml.safe_load((DEPLOY / "ci-workflow.yml").read_text())
    job = workflow["jobs"]["contract"]
    assert job["services"]["cassandra"]["image"].startswith("cassandra:")
    assert job["env"]["CASSANDRA_HOSTS"].startswith("127.0.0.1")
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "pytest" in runs
    assert "tests/contract" in runs
