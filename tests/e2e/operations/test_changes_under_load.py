"""Changes to a running Envoy while traffic flows: configuration pushes, refused pushes, and
a hot restart (README "Operations").

Pushes come as Istio (WasmPlugin) and Envoy Gateway (EnvoyExtensionPolicy) make them, from a
watched file: by ECDS (the filter alone is replaced in the listener Envoy keeps) and by LDS
(the whole listener is replaced and the old one drained). The test pushes 50 configurations
in a row under load, each changing one thing (a rule, a second pool added or removed and
pointed at other keys, a claim header, `report` ↔ `enforce`, a revocation source), then each
class of configuration the filter refuses, and a corrupt module.

What a client may see: every answer is one the old or the new configuration gives; no
connection error beyond what the same pushes cause with the no-op Wasm filter (measured in
the same test); keys fetched once per pool identity; Envoy's RSS after 50 pushes within a
stated bound of its RSS after the first; a refused push changes nothing (Envoy rejects the
update, the old configuration keeps serving); a hot restart drops and refuses nothing."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass

import pytest

from support import tokens as tk
from support.authorizer_config import (
    TEST_CLIENT,
    TEST_CLUSTER,
    TEST_ISSUER,
    TEST_POOL,
    jwks_path,
    jwks_uri,
    self_minted_pool,
)
from support.bad_configs import BAD_CONFIGS, has_line_naming
from support.envoy import Envoy, authorizer_bootstrap, on_port
from support.jwks_server import JwksServer
from support.key_lifecycle import EcdsFiles, LdsFiles
from support.load import Exchange, Load, Probe
from support.polling import wait_until
from support.ports import free_port
from support.scenarios import bearer

PUSHES = 50
# How long each configuration stays in force under load before the next push.
DWELL = 0.3
# An answer may come from configuration j until this long after Envoy reported the next one
# in force: the main thread counts the update before every worker has swapped listeners.
SWAP_SLACK = 0.25
# Old listeners drain for this long after a push (Envoy's `--drain-time-s`, default 600 s):
# short here so that the RSS after 50 pushes is measured once their plugins are released.
DRAIN_SECONDS = 1
# README "Operations": Envoy's RSS after 50 pushes is within this much of its RSS after the
# first push, once the old listeners have drained.
RSS_BOUND = 32 * 1024 * 1024

SECOND_POOL = "us-east-1_SecondPl1"
SECOND_ISSUER = tk.cognito_issuer(SECOND_POOL)
# The second pool's two identities: the same pool, its keys at one URI or another.
SECOND_URIS = {
    "x": f"http://jwks.test/x/{SECOND_POOL}/.well-known/jwks.json",
    "y": f"http://jwks.test/y/{SECOND_POOL}/.well-known/jwks.json",
}
DOC_CLUSTER = "revocations"
DOC_SUFFIX = "/revocations.json"
SUB_HEADERS = ("x-cognito-sub", "x-user-sub")


# --- the configurations pushed, and what each answers ----------------------------------------


@dataclass(frozen=True)
class Variant:
    """One configuration: a rule on /admin (which group it requires), an optional second pool
    (under one of two JWKS URIs), the header the `sub` claim goes to, the mode, and whether
    the test pool has a revocation source."""

    admin_group: str = "admins"
    second_pool: str | None = None
    sub_header: str = SUB_HEADERS[0]
    mode: str = "enforce"
    revocations: bool = False

    def config(self) -> dict:
        pool = self_minted_pool()
        if self.revocations:
            pool["revocations"] = {
                "cluster": DOC_CLUSTER,
                "uri": f"http://revocations.test/push{DOC_SUFFIX}",
                "refresh_seconds": 3600,
            }
        pools = [pool]
        if self.second_pool:
            pools.append(
                self_minted_pool(
                    name="second",
                    user_pool_id=SECOND_POOL,
                    issuer=SECOND_ISSUER,
                    jwks_uri=SECOND_URIS[self.second_pool],
                )
            )
        return {
            "user_pools": pools,
            "rules": [{"match": {"prefix": "/admin"}, "require": {"groups": [self.admin_group]}}],
            "claims_to_headers": {"sub": self.sub_header},
            "mode": self.mode,
        }

    def expect(self, kind: str, path: str) -> tuple[int, str | None, frozenset[str]]:
        """(status, decision header upstream, identity headers upstream) for a probe."""
        groups = {"admin": ["admins"], "user": ["users"], "revoked": ["admins"],
                  "second": ["admins"], "none": None}[kind]  # fmt: skip
        if kind == "none":
            reason = "missing"
        elif kind == "second" and not self.second_pool:
            reason = "invalid"
        elif kind == "revoked" and self.revocations:
            reason = "revoked"
        elif path.startswith("/admin") and self.admin_group not in groups:
            reason = "forbidden"
        else:
            reason = "allowed"
        headers = frozenset([self.sub_header]) if reason == "allowed" else frozenset()
        if self.mode == "report":
            return 200, reason, headers
        if reason == "allowed":
            return 200, None, headers
        return (403 if reason == "forbidden" else 401), None, frozenset()


# Each push changes one thing of the one before, in turn.
CHANGES = [
    lambda v: dataclasses.replace(v, admin_group="users" if v.admin_group == "admins" else "admins"),
    lambda v: dataclasses.replace(v, second_pool=None),
    lambda v: dataclasses.replace(v, sub_header=SUB_HEADERS[v.sub_header == SUB_HEADERS[0]]),
    lambda v: dataclasses.replace(v, mode="report" if v.mode == "enforce" else "enforce"),
    lambda v: dataclasses.replace(v, revocations=not v.revocations),
]


def variants() -> list[Variant]:
    """The first configuration and the 50 pushed after it. The second pool is added and
    removed in turn, added back under its other identity each time (x, y, x, ...)."""
    out = [Variant(second_pool="x")]
    additions = 0
    for i in range(PUSHES):
        v = out[-1]
        change = i % len(CHANGES)
        if change == 1 and v.second_pool is None:
            additions += 1
            v = dataclasses.replace(v, second_pool="xy"[additions % 2])
        else:
            v = CHANGES[change](v)
        out.append(v)
    return out


# --- pushes --------------------------------------------------------------------------------


@dataclass
class Push:
    written: float
    applied: float  # when Envoy's counters showed it in force (or rejected)


Files = LdsFiles | EcdsFiles


def push(envoy: Envoy, files: Files, config, *, wasm_path: str | None = None,
         rejected: bool = False) -> Push:  # fmt: skip
    """Writes the listener (or, by ECDS, the filter) with `config` and waits until Envoy has
    it in force (or, with `rejected`, until Envoy has rejected it)."""
    applied_before, rejected_before, _ = files.counts(envoy)
    written = time.monotonic()
    files.write(config, wasm_path=wasm_path)

    def done():
        applied, refused, warming = files.counts(envoy)
        if rejected:
            return refused > rejected_before
        assert refused == rejected_before, f"Envoy rejected push {files.version}:\n{envoy.log_tail()}"
        return applied > applied_before and not warming

    wait_until(done, 15, f"Envoy to {'reject' if rejected else 'apply'} push {files.version}", 0.01)
    return Push(written, time.monotonic())


def drained(envoy: Envoy) -> None:
    wait_until(
        lambda: envoy.stats(r"^listener_manager\.").get(
            "listener_manager.total_listeners_draining", 0) == 0,
        DRAIN_SECONDS + 15,
        "the old listeners to drain",
    )


def in_force(exchange: Exchange, pushes: list[Push]) -> list[int]:
    """The configurations that may have answered `exchange`: pushed before its answer came
    back, and not yet replaced (plus the swap slack) when it was sent."""
    out = []
    for j, p in enumerate(pushes):
        replaced = pushes[j + 1].applied + SWAP_SLACK if j + 1 < len(pushes) else float("inf")
        if p.written <= exchange.done and exchange.sent <= replaced:
            out.append(j)
    return out


def outcome(exchange: Exchange) -> tuple[int | None, str | None, frozenset[str]]:
    return exchange.status, exchange.decision, exchange.upstream_headers


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def revocation_docs():
    server = JwksServer(suffix=DOC_SUFFIX)
    yield server
    server.stop()


@pytest.fixture
def delivered(bootstrap_envoys, upstream, jwks, revocation_docs, tmp_path):
    """delivered(how, wasm_path, first_config) → (Envoy, files): Envoy (2 workers, old
    listeners drained in DRAIN_SECONDS) whose filter configuration is read from a watched
    file, as a whole listener (`how` "lds") or as the filter alone ("ecds")."""
    count = [0]

    def start(how: str, wasm_path: str, config: dict):
        count[0] += 1
        name = f"{how}{count[0]}"
        files = {"lds": LdsFiles, "ecds": EcdsFiles}[how](
            tmp_path / name,
            wasm_path,
            upstream.port,
            {TEST_CLUSTER: jwks.port, DOC_CLUSTER: revocation_docs.port},
            free_port(),
        )
        envoy = bootstrap_envoys(
            files.bootstrap(config),
            name=f"{name}-{tmp_path.name}",
            extra_args=("--drain-time-s", str(DRAIN_SECONDS)),
        )
        return envoy, files

    return start


def probes(signing_key) -> tuple[list[Probe], str]:
    """The requests of the load (each kind of token, and none, on /admin/x and /data), and
    the `jti` of the token the revocation document lists."""
    revoked_claims = tk.id_claims(TEST_ISSUER, TEST_CLIENT, groups=["admins"])
    tokens = {
        "admin": tk.sign(signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT, groups=["admins"])),
        "user": tk.sign(signing_key, tk.id_claims(TEST_ISSUER, TEST_CLIENT, groups=["users"])),
        "revoked": tk.sign(signing_key, revoked_claims),
        "second": tk.sign(
            signing_key, tk.id_claims(SECOND_ISSUER, TEST_CLIENT, groups=["admins"])
        ),
    }
    out = [Probe("none", path) for path in ("/admin/x", "/data")]
    for kind, token in tokens.items():
        out += [Probe(kind, path, tuple(bearer(token).items())) for path in ("/admin/x", "/data")]
    return out, revoked_claims["jti"]


# --- the tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["lds", "ecds"])
def test_fifty_pushes_under_load_answer_as_the_old_or_the_new_configuration(
    how, delivered, wasm_path, noop_wasm_path, jwks, revocation_docs, signing_key
):
    load_probes, revoked_jti = probes(signing_key)
    now = int(time.time())
    revocation_docs.set(f"/push{DOC_SUFFIX}", {
        "version": 1, "generated_at": now, "max_token_lifetime_seconds": 86400,
        "revoked_jti": {revoked_jti: now + 3600}})  # fmt: skip
    plan = variants()

    # The baseline: the same pushes (the configuration text changes each time, so Envoy
    # replaces the listener each time) with the no-op filter.
    noop, noop_files = delivered(how, noop_wasm_path, {"push": 0})
    with Load(noop.port, load_probes) as baseline:
        for i in range(1, PUSHES + 1):
            push(noop, noop_files, {"push": i})
            time.sleep(DWELL)
    baseline_errors = [e for e in baseline.exchanges if e.status is None]

    envoy, files = delivered(how, wasm_path, plan[0].config())
    wait_until(lambda: envoy.request("/data").status == 401, 10, "the filter to answer")
    pushes = [Push(0.0, 0.0)]
    rss_first = 0
    with Load(envoy.port, load_probes, watch=SUB_HEADERS) as load:
        time.sleep(DWELL)
        for i, variant in enumerate(plan[1:], start=1):
            pushes.append(push(envoy, files, variant.config()))
            time.sleep(DWELL)
            if i == 1:
                drained(envoy)
                rss_first = envoy.rss_bytes()
    rss_undrained = envoy.rss_bytes()  # the old listeners of the last second not yet released
    drained(envoy)
    rss_last = envoy.rss_bytes()

    # Every answer is one that a configuration in force while it was in flight gives.
    wrong, only_new = [], [0] * len(plan)
    for exchange in load.exchanges:
        if exchange.status is None:
            continue
        candidates = in_force(exchange, pushes)
        got = outcome(exchange)
        expected = {j: plan[j].expect(exchange.probe.kind, exchange.probe.path) for j in candidates}
        if got not in expected.values():
            wrong.append((exchange, expected))
        elif candidates and expected[candidates[-1]] == got and candidates[-1] > 0 and (
            plan[candidates[-1] - 1].expect(exchange.probe.kind, exchange.probe.path) != got
        ):
            only_new[candidates[-1]] += 1
    errors = [e for e in load.exchanges if e.status is None]
    fetches = {path: jwks.hits(path) for path in
               [jwks_path(TEST_POOL), *(f"/{k}/{SECOND_POOL}/.well-known/jwks.json" for k in "xy")]}  # fmt: skip
    print(
        f"[measure] {PUSHES} pushes ({how}) under load: {len(load.exchanges)} answers "
        f"({len(load.exchanges) / (pushes[-1].applied - pushes[1].written):.0f}/s), "
        f"{len(wrong)} inconsistent, {len(errors)} connection errors "
        f"(no-op filter, same pushes: {len(baseline_errors)} in {len(baseline.exchanges)}); "
        f"JWKS fetches {fetches}, revocation documents {revocation_docs.hits()}; "
        f"RSS after push 1 {rss_first / 2**20:.1f} MiB, after push {PUSHES} "
        f"{rss_last / 2**20:.1f} MiB ({(rss_last - rss_first) / 2**20:+.1f} MiB; "
        f"{rss_undrained / 2**20:.1f} MiB before the last listeners drained)"
    )
    assert not wrong, "\n".join(
        f"{e.probe.kind} {e.probe.path}: got {outcome(e)}, configurations in force "
        f"{ {j: plan[j] for j in exp} } expect {exp}" for e, exp in wrong[:5]  # fmt: skip
    )
    assert len(errors) <= len(baseline_errors), [e.error for e in errors[:5]]
    # Every push was seen to take effect: some answer only the new configuration gives.
    assert all(only_new[1:]), [i for i, n in enumerate(only_new) if i and not n]
    # Keys: one fetch per pool identity (the test pool; the second pool under each URI),
    # however many times the second pool was added, removed and added again.
    assert fetches == dict.fromkeys(fetches, 1), fetches
    assert revocation_docs.hits() == 1
    assert rss_last - rss_first <= RSS_BOUND


@pytest.mark.parametrize("how", ["lds", "ecds"])
def test_a_refused_push_changes_nothing_under_load(
    how, delivered, wasm_path, jwks, signing_key, tmp_path
):
    """Each class of configuration the filter refuses, and a module that is not Wasm at all,
    pushed to a running Envoy under load: Envoy rejects the listener update, the filter's log
    line names the key, and every answer is the old configuration's."""
    load_probes, _ = probes(signing_key)
    old = Variant()
    envoy, files = delivered(how, wasm_path, old.config())
    wait_until(lambda: envoy.request("/data").status == 401, 10, "the filter to answer")
    corrupt = tmp_path / "corrupt.wasm"
    corrupt.write_bytes(b"\0asm\x01\0\0\0 this is not a module" * 100)
    bad_pushes = {
        **{name: (config, names, None) for name, (config, names) in BAD_CONFIGS.items()
           if name in ("not-json", "unknown-top-level-key", "bad-rule-path",
                       "pool-id-without-underscore")},
        "corrupt-module": (old.config(), None, str(corrupt)),
    }  # fmt: skip
    _, rejected_before, _ = files.counts(envoy)
    with Load(envoy.port, load_probes, watch=SUB_HEADERS) as load:
        for name, (config, names, module) in bad_pushes.items():
            mark = len(envoy.log_text())
            push(envoy, files, config, wasm_path=module, rejected=True)
            time.sleep(DWELL)
            if names is not None:
                assert has_line_naming(envoy.log_text()[mark:], names), (name, envoy.log_tail())
        # The next good configuration is applied as usual.
        new = Variant(admin_group="users")
        good = push(envoy, files, new.config())
        time.sleep(DWELL)
    rejected = files.counts(envoy)[1] - rejected_before

    # Up to the good push, every answer is the old configuration's (or, for a request still
    # in flight when the good push was written, possibly the new one's: a connection waiting
    # in the listening socket's queue is taken by the listener in force when Envoy accepts it).
    before_good = [e for e in load.exchanges if e.sent < good.written]
    after_good = [e for e in load.exchanges if e.sent > good.applied + SWAP_SLACK]
    wrong = [
        e for e in before_good
        if outcome(e) != old.expect(e.probe.kind, e.probe.path)
        and not (e.done >= good.written and outcome(e) == new.expect(e.probe.kind, e.probe.path))
    ]
    wrong += [e for e in after_good if outcome(e) != new.expect(e.probe.kind, e.probe.path)]
    errors = [e for e in load.exchanges if e.status is None]
    print(f"[measure] {len(bad_pushes)} refused pushes ({how}) under load: {rejected} rejected by "
          f"Envoy, {len(before_good)} answers under the old configuration, {len(wrong)} not "
          f"the old (or, after the next good push, the new) configuration's, "
          f"{len(errors)} connection errors")  # fmt: skip
    assert rejected == len(bad_pushes)
    assert not wrong, [(e.probe, outcome(e)) for e in wrong[:5]]
    assert not errors, [e.error for e in errors[:5]]
    assert after_good and before_good


