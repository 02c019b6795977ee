"""Envoy with the authorizer: bootstrap builders, and a process wrapper that waits for
readiness, reads counters from the admin API and keeps a log file per instance.

Envoy binds its admin and listener ports itself (port 0) and reports them through
`--admin-address-path` and `/listeners`, so there is no window in which another process
can take a port we picked."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import time
import urllib.parse
from pathlib import Path

import yaml

from .client import Response, request
from .polling import wait_until
from .ports import LOOPBACK, accepts_connections
from .processes import ManagedProcess

COUNTER_PREFIX = "cognito_authorizer."
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)


# --- configuration -----------------------------------------------------------------------


def wasm_filter(wasm_path: str, filter_config: dict | str) -> dict:
    """The authorizer as an HTTP filter; `filter_config` is its JSON (dict or raw text, the
    latter for configurations that are not even valid JSON)."""
    value = filter_config if isinstance(filter_config, str) else json.dumps(filter_config)
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "cognito_authorizer",
                "root_id": "cognito_authorizer",
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": "cognito_authorizer",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm_path}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": value,
                },
            },
        },
    }


def static_cluster(name: str, port: int, connect_timeout: str = "1s") -> dict:
    """A plain-HTTP cluster with one endpoint, 127.0.0.1:`port`."""
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": connect_timeout,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": LOOPBACK, "port_value": port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }


def bootstrap(
    http_filters: list[dict],
    upstream_port: int,
    clusters: dict[str, int],
    *,
    hcm_overrides: dict | None = None,
    access_log: list[dict] | None = None,
) -> dict:
    """One listener (any port) routing everything to cluster `upstream`, admin on any port.

    `clusters` are the extra clusters (name → port on 127.0.0.1), e.g. the JWKS ones.
    `hcm_overrides` replaces keys of the HTTP connection manager (a value of None removes
    the key, e.g. to get Envoy's default path handling); `access_log` is the HCM's
    `access_log` list."""
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "api",
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "api",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                }
            ]
        },
        "http_filters": [*http_filters, ROUTER],
    }
    for key, value in (hcm_overrides or {}).items():
        if value is None:
            hcm.pop(key, None)
        else:
            hcm[key] = value
    if access_log is not None:
        hcm["access_log"] = access_log
    return {
        "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "api",
                    "address": {"socket_address": {"address": LOOPBACK, "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                static_cluster("upstream", upstream_port),
                *(static_cluster(name, port) for name, port in clusters.items()),
            ],
        },
    }


def authorizer_bootstrap(
    wasm_path: str,
    filter_config: dict | str,
    upstream_port: int,
    jwks_clusters: dict[str, int],
    *,
    hcm_overrides: dict | None = None,
    access_log: list[dict] | None = None,
) -> dict:
    return bootstrap(
        [wasm_filter(wasm_path, filter_config)],
        upstream_port,
        jwks_clusters,
        hcm_overrides=hcm_overrides,
        access_log=access_log,
    )


def http_filter(config: dict, name: str) -> dict:
    """The HTTP filter `name` of the first listener's connection manager, in a bootstrap or
    in a listener."""
    listener = config["static_resources"]["listeners"][0] if "static_resources" in config else config
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [found] = [f for f in hcm["http_filters"] if f["name"] == name]
    return found


def on_port(bootstrap: dict, port: int) -> dict:
    """`bootstrap` with its listener on a fixed port (one that must stay the same across a
    restart or a replaced listener); returns it."""
    bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
    return bootstrap


def shipped_bootstrap(
    path: Path, wasm_path: str, user_pools: list[dict], clusters: dict[str, int]
) -> dict:
    """An Envoy config from `envoy/` as users copy it, made runnable here: admin and
    listeners on any port, the Wasm filter loading `wasm_path` with the shipped configuration
    but these `user_pools`, and each cluster named in `clusters` at 127.0.0.1:<port>.
    Everything else (filters, their order, local replies) is the shipped file's."""
    config = yaml.safe_load(path.read_text())
    config["admin"]["address"]["socket_address"].update(address=LOOPBACK, port_value=0)
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update(address=LOOPBACK, port_value=0)
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                for http_filter in network_filter["typed_config"].get("http_filters", []):
                    if http_filter["name"] != "envoy.filters.http.wasm":
                        continue
                    wasm = http_filter["typed_config"]["config"]
                    wasm["vm_config"]["code"]["local"]["filename"] = wasm_path
                    filter_config = json.loads(wasm["configuration"]["value"])
                    filter_config["user_pools"] = user_pools
                    wasm["configuration"]["value"] = json.dumps(filter_config)
    shipped = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name, port in clusters.items():
        assert name in shipped, f"{path.name} has no cluster {name}"
        # Its address is ours; its protocol (HTTP/2 for a gRPC service) stays the file's.
        protocol = shipped[name].get("typed_extension_protocol_options")
        shipped[name] = static_cluster(name, port)
        if protocol is not None:
            shipped[name]["typed_extension_protocol_options"] = protocol
    config["static_resources"]["clusters"] = list(shipped.values())
    return config


# --- the process -------------------------------------------------------------------------


class EnvoyExited(AssertionError):
    """Envoy stopped while we waited for it to become ready."""


class Envoy:
    """An Envoy process with files under `workdir`: `<name>.json` (the bootstrap, when given
    as a dict; a Path is used as it is), `<name>.log` (its log), `<name>.out` (stdout and
    stderr)."""

    def __init__(
        self,
        envoy_bin: str,
        config: dict | Path,
        workdir: Path,
        name: str = "envoy",
        concurrency: int = 2,
        extra_args: tuple[str, ...] = (),
        hot_restart: tuple[int, int] | None = None,
    ):
        """`hot_restart`: (base id, restart epoch) for a process that takes part in a hot
        restart (epoch 0 first, then 1 with the same base id takes its sockets over);
        without it, hot restart is disabled."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.admin_address_path = workdir / f"{name}.admin"
        if isinstance(config, Path):
            self.config_path = config
        else:
            self.config_path = workdir / f"{name}.json"
            self.config_path.write_text(json.dumps(config, indent=2))
        for stale in (self.log_path, self.admin_address_path):
            stale.unlink(missing_ok=True)
        self.admin_port = 0
        self.port = 0
        if hot_restart is None:
            # A base id unique per process even with hot restart off: other Envoys on the
            # machine (a `make run` demo, the bench) may not disable it.
            restart_args = ["--disable-hot-restart", "--base-id", str(random.randint(1000, 60000))]
        else:
            restart_args = ["--base-id", str(hot_restart[0]), "--restart-epoch", str(hot_restart[1])]
        argv = [
            envoy_bin,
            "-c", str(self.config_path),
            "--concurrency", str(concurrency),
            *restart_args,
            "--admin-address-path", str(self.admin_address_path),
            "--log-level", "info",
            "--component-log-level", "wasm:debug",
            "--log-path", str(self.log_path),
            # The log is written in batches; flush often so failure reports are complete.
            "--file-flush-interval-msec", "50",
            *extra_args,
        ]  # fmt: skip
        self.process = ManagedProcess(argv, workdir / f"{name}.out", env=dict(os.environ))

    # --- lifecycle ---

    def wait_ready(self, timeout: float = 30.0) -> Envoy:
        """Until the admin API answers /ready 200 and the listener accepts connections."""
        wait_until(self._ready, timeout, f"Envoy {self.name} to be ready", 0.01)
        return self

    def _ready(self) -> bool:
        self._raise_if_exited()
        if not self.admin_port:
            try:
                text = self.admin_address_path.read_text().strip()
            except OSError:
                return False
            if not text:
                return False
            self.admin_port = int(text.rsplit(":", 1)[1])
        try:
            if self.admin("/ready", timeout=1).status != 200:
                return False
            if not self.port:
                self.port = self._listener_port()
            return bool(self.port) and accepts_connections(self.port)
        except OSError:
            return False

    def _listener_port(self) -> int:
        listeners = self.admin("/listeners?format=json", timeout=2).json()
        for status in listeners.get("listener_statuses", []):
            port = status.get("local_address", {}).get("socket_address", {}).get("port_value")
            if port:
                return int(port)
        return 0

    def _raise_if_exited(self) -> None:
        code = self.process.exit_code()
        if code is not None:
            raise EnvoyExited(f"Envoy {self.name} exited with {code}; log tail:\n{self.log_tail()}")

    def wait_exit(self, timeout: float) -> int:
        """Until the process exits (for configurations Envoy must refuse); its exit code."""
        wait_until(
            lambda: self.process.exit_code() is not None, timeout, f"Envoy {self.name} to exit"
        )
        code = self.process.exit_code()
        assert code is not None
        return code

    def stop(self) -> None:
        self.process.stop()

    # --- talking to it ---

    def request(self, path: str = "/", headers=(), **kwargs) -> Response:
        assert self.port, "Envoy is not ready"
        return request(self.port, path, headers, **kwargs)

    def admin(self, path: str, timeout: float = 5.0) -> Response:
        return request(self.admin_port, path, timeout=timeout)

    def worker_connections(self) -> dict[str, int]:
        """Connections each worker thread has accepted on the listener (`worker_0`: n, ...)."""
        out: dict[str, int] = {}
        for name, value in self.stats().items():
            if name.startswith("listener.") and name.endswith(".downstream_cx_total"):
                workers = [p for p in name.split(".") if p.startswith("worker_")]
                if workers:
                    out[workers[0]] = out.get(workers[0], 0) + int(value)
        return out

    def on_every_worker(self, send, max_requests: int = 60) -> int:
        """Calls `send()` — one request on a new connection, asserting its outcome — until
        every worker thread has accepted at least one of those connections; fails when some
        worker got none within `max_requests`. Returns how many requests it took."""
        before = self.worker_connections()
        assert before, "no per-worker listener stats"
        for n in range(1, max_requests + 1):
            send()
            after = self.worker_connections()
            if all(after[w] > before[w] for w in before):
                return n
        raise AssertionError(
            f"some worker never got a connection in {max_requests} requests: "
            f"{before} -> {self.worker_connections()}"
        )

    def rss_bytes(self) -> int:
        """The process's resident memory (VmRSS of /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for Envoy {self.name}")

    def stats(self, only: str | None = None) -> dict[str, int]:
        """Every counter and gauge by name (`only`: those whose name matches this regex)."""
        query = f"&filter={urllib.parse.quote(only)}" if only else ""
        data = self.admin(f"/stats?format=json{query}").json()
        return {s["name"]: s["value"] for s in data.get("stats", []) if "value" in s}

    def _filter_metrics(self) -> dict[str, int]:
        """The filter's own metrics, keyed by their name after `cognito_authorizer.`.

        Envoy shows proxy-wasm metrics under a prefix of its own (`wasmcustom.` in 1.40),
        so they are found by the `cognito_authorizer.` component rather than a full name.
        Envoy's stats about the plugin itself (`wasm.<plugin name>.vm_reload`, ...) are
        not the filter's and are left out."""
        out: dict[str, int] = {}
        for full, value in self.stats().items():
            if full.startswith("wasm."):
                continue
            components = full.split(".")
            if COUNTER_PREFIX.rstrip(".") not in components:
                continue
            rest = ".".join(components[components.index(COUNTER_PREFIX.rstrip(".")) + 1 :])
            assert rest not in out, f"metric cognito_authorizer.{rest} shown twice"
            out[rest] = value
        return out

    def counters(self) -> dict[str, int]:
        """The process-wide counters by short name (`allowed`, `denied_missing`, ...);
        per-pool ones (`cognito_authorizer.pool.<pool>.<name>`) are left out."""
        return {k: v for k, v in self._filter_metrics().items() if "." not in k}

    def pool_counter(self, pool: str, name: str) -> int:
        """A per-pool counter: `<name>` under a name that holds the pool's name as one of
        its components (`cognito_authorizer.pool.<pool>.<name>`)."""
        found = [
            value
            for rest, value in self._filter_metrics().items()
            if rest.split(".")[-1] == name and pool in rest.split(".")[:-1]
        ]
        assert len(found) == 1, f"{len(found)} counters {name} for pool {pool}"
        return found[0]

    def counter(self, name: str) -> int:
        counters = self.counters()
        assert name in counters, f"no counter cognito_authorizer.{name}; have {sorted(counters)}"
        return counters[name]

    # --- its log ---

    def log_text(self) -> str:
        parts = []
        for path in (self.log_path, self.process.output_path):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]


# --- the filter's refusal reasons, from its debug log ---------------------------------------

REFUSAL_LINE = re.compile(r"refused: reason=(\S+)")


def settled_log_size(envoy: Envoy, quiet: float = 0.15) -> int:
    """The log's size once Envoy has written out what earlier requests logged (it flushes
    every 50 ms): a mark taken now does not catch lines of requests already answered."""
    previous = -1
    while True:
        size = envoy.log_size()
        if size == previous:
            return size
        previous = size
        time.sleep(quiet)


def refusal_reasons_since(envoy: Envoy, mark: int, count: int, timeout: float = 10.0) -> list[str]:
    """The `reason=` of the filter's refusal log lines after `mark`, once there are `count`
    of them (the filter logs one line per refused request, at debug level)."""

    def probe() -> list[str] | None:
        found = REFUSAL_LINE.findall(envoy.log_since(mark))
        return found[:count] if len(found) >= count else None

    return wait_until(probe, timeout, f"{count} refusal line(s) in Envoy {envoy.name}'s log")
