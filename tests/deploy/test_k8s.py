"""deploy/k8s: the manifests validate against the Kubernetes API schema (strict: unknown fields
fail), the kustomization references files that exist, probes hit paths the processes serve on the
ports their settings give them, selectors match, the HPAs target real workloads and metrics, and
only the broker can reach the hooks."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from mqchat.config import Settings, load_settings
from tests.deploy.support import (
    BROKERS,
    DEPLOY,
    K8S,
    api_paths,
    k8s_docs,
    ops_paths,
    serves_ops_port,
    yaml_docs,
)

KUBERNETES_VERSION = "1.29.0"  # pod-index label (bridge worker ids) needs 1.28+
WORKLOADS = ("Deployment", "StatefulSet")


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    return {name: d for kind in WORKLOADS for name, d in by_kind(kind).items()}


def mqchat_containers() -> list[tuple[str, dict[str, Any]]]:
    return [(name, c) for name, w in workloads().items() for c in w["spec"]["template"]["spec"]["containers"]
            if c["image"].startswith("mqchat:")]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def container_settings(monkeypatch: pytest.MonkeyPatch, container: dict[str, Any]) -> Settings:
    env: dict[str, str] = {}
    configmaps = by_kind("ConfigMap")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
        else:
            secret = yaml_docs(K8S / "secret.example.yaml")[0]
            assert source["secretRef"]["name"] == secret["metadata"]["name"]
            env.update(dict.fromkeys(secret["stringData"], "s" * 48))
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "0")  # valueFrom (pod index): any valid id
    for key in list(os.environ):
        if key.startswith("MQCHAT_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_manifests_validate_against_the_api_schema_strictly() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev dependency) is not installed")
    docs = k8s_docs()
    assert len(docs) > 15
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on an unknown or mistyped field


def test_kustomization_references_existing_files_and_every_manifest() -> None:
    kustomization = yaml_docs(DEPLOY / "kustomization.yaml")[0]
    resources = kustomization["resources"]
    assert all((DEPLOY / r).is_file() for r in resources)
    assert {"cassandra/k8s/cassandra.yaml", "cassandra/k8s/schema-job.yaml"} <= set(resources)  # reused
    listed = {r for r in resources if r.startswith("k8s/")}
    assert listed == {f"k8s/{p.name}" for p in K8S.glob("*.yaml")} - {"k8s/secret.example.yaml"}
    generated = {g["name"]: g for g in kustomization["configMapGenerator"]}
    for gen in generated.values():
        for entry in gen["files"]:
            assert (DEPLOY / entry.split("=", 1)[-1]).is_file()
    assert generated["emqx-config"]["files"] == ["emqx.conf=brokers/emqx/emqx.conf"]
    volumes = workloads()["emqx"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": "emqx-config"}} in volumes


def test_every_container_has_requests_and_a_memory_limit() -> None:
    for name, w in workloads().items():
        for c in w["spec"]["template"]["spec"]["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            assert "memory" in c["resources"]["limits"], name
            assert "readinessProbe" in c, name
            assert "livenessProbe" in c, name


def test_probes_hit_served_paths_on_the_configured_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    api, ops = api_paths(), ops_paths()
    for name, c in mqchat_containers():
        settings = container_settings(monkeypatch, c)
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        process = c["command"][2]
        for kind, expected in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            probe = c[kind]
            port = ports[probe["httpGet"]["port"]]
            assert probe["httpGet"]["path"] == expected, (name, kind)
            if process == "api":
                assert port == settings.http.port
                assert expected in api
            else:
                assert process in ("bridge", "workers")
                assert serves_ops_port(process)
                assert port == getattr(settings.ops, f"{process}_port") != 0
                assert expected in ops


def test_every_mqchat_pod_gets_valid_production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = [f"cassandra-{i}.cassandra" for i in range(3)]
    for name, c in mqchat_containers():
        settings = container_settings(monkeypatch, c)
        assert settings.store.backend == "cassandra", name
        assert list(settings.cassandra.hosts) == hosts
        assert settings.redis.url == "redis://redis:6379/0"
        assert settings.mqtt.host in by_kind("Service")
        assert settings.bridge.coordinate


def test_bridges_take_their_worker_id_from_the_pod_index() -> None:
    sts = by_kind("StatefulSet")["mqchat-bridge"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    field = env["MQCHAT_BRIDGE__WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert sts["spec"]["serviceName"] in by_kind("Service")


def test_selectors_match_pods() -> None:
    pods = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in workloads().items()}
    for name, w in workloads().items():
        assert matches(w["spec"]["selector"]["matchLabels"], pods[name])
    for kind in ("Service", "PodDisruptionBudget"):
        for name, doc in by_kind(kind).items():
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            assert any(matches(selector, labels) for labels in pods.values()), (kind, name)
    assert set(by_kind("PodDisruptionBudget")) >= {"mqchat-api", "mqchat-hooks", "mqchat-bridge", "emqx"}


def test_autoscalers_target_workloads_and_real_metrics() -> None:
    hpas = by_kind("HorizontalPodAutoscaler")
    assert {"mqchat-api", "mqchat-bridge"} <= set(hpas)
    for name, hpa in hpas.items():
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["name"] in by_kind(ref["kind"]), name
    (api_metric,) = hpas["mqchat-api"]["spec"]["metrics"]
    assert api_metric["resource"]["name"] == "cpu"
    (bridge_metric,) = hpas["mqchat-bridge"]["spec"]["metrics"]
    metric = bridge_metric["pods"]["metric"]["name"]
    assert f'"{metric}"' in (DEPLOY.parent / "bridge" / "metrics.py").read_text()
    adapter = yaml_docs(K8S / "extras" / "prometheus-adapter-values.yaml")[0]
    assert metric in [rule["name"]["as"] for rule in adapter["rules"]["custom"]]
    partitions = int(by_kind("ConfigMap")["mqchat-config"]["data"]["MQCHAT_BRIDGE__PARTITIONS"])
    assert hpas["mqchat-bridge"]["spec"]["maxReplicas"] <= partitions
    assert "mqchat-workers" not in {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}  # see workers.yaml
    assert workloads()["mqchat-workers"]["spec"]["replicas"] == 1


def test_only_the_broker_reaches_the_hooks() -> None:
    policy = by_kind("NetworkPolicy")["mqchat-hooks"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mqchat-hooks"}
    (rule,) = policy["spec"]["ingress"]
    peers = rule["from"]
    pod_peers = [p["podSelector"]["matchLabels"] for p in peers if "podSelector" in p]
    assert pod_peers == [{"app.kubernetes.io/name": "emqx"}]
    assert all(set(p) in ({"podSelector"}, {"namespaceSelector"}) for p in peers)  # no open peer
    emqx_labels = workloads()["emqx"]["spec"]["template"]["metadata"]["labels"]
    assert matches(pod_peers[0], emqx_labels)
    # The broker calls exactly this Service; the public API's Ingress never routes /hooks.
    hosts = set(re.findall(r'url\s*=\s*"http://([\w-]+):(\d+)/hooks/', (BROKERS / "emqx" / "emqx.conf").read_text()))
    service = by_kind("Service")["mqchat-hooks"]
    assert hosts == {("mqchat-hooks", str(service["spec"]["ports"][0]["port"]))}
    ingress_paths = [p["path"] for r in by_kind("Ingress")["mqchat-api"]["spec"]["rules"]
                     for p in r["http"]["paths"]]
    assert ingress_paths
    assert not any(p == "/" or p.startswith("/hooks") for p in ingress_paths)
    assert all(p in api_paths() or any(a.startswith(p + "/") for a in api_paths()) for p in ingress_paths)


def test_extras_parse() -> None:
    for path in sorted((K8S / "extras").glob("*.yaml")):
        assert yaml.safe_load(path.read_text()), path
