"""The Envoys of `make bench`, the local JWKS server, and small HTTP helpers.

Every configuration has the same listener, the same route (a `direct_response` 200 with a small
body, so no upstream is measured) and the same clusters; only the HTTP filter chain differs.
Ports are chosen by the kernel (port 0) and read back from Envoy's admin API, so concurrent
test runs on the machine never collide with the bench.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import tokens as tk

ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def wasm_filter(name: str, wasm_path: str, configuration: str | None) -> dict:
    config: dict = {
        "name": name,
        "root_id": name,
        "failure_policy": "FAIL_CLOSED",
        "vm_config": {
            "vm_id": name,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": wasm_path}},
        },
    }
    if configuration is not None:
        config["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": configuration,
        }
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": config,
        },
    }


def jwt_authn_filter(jwks: str, cache: bool) -> dict:
    provider: dict = {
        "issuer": tk.ISSUER,
        # Cognito access tokens carry no `aud`: without `audiences` jwt_authn accepts any.
        "local_jwks": {"inline_string": jwks},
        # Like the authorizer's default forward_token: true (jwt_authn's default strips it).
        "forward": True,
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"cognito": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "cognito"}}],
        },
    }


# The revocation document of the "100,000 revocations" configuration: served by the bench
# JWKS server at this path, listing none of the bench's tokens (so every request is checked
# against the whole list and still allowed, like in the configuration without it).
REVOCATIONS_PATH = "/revocations.json"
REVOCATION_ENTRIES = 100_000


def revocation_document() -> bytes:
    import uuid

    now = int(time.time())
    half = REVOCATION_ENTRIES // 2
    return json.dumps(
        {
            "version": 1,
            "generated_at": now,
            "max_token_lifetime_seconds": 86400,
            "revoked_jti": {str(uuid.uuid4()): now + 86400 for _ in range(half)},
            "signed_out": {str(uuid.uuid4()): now for _ in range(REVOCATION_ENTRIES - half)},
        }
    ).encode()


def authorizer_configuration(
    signature_backend: str | None = None, revocations: bool = False, overrides: dict | None = None
) -> str:
    config: dict = {
        "user_pools": [
            {
                "name": "bench",
                "user_pool_id": tk.POOL_ID,
                "issuer": tk.ISSUER,
                "jwks_uri": tk.JWKS_URI,
                "jwks_cluster": "bench_jwks",
                "client_ids": [tk.CLIENT_ID],
            }
        ]
    }
    if signature_backend:
        config["signature_backend"] = signature_backend
    if revocations:
        config["user_pools"][0]["revocations"] = {
            "cluster": "bench_jwks",
            "uri": f"http://bench.revocations{REVOCATIONS_PATH}",
        }
    config.update(overrides or {})
    return json.dumps(config)


@dataclass(frozen=True)
class BenchConfig:
    key: str  # short id used in file names and the JSON results
    label: str  # column/row name in the report
    authenticates: bool  # answers 401 without a valid token
    caches: bool  # keeps verified tokens
    scenarios: str = "abcd"  # the scenarios it runs in
    optional: bool = False  # dropped (with a note) when it cannot start
    wasm: str = ""  # a variant's module (default: the module under test)
    overrides: str = ""  # a variant's top-level configuration keys, as JSON


CONFIGS = [
    BenchConfig("noauth", "no auth (router only)", False, False),
    BenchConfig("noop", "no-op wasm filter", False, False),
    BenchConfig("jwt", "jwt_authn, no cache", True, False),
    BenchConfig("jwtcache", "jwt_authn, cache 1000", True, True),
    BenchConfig("authorizer", "cognito-authorizer", True, True),
    # The same with a revocation document of 100,000 entries (none matching): the cost of the
    # per-request revocation check. Only where requests are cache hits (a, b), where the
    # check is the largest share of the work.
    BenchConfig(
        "authorizer_revocations", "cognito-authorizer, 100,000 revocations", True, True,
        scenarios="ab",
    ),
    # The ABI's own floors (tests/noop-filter in another mode): a filter that reads the request
    # headers and continues, for the cache hits (a, b); one that also asks Envoy's
    # verify_signature about a fixed RS256 signature, for fresh tokens (c).
    BenchConfig("ceiling_headers", "header-read ceiling", False, False, scenarios="ab"),
    BenchConfig("ceiling_verify", "verify ceiling", False, False, scenarios="c"),
    # The same filter with RSA done by jwt-simple inside the module instead of Envoy's
    # verify_signature: only where signatures are checked (a and b are cache hits, same code).
    BenchConfig(
        "authorizer_wasm", "cognito-authorizer, RSA in Wasm", True, True, scenarios="cd", optional=True
    ),
]
BY_KEY = {c.key: c for c in CONFIGS}


def variants(spec: str) -> list[BenchConfig]:
    """Experimental configurations run beside the others in the cache-hit scenarios (a, b),
    from `BENCH_VARIANTS`: `label=module` or `label=module|{"top-level": "keys"}` (an empty
    module: the one under test), separated by `;`. A measurement aid: an experimental build
    of the module (never shipped) or another configuration, in the same run as the real one."""
    out = []
    for i, item in enumerate(x for x in spec.split(";") if x.strip()):
        label, _, rest = item.partition("=")
        wasm, _, overrides = rest.partition("|")
        json.loads(overrides or "{}")  # refused here rather than by Envoy
        cfg = BenchConfig(f"variant{i}", label.strip(), True, True, scenarios="ab",
                          wasm=wasm.strip(), overrides=overrides.strip())  # fmt: skip
        BY_KEY[cfg.key] = cfg
        out.append(cfg)
    return out


def _chain(key: str, jwks: str, wasm: str, noop_wasm: str, verify_ceiling: str) -> list:
    """The HTTP filters (before the router) of the configuration `key`."""
    return {
        "noauth": [],
        "noop": [wasm_filter("noop_filter", noop_wasm, None)],
        "ceiling_headers": [wasm_filter("noop_filter", noop_wasm, "read-headers")],
        "ceiling_verify": [wasm_filter("noop_filter", noop_wasm, verify_ceiling)],
        "jwt": [jwt_authn_filter(jwks, cache=False)],
        "jwtcache": [jwt_authn_filter(jwks, cache=True)],
        "authorizer": [wasm_filter("cognito_authorizer", wasm, authorizer_configuration())],
        "authorizer_revocations": [
            wasm_filter("cognito_authorizer", wasm, authorizer_configuration(revocations=True))
        ],
        "authorizer_wasm": [
            wasm_filter("cognito_authorizer", wasm, authorizer_configuration("wasm"))
        ],
    }[key]


def envoy_config(cfg: BenchConfig, jwks: str, jwks_port: int, wasm: str, noop_wasm: str,
                 verify_ceiling: str = "") -> dict:  # fmt: skip
    """`verify_ceiling`: the verify ceiling's configuration (`TokenSet.verify_ceiling`)."""
    if cfg.key.startswith("variant"):
        config = authorizer_configuration(overrides=json.loads(cfg.overrides or "{}"))
        filters = [wasm_filter("cognito_authorizer", cfg.wasm or wasm, config)]
    else:
        filters = _chain(cfg.key, jwks, wasm, noop_wasm, verify_ceiling)
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "bench",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
                        }
                    ],
                }
            ]
        },
        "http_filters": filters + [ROUTER],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
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
            # Present in every configuration (only the authorizer calls it), so the
            # configurations differ in their filter chain only.
            "clusters": [
                {
                    "name": "bench_jwks",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "bench_jwks",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": jwks_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ]
                    },
                }
            ],
        },
    }


