"""Revoked and signed-out tokens (README "Revocation"), end to end: real Envoy with the built
filter, moto as Cognito, the revocation document written by the project's producer
(`tools/revocations/cognito_revocations.py`, run as a user runs it) and served by a server
the tests control (which counts the fetches).

What is measured here is printed (`pytest -s`) and quoted in the README: time from a new
document to refusal on every worker, fetches per refresh per process, and the load time and
memory of 100,000 entries inside Envoy."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from support import tokens as tk
from support.assertions import UNAUTHORIZED, Outcomes, assert_allowed, assert_unavailable
from support.authorizer_config import (
    ACCESS_ONLY_ISSUER,
    ACCESS_ONLY_POOL,
    MOTO_CLUSTER,
    PASSWORD,
    TEST_CLUSTER,
    jwks_uri,
    moto_pool,
    self_minted_pool,
)
from support.envoy import authorizer_bootstrap, refusal_reasons_since, settled_log_size
from support.jwks_server import JwksServer
from support.moto_pool import DUMMY_CREDENTIALS, REGION, cognito_client
from support.polling import wait_until
from support.scenarios import bearer, filter_metrics, mint_access, mint_id

REPO = Path(__file__).resolve().parents[3]
PRODUCER = REPO / "tools" / "revocations" / "cognito_revocations.py"
DOC_CLUSTER = "revocations"
DOC_SUFFIX = "/revocations.json"
REVOKED_CHALLENGE = (
    'Bearer realm="api", error="invalid_token", '
    'error_description="The access token has been revoked"'
)
LOG_FORMAT = (
    "%REQ(:PATH)% %RESPONSE_CODE% reason=%FILTER_STATE(wasm.cognito_authorizer.reason:PLAIN)%\n"
)


@pytest.fixture(scope="module")
def documents():
    """Serves revocation documents at any path ending in /revocations.json."""
    server = JwksServer(suffix=DOC_SUFFIX)
    yield server
    server.stop()


def source(path: str, **settings) -> dict:
    return {"cluster": DOC_CLUSTER, "uri": f"http://revocations.test{path}", "timeout_ms": 500,
            **settings}


def produce(target: Path, moto_endpoint: str, *args: str) -> dict:
    """Runs the producer's CLI on a document file, as an operator would; returns the file's
    JSON afterwards."""
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": REGION,
        **{k.upper(): v for k, v in DUMMY_CREDENTIALS.items()},
    }
    subprocess.run(
        [sys.executable, str(PRODUCER), "--target", str(target), "--endpoint-url", moto_endpoint,
         *args],
        check=True, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    return json.loads(target.read_text())


def document(
    revoked: dict[str, int] | None = None, signed_out: dict[str, int] | None = None
) -> bytes:
    return json.dumps(
        {
            "version": 1,
            "generated_at": int(time.time()),
            "max_token_lifetime_seconds": 86400,
            "revoked_jti": revoked or {},
            "signed_out": signed_out or {},
        }
    ).encode()


def access_log(path: Path) -> list[dict]:
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(path),
                "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
            },
        }
    ]


def assert_revoked(resp, upstream) -> None:
    assert resp.status == 401, resp.describe()
    assert resp.body == UNAUTHORIZED, resp.describe()
    assert resp.header("content-type") == "application/json", resp.describe()
    assert resp.header("www-authenticate") == REVOKED_CHALLENGE, resp.describe()
    assert upstream.requests == [], f"a revoked token reached the upstream: {upstream.requests}"


def on_every_worker(envoy, upstream, token: str, check) -> int:
    """Sends `token` on fresh connections until every worker has answered it, each answer
    checked by `check(resp, upstream)` (assert_allowed, assert_revoked); returns how many
    requests that took."""

    def send():
        upstream.clear()
        check(envoy.request("/r", bearer(token)), upstream)

    return envoy.on_every_worker(send)


INSTALL_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]\[(\d+)\].*revocations #\d+: "
    r"(?:loaded document|using the document published).*?(\d+) revoked ids, (\d+) signed-out users"
)


def installed_everywhere(envoy, revoked: int, signed_out: int, since: float, vms: int = 3) -> float:
    """Waits until every VM of `envoy` (its 2 workers and the main thread) logged installing
    a document of that size after `since` (wall clock); returns when the last one did,
    in seconds after `since`. The fetching VM logs "loaded document", the others "using
    the document published in shared data"."""

    def probe():
        latest: dict[str, float] = {}
        for line in envoy.log_text().splitlines():
            m = INSTALL_LINE.match(line)
            if not m or (int(m[3]), int(m[4])) != (revoked, signed_out):
                continue
            at = datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            if at >= since - 0.002:
                latest[m[2]] = max(latest.get(m[2], 0.0), at)
        return latest if len(latest) >= vms else None

    return max(wait_until(probe, 15, f"{vms} VMs installing the document").values()) - since


