"""The dashboard and the alert rules users import (envoy/observability/) are valid, and every
metric they query is one that Envoy really exports for the filter.

- `promtool check rules` and `promtool test rules` (alerts.test.yaml: each alert fires on
  series shaped like a scrape of /stats/prometheus, and stays quiet where it must);
- a real Envoy with the built filter and the stats-tags fragment (envoy-stats-tags.yaml):
  allowed, refused and cached requests, then a scrape of /stats/prometheus; every metric
  name and label the dashboard, the rules and the promtool inputs use must be in it, and
  every metric the filter exports must be on the dashboard.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OBS = ROOT / "envoy" / "observability"
sys.path.insert(0, str(ROOT / "tests"))

from support import tokens as tk  # noqa: E402
from support.authorizer_config import TEST_CLUSTER, TEST_KID, self_minted_pool  # noqa: E402
from support.envoy import Envoy, authorizer_bootstrap, http_filter, shipped_bootstrap  # noqa: E402
from support.jwks_server import JwksServer  # noqa: E402
from support.polling import wait_until  # noqa: E402
from support.ratelimit_service import RateLimitService  # noqa: E402
from support.scenarios import bearer, mint_id  # noqa: E402
from support.upstream import EchoUpstream  # noqa: E402

DASHBOARD = json.loads((OBS / "grafana-dashboard.json").read_text())
RULES = yaml.safe_load((OBS / "prometheus-rules.yaml").read_text())
UNIT_TESTS = yaml.safe_load((HERE / "alerts.test.yaml").read_text())
# A metric name (not the middle of a recording rule's name, `job:cognito_authorizer_denied:rate5m`).
METRIC = re.compile(r"(?<![:\w])cognito_authorizer_[a-z_]+\b(?!:)")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("no promtool on PATH: run `make observability` (it installs Debian's prometheus)")
    return path


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in DASHBOARD["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in DASHBOARD["templating"]["list"] if "definition" in v]
    return exprs


def rule_exprs() -> list[str]:
    return [r["expr"] for g in RULES["groups"] for r in g["rules"]]


def unit_test_series() -> list[str]:
    return [s["series"] for t in UNIT_TESTS["tests"] for s in t["input_series"]]


def metric_names(texts: list[str]) -> set[str]:
    return {m for t in texts for m in METRIC.findall(t)}


# --- promtool ------------------------------------------------------------------------------


def test_rules_pass_promtool_check():
    proc = subprocess.run([promtool(), "check", "rules", str(OBS / "prometheus-rules.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 9 rules found" in proc.stdout


def test_alert_unit_tests_pass_promtool_test():
    proc = subprocess.run([promtool(), "test", "rules", str(HERE / "alerts.test.yaml")],
                          capture_output=True, text=True, cwd=HERE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    alerts = {r["alert"] for g in RULES["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {"CognitoAuthorizerKeysUnavailable", "CognitoAuthorizerKeysStale", "CognitoAuthorizerRefusalSpike",
                      "CognitoAuthorizerUnknownKidRefetchStorm", "CognitoAuthorizerJwksFetchFailing",
                      "CognitoAuthorizerClientThrottled"}
    for alert in alerts:
        cases = [c for t in UNIT_TESTS["tests"] for c in t.get("alert_rule_test", []) if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in cases), f"{alert}: no case where it fires"
        assert any(not c["exp_alerts"] for c in cases), f"{alert}: no case where it stays quiet"


def test_a_broken_rule_fails_its_unit_test(tmp_path):
    # The unit tests are not vacuous: an alert that can never fire fails them.
    broken = yaml.safe_load((OBS / "prometheus-rules.yaml").read_text())
    for group in broken["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "CognitoAuthorizerKeysUnavailable":
                rule["expr"] = "increase(cognito_authorizer_unavailable[5m]) > 1000"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(broken, sort_keys=False))
    tests = dict(UNIT_TESTS, rule_files=["rules.yaml"])
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run([promtool(), "test", "rules", "t.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    assert "alertname: CognitoAuthorizerKeysUnavailable, time: 10m" in proc.stdout + proc.stderr


# --- the dashboard's shape ---------------------------------------------------------------


def test_dashboard_panels_are_well_formed():
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for p in DASHBOARD["panels"]:
        assert p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            # Balanced parentheses, and rates over Grafana's own interval.
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert "rate(" not in t["expr"] or "[$__rate_interval]" in t["expr"], t["expr"]
    titles = {p["title"] for p in DASHBOARD["panels"]}
    assert {"Decisions by reason", "Refusal ratio", "Token cache hit ratio", "JWKS fetches", "Stale keys served",
            "503 (keys unavailable) by pool", "Refused by pool and reason", "Quota refusals (429)"} <= titles


# --- the names a real Envoy exports ----------------------------------------------------------


@pytest.fixture(scope="module")
def scrape(tmp_path_factory) -> str:
    """/stats/prometheus of an Envoy with the built filter and the stats-tags fragment,
    after allowed, cached, missing, invalid and expired requests."""
    envoy_bin = os.environ.get("ENVOY_BIN") or str(ROOT / ".venv" / "bin" / "envoy")
    wasm = os.environ.get("WASM") or str(ROOT / "target" / "wasm32-wasip1" / "release" / "cognito_authorizer.wasm")
    key = tk.SigningKey.generate(TEST_KID)
    jwks, upstream = JwksServer(tk.jwks(key)), EchoUpstream()
    bootstrap = authorizer_bootstrap(wasm, {"user_pools": [self_minted_pool(name="main")]}, upstream.port,
                                     {TEST_CLUSTER: jwks.port})
    bootstrap.update(yaml.safe_load((OBS / "envoy-stats-tags.yaml").read_text()))
    envoy = Envoy(envoy_bin, bootstrap, tmp_path_factory.mktemp("envoy"), "observability")
    try:
        envoy.wait_ready()
        token = mint_id(key)
        assert envoy.request("/a", headers=bearer(token)).status == 200
        assert envoy.request("/a", headers=bearer(token)).status == 200
        assert envoy.request("/a").status == 401
        assert envoy.request("/a", headers=bearer(tk.with_flipped_signature(token))).status == 401
        assert envoy.request("/a", headers=bearer(mint_id(key, exp=1))).status == 401
        text = ""

        def counted() -> bool:
            nonlocal text
            text = envoy.admin("/stats/prometheus").body.decode()
            return 'cognito_authorizer_pool_denied_expired{cognito_pool="main"} 1' in text

        wait_until(counted, 10, "the filter's counters in /stats/prometheus")
        return text
    finally:
        envoy.stop()
        jwks.stop()
        upstream.stop()


def exported(scrape: str) -> dict[str, set[str]]:
    """Metric name → label names, for the filter's metrics in a scrape."""
    out: dict[str, set[str]] = {}
    for name, labels in re.findall(r"^(cognito_authorizer_[a-z_]+)\{([^}]*)\} \S+$", scrape, re.M):
        out.setdefault(name, set()).update(re.findall(r'(\w+)="', labels))
    return out


