"""The monitoring files under deploy/ parse, and only query metrics gearshift exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from gearshift.config import load
from gearshift.metrics import Metrics

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
