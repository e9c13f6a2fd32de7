"""The files under deploy/: they parse, have the expected shape, reference files that exist,
inline no secret, and the dashboard only queries metrics gearshift exports."""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import yaml

from gearshift.config import decode, load
from gearshift.observe.metrics import Metrics

DEPLOY = Path(__file__).parents[2] / "deploy"
SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")


def exported() -> set[str]:
    metrics = Metrics(load(None, environ={"OPENAI_API_KEY": "sk-x"}))
    return {f.name + s for f in metrics.registry.collect() for s in SUFFIXES}


def test_the_prometheus_scrape_config() -> None:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == "gearshift"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"]


def test_the_grafana_dashboard_queries_only_exported_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana" / "gearshift-dashboard.json").read_text())
    names = exported()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    used = {m for e in exprs for m in re.findall(r"gearshift_[a-z_]+", e)}
    assert used <= names, used - names
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("requests by routed model", "savings over time", "overhead", "fallbacks",
                  "circuit breakers"):  # fmt: skip
        assert topic in titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


KEYLIKE = re.compile(r"(sk-[A-Za-z0-9]{8,}|AIza[0-9A-Za-z_\-]{10,})")


def _manifests(name: str) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def _kind(docs: list[dict[str, object]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]  # type: ignore[misc]


def test_the_kubernetes_sidecar_deployment() -> None:
    docs = _manifests("sidecar.yaml")
    (deployment,) = _kind(docs, "Deployment")
    pod = deployment["spec"]["template"]
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert set(containers) == {"app", "gearshift"}  # the app and its sidecar, one pod
    g = containers["gearshift"]
    assert g["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert g["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert g["resources"]["requests"]
    assert g["resources"]["limits"]
    assert {"mountPath": "/etc/gearshift", "name": "gearshift-config", "readOnly": True} in g[
        "volumeMounts"
    ]
    assert g["envFrom"] == [{"secretRef": {"name": "gearshift-keys"}}]
    assert g["securityContext"]["runAsNonRoot"] is True
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    app_env = {e["name"]: e for e in containers["app"]["env"]}
    assert app_env["OPENAI_BASE_URL"]["value"] == "http://127.0.0.1:8787/v1"
    assert "secretKeyRef" in app_env["OPENAI_API_KEY"]["valueFrom"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > 30  # > shutdown_grace
    (config_map,) = _kind(docs, "ConfigMap")
    assert "[server]" in config_map["data"]["gearshift.toml"]
    (secret,) = _kind(docs, "Secret")
    assert set(secret["stringData"].values()) == {"replace-me"}  # placeholders only


def test_the_standalone_variant() -> None:
    docs = _manifests("standalone.yaml")
    (deployment,) = _kind(docs, "Deployment")
    (service,) = _kind(docs, "Service")
    (hpa,) = _kind(docs, "HorizontalPodAutoscaler")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (g,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--workers" in g["args"]


def test_no_secret_is_inlined_anywhere() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert not KEYLIKE.search(path.read_text()), path


def test_the_compose_stack_references_files_that_exist() -> None:
    compose_file = DEPLOY / "docker-compose.yml"
    services = yaml.safe_load(compose_file.read_text())["services"]
    assert set(services) == {
        "app",
        "gearshift",
        "gearshift-2",
        "redis",
        "mock",
        "prometheus",
        "grafana",
    }
    for service in services.values():
        build = service.get("build")
        if build:
            context = (compose_file.parent / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (compose_file.parent / source).exists(), source
    env = services["gearshift"]["environment"]
    assert env["GEARSHIFT_OPENAI_BASE_URL"].startswith("http://mock:")
    assert "gearshift:8787" in services["app"]["command"][0]
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_dockerfile_copies_paths_that_exist_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    root = DEPLOY.parent
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (root / source).exists(), source
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert re.search(r"^USER 10001$", text, re.M)
    assert "tiktoken.get_encoding" in text  # encodings fetched at build time


def test_the_systemd_unit() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string((DEPLOY / "gearshift.service").read_text())
    service = parser["Service"]
    assert "gearshift serve" in service["ExecStart"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["User"] == "gearshift"
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_the_sample_config_is_valid() -> None:
    raw = decode((DEPLOY / "gearshift.toml").read_bytes(), source="gearshift.toml")
    assert raw.server.port == 8787


def test_the_compose_config_shares_its_state_through_redis() -> None:
    from gearshift.config import resolve

    raw = decode((DEPLOY / "gearshift.compose.toml").read_bytes(), source="compose.toml")
    env = {"COMPOSE_APP_KEY": "compose-app-key", "GEARSHIFT_REDIS_URL": "redis://redis:6379/0"}
    config = resolve(raw, source="compose.toml", environ={**env, "OPENAI_API_KEY": "sk-x"})
    assert config.state.backend == "redis"
    assert config.state_url is not None
    assert config.state_url.reveal() == env["GEARSHIFT_REDIS_URL"]
    assert config.cache.enabled
    (policy,) = config.key_policies.values()
    assert (policy.name, policy.rpm) == ("compose-app", 600)
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert {"redis", "gearshift", "gearshift-2"} <= set(services)
    for name in ("gearshift", "gearshift-2"):
        assert services[name]["environment"]["GEARSHIFT_REDIS_URL"] == env["GEARSHIFT_REDIS_URL"]