def test_scrape_has_the_pool_as_a_label(scrape):
    metrics = exported(scrape)
    assert metrics["cognito_authorizer_allowed"] == set()
    assert metrics["cognito_authorizer_pool_allowed"] == {"cognito_pool"}
    assert "# TYPE cognito_authorizer_pool_keys gauge" in scrape
    # No per-pool metric left with the pool in its name.
    assert not [m for m in metrics if m.startswith("cognito_authorizer_pool_main_")]


@pytest.mark.parametrize("source, texts", [
    ("dashboard", dashboard_exprs()),
    ("alert rules", rule_exprs()),
    ("promtool inputs", unit_test_series()),
])
def test_every_metric_queried_is_exported_by_the_filter_in_envoy(scrape, source, texts):
    metrics = exported(scrape)
    used = metric_names(texts)
    assert used, source
    assert sorted(used - set(metrics)) == [], f"{source} query metrics Envoy does not export"


def test_pool_label_is_only_used_on_per_pool_metrics(scrape):
    metrics = exported(scrape)
    for expr in dashboard_exprs():
        if "cognito_pool" in expr:
            for name in metric_names([expr]):
                assert "cognito_pool" in metrics[name], (name, expr)


def counter_of(metric: str) -> str:
    return metric.removeprefix("cognito_authorizer_").removeprefix("pool_")


