"""Path confusion (README "Paths"): whatever way the upstream reads the path it receives, a
request the filter let through must satisfy the rule that reading selects.

The corpus holds the classic tricks (dot segments, `..;` and `;jsessionid`, encoded and
double-encoded slashes and dots, backslashes, IIS `%u`, trailing dots and spaces, letter case,
repeated slashes) and their mixtures. Each is sent without a token and with a valid token of a
user outside `admins`, through three Envoy settings:

- Envoy's defaults (no path normalisation: the upstream receives the path as sent);
- `normalize_path` + `merge_slashes` + `path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT`;
- Istio's defaults (`normalize_path` only; encoded slashes kept).

When a request passes, the test takes the raw path the upstream received and reads it the way
several real servers do (models below, written independently of the filter's own code); the
rule each reading selects must be one the request satisfies: an `allow` rule without a token,
anything but the admins-only rule for the non-admin."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from support.authorizer_config import TEST_CLUSTER, self_minted_only_config
from support.scenarios import bearer, mint_id

RULES = [
    {"match": {"exact": "/healthz"}, "allow": True},
    {"match": {"prefix": "/public"}, "allow": True},
    {"match": {"prefix": "/admin"}, "require": {"groups": ["admins"]}},
]

SETTINGS = {
    "envoy-defaults": {
        "normalize_path": None,
        "merge_slashes": None,
        "path_with_escaped_slashes_action": None,
    },
    "normalize-unescape-redirect": {
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
    },
    "istio-defaults": {
        "normalize_path": True,
        "merge_slashes": None,
        "path_with_escaped_slashes_action": None,
    },
}

CORPUS = [
    # the reproductions of the security review
    "/admin/../healthz",
    "/admin/..;/x",
    "/admin/..;/healthz",
    "/admin/42%2F..%2F..%2Fhealthz",
    "/admin/42%2F..%2F..%2Fpublic",
    "/public/%252e%252e/admin",
    "/%2561dmin",
    # dot segments, plain and encoded
    "/public/../admin",
    "/public/./../admin/x",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/.%2e/admin",
    "/public/%2e./admin",
    "/healthz/../admin",
    "/./admin",
    "/admin/./../healthz",
    "/admin/%2e%2e/healthz",
    "/admin/%2e%2e%2fhealthz",
    # encoded slashes and backslashes
    "/public%2F..%2Fadmin",
    "/public/..%2Fadmin",
    "/public/..%2fadmin",
    "/public/..%5Cadmin",
    "/public\\..\\admin",
    "/admin\\..\\healthz",
    "/public/a%2Fb",
    "/healthz%2F..%2Fadmin",
    # double and triple encoding
    "/public/..%252Fadmin",
    "/public/%25%32%65%25%32%65/admin",
    "/%25%36%31dmin",
    "/admin/%252e%252e/healthz",
    # path parameters (Tomcat, Spring)
    "/public/..;/admin",
    "/public;jsessionid=1/../admin",
    "/admin;jsessionid=1",
    "/admin;/x",
    "/public/x;/../../admin",
    "/healthz;x",
    # IIS and Windows: %u, trailing dots and spaces, case
    "/%u0061dmin",
    "/%U0061dmin/x",
    "/admin.",
    "/admin./x",
    "/admin%20",
    "/admin%20/x",
    "/admin%2e",
    "/ADMIN",
    "/Admin/x",
    "/HEALTHZ",
    "/Public/../Admin",
    # repeated slashes
    "//admin",
    "/admin//x",
    "//healthz/..//admin",
    "/public//../admin",
    "/public/.//../admin",
    # mixtures
    "/public/%2e%2e;/ADMIN%20/x",
    "/PUBLIC/..%2F%2e%2e%2Fadmin",
    "/healthz/%2e%2e;x/%2561dmin",
    "/public/..\\%2e%2e/admin.",
    "//public/..//./admin;y",
    "/public%5C..%5C%2561dmin",
    # genuine public and health paths stay reachable
    "/healthz",
    "/public",
    "/public/x",
    "/public/a/../b",
]


# --- how upstream servers read a path (independent models) ---------------------------------


def _resolve(path: str, merge: bool) -> str:
    segments: list[str] = []
    parts = path.split("/")[1:]
    for i, seg in enumerate(parts):
        if seg == "." or (seg == "" and merge and i < len(parts) - 1):
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    return "/" + "/".join(segments)


def _percent_u(path: str) -> str:
    return re.sub(r"%[uU]([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), path)


def upstream_readings(raw: str) -> dict[str, str]:
    """The path each kind of server routes on, for a request target it received."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    once = unquote(path)
    twice = unquote(once)
    tomcat = "/".join(seg.split(";", 1)[0] for seg in once.split("/"))
    iis = _percent_u(path)
    iis = unquote(iis).replace("\\", "/")
    iis = "/".join(
        s if set(s) <= {"."} else s.rstrip(" .").lower() for s in iis.split("/")
    )
    return {
        "literal (routes on the raw target)": path,
        "rfc3986 (resolves dot segments, no decoding)": _resolve(path, merge=False),
        "decoder (Go, Node: decode once, resolve)": _resolve(once, merge=True),
        "decode without resolving (Express)": once,
        "double decoder": _resolve(twice, merge=True),
        "servlet (decode, cut ;params, resolve)": _resolve(tomcat, merge=True),
        "IIS (%u, decode, \\ as /, fold case, trim dots and spaces)": _resolve(iis, merge=True),
        "backslash as slash": _resolve(once.replace("\\", "/"), merge=True),
    }