def claims_of(token: str) -> dict:
    return tk.split(token)[1]


def add_user(cognito, username: str) -> None:
    client = cognito_client(cognito.endpoint)
    client.admin_create_user(
        UserPoolId=cognito.pool_id, Username=username, MessageAction="SUPPRESS",
        UserAttributes=[{"Name": "email", "Value": f"{username}@example.com"}],
    )  # fmt: skip
    client.admin_set_user_password(
        UserPoolId=cognito.pool_id, Username=username, Password=PASSWORD, Permanent=True
    )
    cognito.users[username] = PASSWORD


# --- a user signs out everywhere (moto) ----------------------------------------------------


def test_global_sign_out_refuses_old_tokens_on_every_worker_after_the_next_refresh(
    bootstrap_envoys, wasm_path, moto, cognito, documents, upstream, tmp_path
):
    refresh = 2
    add_user(cognito, "dave")
    add_user(cognito, "erin")
    doc_path = tmp_path / "revocations.json"
    produce(doc_path, moto.endpoint, "prune")  # an empty document to start with
    documents.serve_raw(doc_path.read_bytes())
    log_path = tmp_path / "access.log"
    pool = {**moto_pool(cognito.pool_id, cognito.client_id),
            "revocations": source("/moto" + DOC_SUFFIX, refresh_seconds=refresh)}  # fmt: skip
    bootstrap = authorizer_bootstrap(
        wasm_path,
        {"user_pools": [pool]},
        upstream.port,
        {MOTO_CLUSTER: moto.port, DOC_CLUSTER: documents.port},
        access_log=access_log(log_path),
    )
    envoy = bootstrap_envoys(bootstrap, name="signout")
    try:
        sign_out_scenario(envoy, moto, cognito, documents, upstream, doc_path, log_path, refresh)
    finally:
        bootstrap_envoys.stop(envoy)