def test_every_metric_the_filter_exports_is_on_the_dashboard(scrape):
    # Process-wide or per pool: each counter (and the keys gauge) has a panel.
    on_dashboard = {counter_of(m) for m in metric_names(dashboard_exprs())}
    assert sorted({counter_of(m) for m in exported(scrape)} - on_dashboard) == []


# --- Envoy's own quota counters (the per-client quota recipes) ----------------------------------

# Envoy's metrics the dashboard and the rules read for quota refusals.
QUOTA_METRIC = re.compile(r"\benvoy_(?:http_local_rate_limit_rate_limited|cluster_ratelimit_over_limit)\b")


@pytest.fixture(scope="module")
def quota_scrapes(tmp_path_factory) -> list[str]:
    """/stats/prometheus of Envoy running envoy/client-quotas.yaml and then
    envoy/global-ratelimit.yaml (a stand-in rate limit service), each after a client went
    over its quota."""
    envoy_bin = os.environ.get("ENVOY_BIN") or str(ROOT / ".venv" / "bin" / "envoy")
    wasm = os.environ.get("WASM") or str(ROOT / "target" / "wasm32-wasip1" / "release" / "cognito_authorizer.wasm")
    key = tk.SigningKey.generate(TEST_KID)
    jwks, upstream, service = JwksServer(tk.jwks(key)), EchoUpstream(), RateLimitService(limit=1)
    pool = self_minted_pool(name="demo", jwks_cluster="cognito_jwks", client_ids=["quotaclient1"])
    token = bearer(tk.sign(key, tk.access_claims(pool["issuer"], "quotaclient1")))
    scrapes = []
    try:
        for name in ("client-quotas.yaml", "global-ratelimit.yaml"):
            bootstrap = shipped_bootstrap(ROOT / "envoy" / name, wasm, [pool], {
                "upstream": upstream.port, "cognito_jwks": jwks.port, **({"ratelimit": service.port}
                                                                        if "global" in name else {})})
            if "global" in name:
                http_filter(bootstrap, "envoy.filters.http.ratelimit")["typed_config"]["timeout"] = "5s"
            else:
                quota = http_filter(bootstrap, "envoy.filters.http.local_ratelimit")["typed_config"]
                quota["descriptors"][0]["token_bucket"].update(max_tokens=1, tokens_per_fill=1, fill_interval="3600s")
            envoy = Envoy(envoy_bin, bootstrap, tmp_path_factory.mktemp("envoy"), name.removesuffix(".yaml"))
            try:
                envoy.wait_ready()
                assert [envoy.request("/a", headers=token).status for _ in range(3)] == [200, 429, 429]
                scrapes.append(envoy.admin("/stats/prometheus").body.decode())
            finally:
                envoy.stop()
        return scrapes
    finally:
        jwks.stop()
        upstream.stop()
        service.stop()


def test_the_quota_metrics_queried_are_exported_by_envoy(quota_scrapes):
    local, global_ = quota_scrapes
    # Metric, the label the dashboard groups it by, and the scrape of the config that exports it.
    expected = {
        "envoy_http_local_rate_limit_rate_limited": ("envoy_local_http_ratelimit_prefix", local),
        "envoy_cluster_ratelimit_over_limit": ("envoy_cluster_name", global_),
    }
    used = {m for t in [*dashboard_exprs(), *rule_exprs(), *unit_test_series()] for m in QUOTA_METRIC.findall(t)}
    assert used == set(expected)
    for metric, (label, scrape) in expected.items():
        # The two 429s of the fixture, counted with the label the dashboard reads.
        assert re.search(rf'^{metric}\{{[^}}]*\b{label}="[^"]+"[^}}]*\}} 2$', scrape, re.M), metric
        assert any(metric in e and label in e for e in dashboard_exprs()), metric