class JwksServer:
    """Serves the bench JWKS at Cognito's path (counting fetches) and the revocation document
    on 127.0.0.1 (any Host)."""

    def __init__(self, jwks: str):
        documents = {tk.JWKS_PATH: jwks.encode(), REVOCATIONS_PATH: revocation_document()}
        server_self = self
        self.fetches = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                body = documents.get(self.path.split("?")[0])
                if body is not None:
                    if self.path.split("?")[0] == tk.JWKS_PATH:
                        server_self.fetches += 1
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def http_get(port: int, path: str = "/", headers: dict | None = None, timeout: float = 5.0):
    """One GET to 127.0.0.1:port → (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Envoy:
    """One Envoy process (`--concurrency 2 --disable-hot-restart`, its own base id)."""

    cfg: BenchConfig
    envoy_bin: str
    config_path: Path
    base_id: int
    workdir: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    admin_port: int = 0
    port: int = 0
    log_path: Path = field(init=False)
    admin_file: Path = field(init=False)
    # The Wasm filters' own start-up lines (e.g. which signature backend it chose).
    log_level: str = "warning"
    component_log_level: str = "wasm:info"

    def __post_init__(self):
        self.log_path = self.workdir / f"envoy-{self.cfg.key}-{self.base_id}.log"
        self.admin_file = self.workdir / f"envoy-{self.cfg.key}-{self.base_id}.admin"

    def start(self) -> None:
        self.admin_file.unlink(missing_ok=True)
        cmd = [
            self.envoy_bin,
            "-c", str(self.config_path),
            "--concurrency", "2",
            "--disable-hot-restart",
            "--base-id", str(self.base_id),
            "--admin-address-path", str(self.admin_file),
            "--log-level", self.log_level,
            "--component-log-level", self.component_log_level,
            "--log-path", str(self.log_path),
        ]  # fmt: skip
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log_path.read_text()[-3000:] if self.log_path.exists() else ""
            raise RuntimeError(f"Envoy {self.cfg.key} exited with {self.proc.returncode}:\n{tail}")

    def wait_listening(self, deadline_s: float = 30.0, poll_s: float = 0.002) -> None:
        """Until the admin API names the listener's port."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            self._check_alive()
            if not self.admin_port:
                try:
                    text = self.admin_file.read_text().strip()
                    if text:
                        self.admin_port = int(text.rsplit(":", 1)[1])
                except (OSError, ValueError, IndexError):
                    pass
            if self.admin_port:
                try:
                    status, body = http_get(self.admin_port, "/listeners?format=json", timeout=1)
                    if status == 200:
                        for ls in json.loads(body).get("listener_statuses", []):
                            port = ls.get("local_address", {}).get("socket_address", {}).get("port_value")
                            if port:
                                self.port = int(port)
                                return
                except (OSError, ValueError, http.client.HTTPException):
                    pass
            time.sleep(poll_s)
        raise RuntimeError(f"Envoy {self.cfg.key} did not open its listener in {deadline_s} s")

    def wait_status(
        self, headers: dict, want: int, deadline_s: float = 30.0, poll_s: float = 0.002
    ) -> float:
        """Polls the listener until it answers `want`; returns seconds since exec."""
        end = time.monotonic() + deadline_s
        last = None
        while time.monotonic() < end:
            self._check_alive()
            try:
                status, _ = http_get(self.port, "/", headers, timeout=deadline_s)
                if status == want:
                    return time.monotonic() - self.started_at
                last = status
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(poll_s)
        raise RuntimeError(f"Envoy {self.cfg.key}: no {want} within {deadline_s} s (last: {last})")

    def rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stats(self, prefixes: tuple[str, ...]) -> dict[str, int]:
        """Counters whose name contains one of `prefixes` (from the admin API)."""
        status, body = http_get(self.admin_port, "/stats?format=json", timeout=5)
        out = {}
        if status != 200:
            return out
        for s in json.loads(body).get("stats", []):
            name, value = s.get("name", ""), s.get("value")
            if isinstance(value, int) and any(p in name for p in prefixes):
                out[name] = value
        return out

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def free_base_id(index: int) -> int:
    """Distinct per Envoy and per bench process (hot restart is off, so it names nothing
    shared; kept distinct as the other Envoys on the machine may not disable it)."""
    return 20000 + (os.getpid() % 500) * 40 + index % 40