def sign_out_scenario(envoy, moto, cognito, documents, upstream, doc_path, log_path, refresh):

    old = cognito.login("dave")
    erin = cognito.login("erin")
    tokens = (old.access_token, old.id_token)
    for token in tokens:
        on_every_worker(envoy, upstream, token, assert_allowed)
    # Both tokens are in the cache of every worker: another round is answered from it only.
    hits = filter_metrics(envoy)["cache_hit"]
    sent = sum(on_every_worker(envoy, upstream, token, assert_allowed) for token in tokens)
    assert filter_metrics(envoy)["cache_hit"] - hits == sent

    # The sign-out happens in a later second than the sign-in (T is a whole second).
    auth_time = claims_of(old.access_token)["auth_time"]
    wait_until(lambda: int(time.time()) > auth_time, 3, "the next second")
    cognito_client(cognito.endpoint).admin_user_global_sign_out(
        UserPoolId=cognito.pool_id, Username="dave"
    )
    doc = produce(doc_path, moto.endpoint, "sign-out", "--username", "dave",
                  "--user-pool-id", cognito.pool_id)  # fmt: skip
    sub = claims_of(old.access_token)["sub"]
    assert doc["signed_out"][sub] > auth_time

    # Served right after a fetch: the worst case, a whole refresh period to wait.
    path = "/moto" + DOC_SUFFIX
    documents.wait_for_hits(documents.hits(path) + 1, path=path)
    served_at = time.time()
    documents.serve_raw(doc_path.read_bytes())
    took = installed_everywhere(envoy, 0, 1, served_at)
    print(f"\nrevocation to refusal on every worker: {took:.2f} s (refresh_seconds {refresh})")
    assert took <= refresh + 1, f"{took:.2f} s: more than the refresh period + 1 s"
    on_every_worker(envoy, upstream, old.access_token, assert_revoked)

    # The cached id token too; the exact reply; the filter-state reason.
    outcomes = Outcomes(envoy)
    revoked_before = envoy.pool_counter("moto", "denied_revoked")
    for token in (old.access_token, old.id_token):
        upstream.clear()
        assert_revoked(envoy.request("/gone", bearer(token)), upstream)
    wait_until(
        lambda: log_path.exists()
        and log_path.read_text().count("/gone 401 reason=revoked") == 2,
        10,
        "two access-log lines with reason=revoked",
    )
    # A fresh sign-in (at or after T) passes; so does another user.
    fresh = cognito.login("dave")
    assert claims_of(fresh.access_token)["auth_time"] >= doc["signed_out"][sub]
    for token in (fresh.access_token, fresh.id_token, erin.access_token):
        upstream.clear()
        assert_allowed(envoy.request("/r", bearer(token)), upstream)
    changes = outcomes.changes()
    assert changes["allowed"] == 3, changes
    assert changes == {"allowed": 3, "denied_revoked": 2}, changes
    revoked_now = envoy.pool_counter("moto", "denied_revoked")
    assert revoked_now - revoked_before == changes["denied_revoked"]

    # One fetch per refresh per Envoy process (2 workers and the main thread share it).
    window = 8.0
    before = documents.hits(path)
    time.sleep(window)
    fetched = documents.hits(path) - before
    print(f"fetches in {window:.0f} s with refresh_seconds {refresh}: {fetched}")
    # A refresh starts on the first tick (500 ms) after it is due: the period is 2 to 2.5 s.
    # One fetch per worker would be twice as many at least.
    assert window / (refresh + 1) - 1 <= fetched <= window / refresh + 1, fetched


# --- RevokeToken: a whole session (origin_jti) ------------------------------------------------


def start(start_envoy, jwks, documents, *pools) -> object:
    """An Envoy (stopped after the test) with these pools, the JWKS and the documents."""
    return start_envoy(
        {"user_pools": list(pools)}, {TEST_CLUSTER: jwks.port, DOC_CLUSTER: documents.port}
    )


