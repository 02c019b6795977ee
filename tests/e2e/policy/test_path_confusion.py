"""Path confusion (README "Paths"): whatever way the upstream reads the path it receives, a
request the filter let through must satisfy the rule that reading selects.

The corpus holds the classic tricks (dot segments, `..;` and `;jsessionid`, encoded and
double-encoded slashes and dots, backslashes, IIS `%u`, trailing dots and spaces, letter case,
repeated slashes), their mixtures, steps chained in another order (dots resolved before a
decode and again after it), a trailing slash and a suffix (`.json`) on exact and template
routes, decoded `?`, `#` and NUL, and the non-ASCII letters that Java and .NET fold into ASCII
ones (`ı`, `İ`, `ſ`, the Kelvin sign). Each is sent without a token and with a valid token of a
user outside `admins`, through three Envoy settings:

- Envoy's defaults (no path normalisation: the upstream receives the path as sent);
- `normalize_path` + `merge_slashes` + `path_with_escaped_slashes_action: UNESCAPE_AND_REDIRECT`;
- Istio's defaults (`normalize_path` only; encoded slashes kept).

When a request passes, the test takes the raw path the upstream received and reads it the way
several real servers do (models below, written independently of the filter's own code); the
rule each reading selects (first match of `exact`, `prefix` and `path_template`, as the filter
documents them) must be one the request satisfies: an `allow` rule without a token, anything
but an admins-only rule for the non-admin.

Decoding is bounded: a path that still decodes to something new after four rounds is refused
(400) rather than decoded on and on; a path that decodes in four is read."""

from __future__ import annotations

import re
import statistics
import string
import threading
import time
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from support.authorizer_config import TEST_CLUSTER, self_minted_only_config
from support.scenarios import bearer, mint_id

ADMINS = {"groups": ["admins"]}
RULES = [
    {"match": {"exact": "/healthz"}, "allow": True},
    {"match": {"exact": "/admin-exact"}, "require": ADMINS},
    {"match": {"path_template": "/users/{id}"}, "require": ADMINS},
    {"match": {"prefix": "/keys"}, "require": ADMINS},
    {"match": {"prefix": "/public"}, "allow": True},
    {"match": {"prefix": "/admin"}, "require": ADMINS},
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

# Paths no server reads outside the anonymous routes.
GENUINE_PUBLIC = [
    "/healthz",
    "/public",
    "/public/",
    "/public/x",
    "/public/app.js",
    "/public/a/../b",
]

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
    # steps chained: dots resolved on the raw path (`%2F` kept), then decoded and resolved
    "/public/..%2Fadmin/..%2F..%2Fpublic%2Fz/..",
    "/public/%2e%2e%2fadmin/%2e%2e%2f%2e%2e%2fpublic%2fz/..",
    "/healthz/..%2Fkeys/..%2F..%2Fhealthz/..",
    "/public/..%2Fusers%2F42/..%2F..%2Fpublic/..",
    # ... or decoded, then read by a servlet that decodes again and cuts parameters
    "/x/..%3B/%2561dmin",
    "/public/x/..%253B/..%252Fadmin",
    # a trailing slash (Express, Spring) and a suffix (Spring) on exact and template routes
    "/admin-exact/",
    "/users/42/",
    "/admin-exact.json",
    "/users/42.json",
    "/users/42.json/",
    # a decoded ?, # or NUL ends the path
    "/admin%3Fx",
    "/admin%23x",
    "/admin%00",
    "/admin-exact%3F",
    "/users/42%3Fx=1",
    "/admin-exact%00.json",
    # non-ASCII letters folded into ASCII ones (Java, .NET): ı and İ → i, ſ → s, Kelvin K → k
    "/adm%C4%B1n",
    "/ADM%C4%B0N",
    "/%E2%84%AAeys",
    "/key%C5%BF/x",
    "/public/..%2Fadm%C4%B1n",
    # genuine public and health paths stay reachable
    *GENUINE_PUBLIC,
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


def _decoder(path: str) -> str:
    """Decode once, then resolve (Go, Node)."""
    return _resolve(unquote(path), merge=True)


def _servlet(path: str) -> str:
    """Decode, cut `;` parameters from every segment, resolve (Tomcat, Jetty)."""
    cut = "/".join(seg.split(";", 1)[0] for seg in unquote(path).split("/"))
    return _resolve(cut, merge=True)


def _drop_trailing_slash(path: str) -> str:
    return path[:-1] if path.endswith("/") and path != "/" else path


def _drop_suffix(path: str) -> str:
    """The last segment cut at its first `.`, unless the segment starts with it."""
    head, _, last = path.rpartition("/")
    dot = last.find(".")
    return f"{head}/{last[:dot]}" if dot > 0 else path


# Java's and .NET's case-insensitive comparison: the simple case mapping of these four letters
# is an ASCII one; every other letter is compared as it is here (ASCII only).
_FOLDS = str.maketrans(
    {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}
    | {chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)}
)