def test_hot_restart_under_load_authorises_as_before_and_drops_nothing(
    bootstrap_envoys, wasm_path, upstream, jwks, signing_key
):
    """Envoy's hot restart (`--restart-epoch`) with the same configuration while requests
    flow: the new process takes the listening socket over and fetches its own keys (shared
    data is per process); requests that reach it before its keys wait for them (README
    "Keys"), so none is allowed early and none gets 401 or 503 for lack of keys; the old
    process drains and exits, its in-flight requests answered."""
    load_probes, _ = probes(signing_key)
    config = Variant()
    port = free_port()
    bootstrap = on_port(
        authorizer_bootstrap(wasm_path, config.config(), upstream.port, {TEST_CLUSTER: jwks.port}),
        port,
    )
    base_id = random.randint(1000, 60000)
    drain = ("--drain-time-s", "2", "--parent-shutdown-time-s", "4")
    parent = bootstrap_envoys(bootstrap, name="epoch0", extra_args=drain,
                              hot_restart=(base_id, 0))  # fmt: skip
    wait_until(lambda: parent.counter("jwks_fetch_ok") >= 1, 10, "the old process's keys")
    fetches_before = jwks.hits(jwks_path(TEST_POOL))

    with Load(port, load_probes, watch=SUB_HEADERS) as load:
        time.sleep(1.0)
        # The new process's key fetch is held for a second: requests it takes meanwhile
        # wait for the keys.
        jwks.hold_answers()
        restarted = time.monotonic()
        bootstrap_envoys(bootstrap, name="epoch1", extra_args=drain,
                         hot_restart=(base_id, 1))  # fmt: skip
        time.sleep(1.0)
        jwks.release()
        released = time.monotonic()
        parent_code = parent.wait_exit(30)
        parent_gone = time.monotonic()
        answered_before_exit = sum(1 for e in load.exchanges if e.done < parent_gone)
        time.sleep(1.0)

    wrong = [e for e in load.exchanges
             if e.status is not None and outcome(e) != config.expect(e.probe.kind, e.probe.path)]  # fmt: skip
    errors = [e for e in load.exchanges if e.status is None]
    during = [e for e in load.exchanges if restarted <= e.sent <= parent_gone]
    waited = [e for e in load.exchanges
              if e.probe.kind != "none" and e.done >= released and e.done - e.sent >= 0.5]  # fmt: skip
    # Counters move to the new process in a hot restart, so what it answered is told by time.
    after = [e for e in load.exchanges if e.sent > parent_gone]
    print(f"[measure] hot restart under load: {len(load.exchanges)} answers, {len(during)} "
          f"sent while both processes ran ({parent_gone - restarted:.1f} s), "
          f"{len(after)} after the old one exited, {len(waited)} waited for the new process's "
          f"keys, {len(wrong)} wrong, {len(errors)} connection "
          f"errors; the new process fetched keys {jwks.hits(jwks_path(TEST_POOL)) - fetches_before} "
          f"time(s); old process exit code {parent_code}")  # fmt: skip
    assert not wrong, [(e.probe, outcome(e)) for e in wrong[:5]]
    assert not errors, [e.error for e in errors[:5]]
    assert parent_code == 0
    assert during and after and answered_before_exit > 0 and waited
    assert jwks.hits(jwks_path(TEST_POOL)) - fetches_before == 1