def test_revoked_session_refuses_every_token_of_it_and_a_bad_document_keeps_the_list(
    start_envoy, jwks, moto, signing_key, documents, upstream, tmp_path
):
    documents.serve_raw(document())
    path = "/minted" + DOC_SUFFIX
    envoy = start(start_envoy, jwks, documents, self_minted_pool(
        revocations=source(path, refresh_seconds=1, max_bytes=65536)))  # fmt: skip
    session = str(uuid.uuid4())
    id_token = mint_id(signing_key, origin_jti=session)
    access_token = mint_access(signing_key, origin_jti=session)
    other = mint_access(signing_key)
    for token in (id_token, access_token, other):
        upstream.clear()
        assert_allowed(envoy.request("/r", bearer(token)), upstream)

    doc_path = tmp_path / "revocations.json"
    produce(doc_path, moto.endpoint, "revoke", session)
    served_at = time.time()
    documents.serve_raw(doc_path.read_bytes())
    installed_everywhere(envoy, 1, 0, served_at)
    on_every_worker(envoy, upstream, access_token, assert_revoked)
    mark = settled_log_size(envoy)
    for token in (id_token, access_token):
        upstream.clear()
        assert_revoked(envoy.request("/r", bearer(token)), upstream)
    assert refusal_reasons_since(envoy, mark, 2) == ["revoked", "revoked"]
    upstream.clear()
    assert_allowed(envoy.request("/r", bearer(other)), upstream)

    # Malformed, oversized (over max_bytes) and unknown-version documents: each refused,
    # the list in force stays (the revoked session stays refused, others pass).
    failed = filter_metrics(envoy).get("revocation_fetch_failed", 0)
    bad = [
        b'{"version":1,"generated_at":1,',
        json.dumps({"version": 2, "generated_at": 1}).encode(),
        document(revoked={f"id-{i:08d}": 4_000_000_000 for i in range(3_000)}),  # > 64 KiB
    ]
    for body in bad:
        documents.serve_raw(body)
        fetches = documents.hits(path)  # from now on, every fetch gets `body`
        documents.wait_for_hits(fetches + 1, timeout=15, path=path)
        upstream.clear()
        assert_revoked(envoy.request("/r", bearer(access_token)), upstream)
        upstream.clear()
        assert_allowed(envoy.request("/r", bearer(other)), upstream)
    assert filter_metrics(envoy)["revocation_fetch_failed"] >= failed + len(bad)
    assert "revocation document refused" in envoy.log_text()
    served_at = time.time()
    documents.serve_raw(document())
    installed_everywhere(envoy, 0, 0, served_at)
    on_every_worker(envoy, upstream, access_token, assert_allowed)


def test_first_document_is_awaited_not_skipped(start_envoy, jwks, signing_key, documents, upstream):
    listed = str(uuid.uuid4())
    token = mint_access(signing_key, jti=listed)
    documents.serve_raw(document(revoked={listed: int(time.time()) + 3600}))
    documents.hold_answers()
    try:
        pool = self_minted_pool(
            revocations=source("/cold" + DOC_SUFFIX, refresh_seconds=5, timeout_ms=3000)
        )
        envoy = start(start_envoy, jwks, documents, pool)
        result = {}
        sender = threading.Thread(
            target=lambda: result.update(resp=envoy.request("/r", bearer(token)))
        )
        upstream.clear()
        sender.start()
        time.sleep(0.5)
        assert sender.is_alive(), "the request did not wait for the first document"
    finally:
        documents.release()
    sender.join(10)
    assert_revoked(result["resp"], upstream)


# --- the source down past its bound ------------------------------------------------------------


def test_source_down_past_the_stale_bound_applies_on_unavailable(
    start_envoy, jwks, signing_key, documents, upstream
):
    settings = {"refresh_seconds": 1, "max_stale_seconds": 2}
    deny_pool = self_minted_pool(revocations=source("/deny" + DOC_SUFFIX, **settings))
    allow_pool = self_minted_pool(
        name="accessonly", user_pool_id=ACCESS_ONLY_POOL, issuer=ACCESS_ONLY_ISSUER,
        jwks_uri=jwks_uri(ACCESS_ONLY_POOL), token_use=["access"],
        revocations=source("/allow" + DOC_SUFFIX, on_unavailable="allow", **settings),
    )  # fmt: skip
    listed = str(uuid.uuid4())
    documents.serve_raw(document(revoked={listed: int(time.time()) + 3600}))
    envoy = start(start_envoy, jwks, documents, deny_pool, allow_pool)
    deny_ok = mint_access(signing_key)
    allow_ok = mint_access(signing_key, issuer=ACCESS_ONLY_ISSUER)
    allow_listed = mint_access(signing_key, issuer=ACCESS_ONLY_ISSUER, jti=listed)
    for token in (deny_ok, allow_ok):
        upstream.clear()
        assert_allowed(envoy.request("/r", bearer(token)), upstream)
    upstream.clear()
    assert_revoked(envoy.request("/r", bearer(allow_listed)), upstream)

    down_at = time.monotonic()
    documents.fail(503)
    # Within refresh + max_stale (3 s) of the last good fetch, the last list is served.
    time.sleep(1.0)
    upstream.clear()
    assert_allowed(envoy.request("/r", bearer(deny_ok)), upstream)
    upstream.clear()
    assert_revoked(envoy.request("/r", bearer(allow_listed)), upstream)
    # Past it: "deny" answers 503 with retry-after; "allow" verifies without the list.
    wait_until(lambda: envoy.request("/r", bearer(deny_ok)).status == 503, 10, "a 503")
    assert time.monotonic() - down_at >= 2.0
    upstream.clear()
    assert_unavailable(envoy.request("/r", bearer(deny_ok)), upstream)
    upstream.clear()
    assert_allowed(envoy.request("/r", bearer(allow_listed)), upstream)
    upstream.clear()
    assert_allowed(envoy.request("/r", bearer(allow_ok)), upstream)
    # The source comes back: the deny pool serves again (after its backoff).
    documents.serve_raw(document(revoked={listed: int(time.time()) + 3600}))
    # Each source retries on its own backoff.
    wait_until(lambda: envoy.request("/r", bearer(deny_ok)).status == 200, 20, "recovery")
    wait_until(lambda: envoy.request("/r", bearer(allow_listed)).status == 401, 20, "the list")
    # One worker has it; the others pick the published document up on their next tick
    # (README "Revocation": in force on every worker within a second).
    time.sleep(1.0)
    on_every_worker(envoy, upstream, allow_listed, assert_revoked)