def upstream_readings(raw: str) -> dict[str, str]:
    """The path each kind of server routes on, for a request target it received."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    once = unquote(path)
    twice = unquote(once)
    iis = _percent_u(path)
    iis = unquote(iis).replace("\\", "/")
    iis = "/".join(
        s if set(s) <= {"."} else s.rstrip(" .").lower() for s in iis.split("/")
    )
    return {
        "literal (routes on the raw target)": path,
        "rfc3986 (resolves dot segments, no decoding)": _resolve(path, merge=False),
        "decoder (Go, Node: decode once, resolve)": _decoder(path),
        "decode without resolving (Express)": once,
        "double decoder": _resolve(twice, merge=True),
        "servlet (decode, cut ;params, resolve)": _servlet(path),
        "IIS (%u, decode, \\ as /, fold case, trim dots and spaces)": _resolve(iis, merge=True),
        "backslash as slash": _resolve(once.replace("\\", "/"), merge=True),
        "normalising hop keeping %2F, then a decoder": _decoder(_resolve(path, merge=False)),
        "decoding proxy, then a servlet": _servlet(_decoder(path)),
        "Express non-strict routing (one trailing slash dropped)": _drop_trailing_slash(path),
        "Spring suffix match (servlet reading, last extension dropped)": _drop_suffix(
            _servlet(path)
        ),
        "decoder cutting at a decoded ?, # or NUL": _resolve(
            re.split("[?#\0]", once, maxsplit=1)[0], merge=True
        ),
        "Java/.NET case-insensitive routing (decode, fold ı İ ſ K and ASCII)": _resolve(
            once.translate(_FOLDS), merge=True
        ),
    }


def _template_matches(template: str, path: str) -> bool:
    """`{name}` is one non-empty segment, `**` the rest (zero or more segments)."""
    want, got = template.split("/")[1:], path.split("/")[1:]
    for i, part in enumerate(want):
        if part == "**":
            return True
        if i >= len(got) or not (got[i] == part or (part.startswith("{") and got[i])):
            return False
    return len(got) == len(want)


def _rule_matches(match: dict, path: str) -> bool:
    if "exact" in match:
        return path == match["exact"]
    if "prefix" in match:
        return path == match["prefix"] or path.startswith(match["prefix"] + "/")
    return _template_matches(match["path_template"], path)


def selected_rule(path: str) -> dict | None:
    """The first rule whose path matches `path` (None: the default, any valid token)."""
    return next((rule for rule in RULES if _rule_matches(rule["match"], path)), None)


def admins_only(rule: dict | None) -> bool:
    return rule is not None and rule.get("require") == ADMINS


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
        assert not admins_only(selected_rule(reading)), (
            f"{path!r} passed for a non-admin as {raw!r}, which {server} reads as {reading!r}"
        )


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("path", [*GENUINE_PUBLIC, "/healthz?x=/admin"])
def test_genuine_public_paths_stay_anonymous(envoys, upstream, setting, path):
    """The corpus must not pass vacuously: plain public paths do reach the upstream."""
    assert send(envoys[setting], upstream, path, {}) is not None


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize(
    "path", ["/x", "/HEALTHZ", "/public/../x", "/Public/x", "/users/42/files", "/keysmith"]
)
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


@pytest.mark.parametrize(
    "path, status",
    [
        # Four rounds (one `%25` level each) are read: the non-admin meets /admin.
        ("/%25252561dmin", 403),
        # Five, and the IIS `%u0025` chain: refused, not decoded on.
        ("/%2525252561dmin", 400),
        ("/%u0025u0025u0025u002561dmin", 400),
    ],
)
def test_a_path_that_still_decodes_after_four_rounds_is_a_bad_request(
    envoys, upstream, user_token, path, status
):
    envoy = envoys["envoy-defaults"]
    refused_before = envoy.counter("denied_bad_request")
    resp = envoy.request(path, bearer(user_token))
    assert resp.status == status, resp.describe()
    assert upstream.requests == []
    if status == 400:
        assert resp.body == b'{"message":"Bad Request"}'
    assert envoy.counter("denied_bad_request") == refused_before + (status == 400)


# --- a worst-case path costs one request, not a worker ---------------------------------------

WORST_PATHS = Path(__file__).parents[2] / "worst_paths.txt"


def worst_paths(size: int) -> list[tuple[str, str]]:
    """The shapes `src/path.rs` holds to its work bound (`tests/worst_paths.txt`), at about
    `size` bytes as sent: spaces and non-ASCII letters percent-encoded first, as a request
    target needs them."""
    shapes = []
    for line in WORST_PATHS.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, *parts = line.split("\t")
            prefix, unit, suffix = (quote(part, safe=string.punctuation) for part in parts)
            shapes.append((name, prefix + unit * (size // len(unit)) + suffix))
    return shapes


def timed(envoy, path, headers) -> tuple[int, float]:
    started = time.monotonic()
    # A hang guard only (the review's path held a worker for seconds): never a timing claim.
    resp = envoy.request(path, headers, timeout=120)
    return resp.status, time.monotonic() - started


def test_worst_paths_are_refused_while_other_requests_are_answered(envoys, upstream, user_token):
    """The review's request (`/%25` and 30,000 more `25`s, about 60 KB) and the other worst
    shapes at 60 KB are refused (400) from their length alone; while two clients (one per
    Envoy worker) send them over and over, a third still gets `/healthz` answered. Timings
    are printed for the README ("Paths"), never asserted."""
    envoy = envoys["envoy-defaults"]
    attacks = worst_paths(59_000)
    results: list[tuple[str, int, float]] = []

    def attacker():
        for _ in range(3):
            for name, path in attacks:
                results.append((name, *timed(envoy, path, bearer(user_token))))

    threads = [threading.Thread(target=attacker) for _ in range(2)]
    for thread in threads:
        thread.start()
    health: list[tuple[int, float]] = []
    while any(thread.is_alive() for thread in threads) or len(health) < 20:
        health.append(timed(envoy, "/healthz", {}))
    for thread in threads:
        thread.join()

    print(
        f"\n60 KB worst paths: {len(results)} sent, slowest {max(t for *_, t in results) * 1e3:.1f} ms;"
        f" /healthz meanwhile: {len(health)} answered, median"
        f" {statistics.median(t for _, t in health) * 1e3:.1f} ms, slowest"
        f" {max(t for _, t in health) * 1e3:.1f} ms"
    )
    assert {(name, status) for name, status, _ in results} == {(n, 400) for n, _ in attacks}
    assert {status for status, _ in health} == {200}
    assert {seen.path for seen in upstream.requests} == {"/healthz"}


@pytest.mark.parametrize("size", [16_000, 32_000])
def test_worst_paths_within_the_byte_bound_are_read_in_bounded_time(
    envoys, upstream, user_token, size
):
    """Within the 32 KiB bound a path is read: every reading, or refused with 400 once the
    readings run past their limits. Each answer is one the rules give (never a 5xx); the time
    per shape, next to a plain request's, is printed for the README ("Paths")."""
    envoy = envoys["envoy-defaults"]
    plain = statistics.median(timed(envoy, "/healthz", {})[1] for _ in range(20))
    lines = []
    for name, path in worst_paths(size):
        runs = [timed(envoy, path, bearer(user_token)) for _ in range(5)]
        statuses = {status for status, _ in runs}
        assert len(statuses) == 1 and statuses <= {200, 400, 403}, (name, statuses)
        lines.append(
            f"{name}: {len(path)} bytes → {runs[0][0]},"
            f" median {statistics.median(t for _, t in runs) * 1e3:.2f} ms"
        )
    print(f"\nplain /healthz median {plain * 1e3:.2f} ms\n" + "\n".join(lines))
