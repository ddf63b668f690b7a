"""Every YAML file under deploy/ parses (compose files, manifests, CI workflow, helm values)."""

from __future__ import annotations

import yaml  # type: ignore[import-untyped]

from tests.deploy.support import DEPLOY, deploy_yaml_files


def test_every_yaml_file_parses() -> None:
    files = deploy_yaml_files()
    expected = {"compose/docker-compose.yml", "kustomization.yaml", "k8s/api.yaml", "k8s/bridge.yaml",
                "cassandra/docker-compose.yml", "k8s/extras/prometheus-adapter-values.yaml"}
    assert expected <= {str(p.relative_to(DEPLOY)) for p in files}
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), path