def selected_rule(path: str) -> dict | None:
    for rule in RULES:
        m = rule["match"]
        if "exact" in m and path == m["exact"]:
            return rule
        if "prefix" in m:
            p = m["prefix"]
            if path == p or path.startswith(p + "/"):
                return rule
    return None


# --- the Envoys -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def envoys(module_envoys, jwks):
    config = self_minted_only_config(rules=RULES)
    return {
        name: module_envoys(config, {TEST_CLUSTER: jwks.port}, hcm_overrides=hcm, name=name)
        for name, hcm in SETTINGS.items()
    }


@pytest.fixture
def user_token(signing_key) -> str:
    return mint_id(signing_key, username="ursula", groups=["users"])


def send(envoy, upstream, path, headers):
    upstream.clear()
    resp = envoy.request(path, headers)
    passed = resp.status == 200
    received = upstream.requests
    if passed:
        assert len(received) == 1, resp.describe()
        return received[0].raw_path
    # A refusal (the filter's or Envoy's own 400/3xx) never reaches the upstream.
    assert received == [], f"{path}: {resp.status} but the upstream was reached"
    return None


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("path", CORPUS)
def test_anonymous_request_reaches_only_routes_every_reading_allows(
    envoys, upstream, setting, path
):
    raw = send(envoys[setting], upstream, path, {})
    if raw is None:
        return
    for server, reading in upstream_readings(raw).items():
        rule = selected_rule(reading)
        assert rule is not None and rule.get("allow"), (
            f"{path!r} passed without a token as {raw!r}, which {server} reads as "
            f"{reading!r}: rule {rule}"
        )


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("path", CORPUS)
def test_non_admin_reaches_no_reading_of_admin(envoys, upstream, user_token, setting, path):
    raw = send(envoys[setting], upstream, path, bearer(user_token))
    if raw is None:
        return
    for server, reading in upstream_readings(raw).items():
        rule = selected_rule(reading)
        assert rule is None or rule["match"].get("prefix") != "/admin", (
            f"{path!r} passed for a non-admin as {raw!r}, which {server} reads as {reading!r}"
        )


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize(
    "path", ["/healthz", "/public", "/public/x", "/public/a/../b", "/healthz?x=/admin"]
)
def test_genuine_public_paths_stay_anonymous(envoys, upstream, setting, path):
    """The corpus must not pass vacuously: plain public paths do reach the upstream."""
    assert send(envoys[setting], upstream, path, {}) is not None


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("path", ["/x", "/HEALTHZ", "/public/../x", "/Public/x"])
def test_non_admin_token_reaches_paths_outside_admin(envoys, upstream, user_token, setting, path):
    """Nor does the non-admin half: a valid token still passes where no reading is /admin."""
    assert send(envoys[setting], upstream, path, bearer(user_token)) is not None


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_the_reproduction_is_refused_without_a_token(envoys, upstream, setting):
    """`/admin/../healthz` with no token reached the upstream before (Envoy's defaults)."""
    resp = envoys[setting].request("/admin/../healthz")
    if setting == "envoy-defaults":
        assert resp.status == 401, resp.describe()
        assert upstream.requests == []
    else:
        # Envoy resolved it before the filter: the upstream gets the health check itself.
        assert resp.status == 200, resp.describe()
        assert [r.raw_path for r in upstream.requests] == ["/healthz"]


def test_a_path_with_too_many_readings_is_a_bad_request(envoys, upstream):
    path = "/A%2561;x/%u0062.\\%2e%2e//C;y/%252F..%5C.;z/D%20./" * 4
    envoy = envoys["envoy-defaults"]
    refused_before = envoy.counter("denied_bad_request")
    resp = envoy.request(path)
    assert resp.status == 400, resp.describe()
    assert resp.body == b'{"message":"Bad Request"}'
    assert resp.header("content-type") == "application/json"
    assert upstream.requests == []
    # This request, and only it, counted (the module's Envoy has answered others before).
    assert envoy.counter("denied_bad_request") == refused_before + 1
