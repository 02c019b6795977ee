"""Helpers for the key-lifecycle scenarios (rotation, JWKS outages, one fetch per process,
hot reload): what the JWKS server saw and when, the backoff the filter promises, which
worker took a connection, and Envoy with its listener in a watched LDS file (or only the
filter's configuration, in a watched ECDS file).

Times are `time.monotonic()`, the clock of `jwks_server.Fetch`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from . import tokens as tk
from .authorizer_config import TEST_CLIENT, TEST_ISSUER
from .envoy import Envoy, authorizer_bootstrap, on_port, wasm_filter
from .jwks_server import Fetch, JwksServer
from .polling import wait_until

# README "Keys": the first retry ~1 s after a failure, doubling; jitter spreads each delay over
# [delay/2, delay] (src/keys.rs backoff_ms).
INITIAL_BACKOFF = 1.0
# The filter's root context ticks every second while no request waits (src/filter/root.rs
# IDLE_TICK): refreshes and retries are started on a tick, so up to this much late.
IDLE_TICK = 1.0
# Envoy and the JWKS server share two cores with other test runs: slack for scheduling.
SLACK = 0.5


def id_token(key: tk.SigningKey, kid: str | None = None) -> str:
    """A fresh (never cached) id token of the self-minted pool, signed by `key`, its header
    naming `kid` (default the key's own).

    payload: {"iss": TEST_ISSUER, "aud": TEST_CLIENT, "token_use": "id", "exp": now+3600,
    "sub": <random uuid>, "jti": <random uuid>, ...}"""
    return tk.sign(key, tk.id_claims(TEST_ISSUER, TEST_CLIENT), kid=kid)


# --- the JWKS server's record ----------------------------------------------------------


def fetches_since(jwks: JwksServer, since: float, path: str | None = None) -> list[Fetch]:
    """Fetches the server received at or after `since`."""
    return [f for f in jwks.fetches(path) if f.received_at >= since]


def wait_for_answered_fetch(
    jwks: JwksServer, since: float, timeout: float, path: str | None = None
) -> Fetch:
    """The first fetch received after `since`, once the server has answered it."""

    def probe():
        done = [f for f in fetches_since(jwks, since, path) if f.answered_at is not None]
        return done[0] if done else None

    return wait_until(probe, timeout, "a JWKS fetch answered")


def min_backoff(failures: int) -> float:
    """The shortest delay the filter may wait after `failures` consecutive failures."""
    return INITIAL_BACKOFF * 2 ** (failures - 1) / 2


def max_backoff(failures: int) -> float:
    return min(INITIAL_BACKOFF * 2 ** (failures - 1), 60.0)


def max_failed_fetches_within(seconds: float) -> int:
    """How many fetches a backoff that honours `min_backoff` fits into `seconds` after
    the first one: fetch n+1 comes at least min_backoff(1) + ... + min_backoff(n) after
    the first, i.e. 0.5 * (2**n - 1) s."""
    n = 1
    while 0.5 * (2**n - 1) <= seconds:
        n += 1
    return n


def max_refetches(duration: float, min_refetch: float) -> int:
    """README "Keys": at most one unknown-kid refetch per `min_refetch` seconds for the process:
    ceil(duration / min_refetch) + 1 over `duration` seconds."""
    return math.ceil(duration / min_refetch) + 1


# --- Envoy whose listener comes from a watched file (LDS) ------------------------------

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
# Envoy needs a node identity to subscribe to xDS, from files too.
NODE = {"id": "cognito-authorizer-e2e", "cluster": "e2e"}


class _WatchedFile:
    """A file of xDS resources in a directory Envoy watches (`path_config_source` with
    `watched_directory`), for the listener of `authorizer_bootstrap` on a fixed port (a
    listener on port 0 could move to another port when it is replaced). Each publication
    replaces the file atomically (write, then rename in the watched directory)."""

    FILE = ""

    def __init__(
        self,
        directory: Path,
        wasm_path: str,
        upstream_port: int,
        clusters: dict[str, int],
        port: int,
    ):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / self.FILE
        self.wasm_path = wasm_path
        self.upstream_port = upstream_port
        self.clusters = clusters
        self.port = port
        self.version = 0

    def _config_source(self) -> dict:
        return {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": str(self.path),
                "watched_directory": {"path": str(self.directory)},
            },
        }

    def _publish(self, resource: dict) -> None:
        self.version += 1
        document = {"version_info": str(self.version), "resources": [resource]}
        staging = self.directory / f".{self.FILE}.{self.version}.tmp"
        staging.write_text(json.dumps(document, indent=2))
        os.rename(staging, self.path)


class LdsFiles(_WatchedFile):
    """The listener of `authorizer_bootstrap`, served by Envoy from `<dir>/lds.json`
    (`dynamic_resources.lds_config`): `write(filter_config)` replaces it, and Envoy
    replaces the listener."""

    FILE = "lds.json"

    def _full(self, filter_config: dict, wasm_path: str | None = None) -> dict:
        full = authorizer_bootstrap(
            wasm_path or self.wasm_path, filter_config, self.upstream_port, self.clusters
        )
        return on_port(full, self.port)

    def listener(self, filter_config: dict, wasm_path: str | None = None) -> dict:
        return self._full(filter_config, wasm_path)["static_resources"]["listeners"][0]

    def write(self, filter_config: dict, routes: list[dict] | None = None,
              wasm_path: str | None = None) -> None:  # fmt: skip
        """The listener with this filter configuration (and these routes, and another
        module, when given)."""
        listener = self.listener(filter_config, wasm_path)
        if routes is not None:
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            hcm["route_config"]["virtual_hosts"][0]["routes"] = routes
        self.write_listener(listener)

    def write_listener(self, listener: dict) -> None:
        """A listener as it is (one built by `listener()` and then changed)."""
        self._publish({"@type": LISTENER_TYPE, **listener})

    def bootstrap(self, filter_config: dict) -> dict:
        """The bootstrap (clusters static, listener from the file); writes the first file."""
        self.write(filter_config)
        full = self._full(filter_config)
        del full["static_resources"]["listeners"]
        full["node"] = NODE
        full["dynamic_resources"] = {"lds_config": self._config_source()}
        return full


    def counts(self, envoy: Envoy) -> tuple[int, int, bool]:
        """(updates applied, updates rejected, whether a new listener is still warming)."""
        stats = envoy.stats(r"^listener_manager\.")
        return (
            int(stats.get("listener_manager.lds.update_success", 0)),
            int(stats.get("listener_manager.lds.update_rejected", 0)),
            int(stats.get("listener_manager.total_listeners_warming", 0)) > 0,
        )


TYPED_EXTENSION_CONFIG = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


class EcdsFiles(_WatchedFile):
    """The listener of `authorizer_bootstrap`, static, whose Wasm filter is delivered by
    extension config discovery (ECDS), as Istio delivers a WasmPlugin and Envoy Gateway an
    EnvoyExtensionPolicy: `<dir>/ecds.json` holds the filter (module and configuration), and
    `write(filter_config)` replaces it. Envoy swaps the filter in the listener it keeps; the
    listener itself never changes."""

    NAME = "cognito_authorizer"

    FILE = "ecds.json"

    def write(self, filter_config: dict | str, wasm_path: str | None = None) -> None:
        """The filter with this configuration (and another module, when given)."""
        self.write_filter(wasm_filter(wasm_path or self.wasm_path, filter_config))

    def write_filter(self, http_filter: dict) -> None:
        """A filter as `wasm_filter` builds it (and then changed)."""
        self._publish({"@type": TYPED_EXTENSION_CONFIG, "name": self.NAME,
                       "typed_config": http_filter["typed_config"]})  # fmt: skip

    def bootstrap(self, filter_config: dict | str) -> dict:
        """The bootstrap, its filter read from the file; writes the first file."""
        self.write(filter_config)
        full = on_port(
            authorizer_bootstrap(self.wasm_path, filter_config, self.upstream_port, self.clusters),
            self.port,
        )
        hcm = full["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        hcm["typed_config"]["http_filters"][0] = {
            "name": self.NAME,
            "config_discovery": {"config_source": self._config_source(), "type_urls": [WASM_TYPE]},
        }
        full["node"] = NODE
        return full

    def counts(self, envoy: Envoy) -> tuple[int, int, bool]:
        """(updates applied, updates rejected, False): ECDS has no warming."""
        prefix = f"extension_config_discovery.http_filter.{self.NAME}."
        stats = envoy.stats("^" + prefix.replace(".", r"\."))
        applied, rejected = stats.get(prefix + "config_reload", 0), stats.get(prefix + "config_fail", 0)
        return int(applied), int(rejected), False


def listener_reloads(envoy: Envoy) -> dict[str, int]:
    """Envoy's count of listener updates from LDS."""
    stats = envoy.stats()
    return {
        name: int(stats.get(f"listener_manager.{name}", 0))
        for name in ("lds.update_success", "lds.update_rejected", "listener_modified")
    }


def wait_for_reload(envoy: Envoy, before: dict[str, int], timeout: float = 10.0) -> None:
    """Until Envoy has applied one more LDS update than `before` (and rejected none)."""

    def probe():
        now = listener_reloads(envoy)
        assert now["lds.update_rejected"] == before["lds.update_rejected"], (
            f"Envoy rejected the new listener: {now}\n{envoy.log_tail()}"
        )
        return (
            now["lds.update_success"] > before["lds.update_success"]
            and now["listener_modified"] > before["listener_modified"]
        )

    wait_until(probe, timeout, "Envoy to reload the listener")

