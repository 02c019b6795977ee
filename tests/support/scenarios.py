"""Helpers shared by the scenario modules (rules, cookbook, token sources, CORS and report
mode, identity, observability, path normalisation, multiple pools): minting tokens of the
self-minted pools with the claims a scenario needs, and per-pool counter snapshots."""

from __future__ import annotations

from . import tokens as tk
from .authorizer_config import TEST_CLIENT, TEST_ISSUER
from .envoy import Envoy

# The counters that move per pool (`cognito_authorizer.pool.<name>.<counter>`).
POOL_OUTCOME_COUNTERS = (
    "allowed",
    "denied_invalid",
    "denied_expired",
    "denied_forbidden",
    "unavailable",
    "denied_revoked",
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def mint_id(
    key: tk.SigningKey,
    username: str = "carol",
    groups: list[str] | None = None,
    issuer: str = TEST_ISSUER,
    client_id: str = TEST_CLIENT,
    **extra,
) -> str:
    """A valid id token of the self-minted pool; `extra` claims are added or replaced."""
    return tk.sign(key, {**tk.id_claims(issuer, client_id, username, groups), **extra})


def mint_access(
    key: tk.SigningKey,
    scope: str = tk.COGNITO_SCOPE,
    groups: list[str] | None = None,
    issuer: str = TEST_ISSUER,
    client_id: str = TEST_CLIENT,
    username: str = "carol",
    **extra,
) -> str:
    """A valid access token of the self-minted pool; `extra` claims are added or replaced."""
    claims = tk.access_claims(issuer, client_id, username, groups, scope)
    return tk.sign(key, {**claims, **extra})


def filter_metrics(envoy: Envoy) -> dict[str, int]:
    """Every metric of the filter by its name after `cognito_authorizer.` (per-pool ones as
    `pool.<name>.<counter>`)."""
    return envoy._filter_metrics()


class PoolOutcomes:
    """Snapshot of the per-pool outcome counters of `pools`; `changes()` is what moved
    since, e.g. {("moto", "allowed"): 1}."""

    def __init__(self, envoy: Envoy, pools: list[str]):
        self.envoy = envoy
        self.pools = pools
        self.before = self._read()

    def _read(self) -> dict[tuple[str, str], int]:
        metrics = filter_metrics(self.envoy)
        return {
            (pool, name): metrics.get(f"pool.{pool}.{name}", 0)
            for pool in self.pools
            for name in POOL_OUTCOME_COUNTERS
        }

    def changes(self) -> dict[tuple[str, str], int]:
        after = self._read()
        deltas = {k: after[k] - self.before[k] for k in after}
        return {k: d for k, d in deltas.items() if d}