# --- 100,000 entries inside Envoy -------------------------------------------------------------


def test_100000_entries_load_within_the_documented_bounds(
    start_envoy, jwks, signing_key, documents, upstream
):
    documents.serve_raw(document())
    pool = self_minted_pool(revocations=source("/big" + DOC_SUFFIX, refresh_seconds=2))
    envoy = start(start_envoy, jwks, documents, pool)
    listed, kept = str(uuid.uuid4()), mint_access(signing_key)
    token = mint_access(signing_key, jti=listed)
    for t in (token, kept):
        upstream.clear()
        assert_allowed(envoy.request("/r", bearer(t)), upstream)
    time.sleep(2.5)  # the empty document refreshed once: steady state
    rss_before = envoy.rss_bytes() // 1024
    until = int(time.time()) + 3600
    revoked = {str(uuid.uuid4()): until for _ in range(49_999)}
    revoked[listed] = until
    signed_out = {str(uuid.uuid4()): int(time.time()) for _ in range(50_000)}
    body = document(revoked=revoked, signed_out=signed_out)
    served_at = time.time()
    documents.serve_raw(body)
    took = installed_everywhere(envoy, 50_000, 50_000, served_at)
    on_every_worker(envoy, upstream, token, assert_revoked)
    time.sleep(2.5)  # every VM has installed it, and it was refetched once (unchanged)
    rss_after = envoy.rss_bytes() // 1024
    reads = [
        int(line.split("read in ")[1].split(" ms")[0])
        for line in envoy.log_text().splitlines()
        if "revocations #0: loaded document" in line and "50000 revoked ids" in line
    ]
    delta_mib = (rss_after - rss_before) / 1024
    print(f"\n100,000 entries ({len(body)} bytes): refused on every worker {took:.2f} s after "
          f"serving (refresh 2 s); parse in the fetching VM {reads} ms; Envoy RSS "
          f"{rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB (+{delta_mib:.1f} MiB)")  # fmt: skip
    assert reads and max(reads) <= 500, reads
    # refresh + 1 s, plus the parse of 100,000 entries in the fetching VM and in the others
    assert took <= 2 + 1 + 0.25, took
    # Envoy with 2 workers: 3 VMs, each holding the 1.2 MB list (the fetching VM also what
    # loading needed; wasm memory never shrinks), Envoy's shared-data copy of the list, and
    # Envoy's own handling of the 5.2 MB callout answer (about 13-15 MiB of the 17-18 MiB
    # measured: README "Revocation").
    assert delta_mib <= 24, delta_mib
    upstream.clear()
    assert_allowed(envoy.request("/r", bearer(kept)), upstream)
