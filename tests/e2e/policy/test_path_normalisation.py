"""Path normalisation (README "Paths"): a rule written for `/admin` cannot be
bypassed by another spelling of the same path, and an `allow` rule for `/public` cannot be
stretched to reach `/admin` — both with the HTTP connection manager settings the README
recommends (`normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action:
REJECT_REQUEST`) and with Envoy's defaults (no normalisation: the filter normalises for
matching itself, and the upstream receives the path as sent).

For each spelling: without a token → 401 (or Envoy's own 400), with a valid token of a user
outside `admins` → 403 (or 400), never 200; with an admin's token the request reaches the
upstream, and the test records which path the upstream received. Letter case: `/ADMIN` is
`/admin` to an upstream that folds case, so it needs an admin as well; `/PUBLIC/x` is not
anonymous (read as sent, it is not under `/public`)."""

from __future__ import annotations

import pytest

from support.assertions import assert_allowed, assert_forbidden, assert_missing
from support.authorizer_config import TEST_CLUSTER, self_minted_only_config
from support.scenarios import bearer, mint_id

RULES = [
    {"match": {"prefix": "/admin"}, "require": {"groups": ["admins"]}},
    {"match": {"prefix": "/public"}, "allow": True},
]
ENVOY_DEFAULTS = {
    "normalize_path": None,
    "merge_slashes": None,
    "path_with_escaped_slashes_action": None,
}
REJECTED = "400"  # Envoy answers the request itself, before the filter

# path → (with the README's HCM settings, with Envoy's defaults): REJECTED, or the request
# target the upstream receives (as sent on the wire) for an admin's token.
CASES = {
    "/admin": ("/admin", "/admin"),
    "//admin": ("/admin", "//admin"),
    "/admin//x": ("/admin/x", "/admin//x"),
    "/./admin": ("/admin", "/./admin"),
    "/public/../admin": ("/admin", "/public/../admin"),
    "/public/%2e%2e/admin": ("/admin", "/public/%2e%2e/admin"),
    "/%61dmin": ("/admin", "/%61dmin"),
    "/public\\..\\admin": ("/admin", "/public\\..\\admin"),
    "/admin%2Fx": (REJECTED, "/admin%2Fx"),
    "/public%2F..%2Fadmin": (REJECTED, "/public%2F..%2Fadmin"),
    "/public/..%2Fadmin": (REJECTED, "/public/..%2Fadmin"),
    "/public/%2e%2e%2fadmin": (REJECTED, "/public/%2e%2e%2fadmin"),
    "/admin?x": ("/admin?x", "/admin?x"),
    "/admin?x=/public": ("/admin?x=/public", "/admin?x=/public"),
    "/admin#x": (REJECTED, REJECTED),  # Envoy refuses a fragment in the request path
}
SETTINGS = ["readme-hcm", "envoy-defaults"]


@pytest.fixture(scope="module")
def envoys(module_envoys, jwks):
    config = self_minted_only_config(rules=RULES)
    return {
        "readme-hcm": module_envoys(config, {TEST_CLUSTER: jwks.port}, name="readme-hcm"),
        "envoy-defaults": module_envoys(
            config, {TEST_CLUSTER: jwks.port}, hcm_overrides=ENVOY_DEFAULTS, name="envoy-defaults"
        ),
    }


@pytest.fixture
def user_token(signing_key) -> str:
    return mint_id(signing_key, username="ursula", groups=["users"])


@pytest.fixture
def admin_token(signing_key) -> str:
    return mint_id(signing_key, username="ada", groups=["admins"])


def expected(path: str, setting: str) -> str:
    return CASES[path][SETTINGS.index(setting)]


def send(envoys, setting, upstream, path, token=None):
    upstream.clear()
    return envoys[setting].request(path, bearer(token) if token else {})


def assert_rejected_by_envoy(resp, upstream):
    assert resp.status == 400, resp.describe()
    assert upstream.requests == []


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("path", list(CASES))
def test_admin_spelling_without_token_is_refused(envoys, upstream, setting, path):
    resp = send(envoys, setting, upstream, path)

    if expected(path, setting) == REJECTED:
        assert_rejected_by_envoy(resp, upstream)
    else:
        assert_missing(resp, upstream)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("path", list(CASES))
def test_admin_spelling_with_non_admin_token_is_forbidden(
    envoys, upstream, user_token, setting, path
):
    resp = send(envoys, setting, upstream, path, user_token)

    if expected(path, setting) == REJECTED:
        assert_rejected_by_envoy(resp, upstream)
    else:
        assert_forbidden(resp, upstream)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("path", list(CASES))
def test_admin_spelling_with_admin_token_reaches_upstream_at_recorded_path(
    envoys, upstream, admin_token, setting, path
):
    resp = send(envoys, setting, upstream, path, admin_token)

    if expected(path, setting) == REJECTED:
        assert_rejected_by_envoy(resp, upstream)
    else:
        seen = assert_allowed(resp, upstream)
        assert seen.raw_path == expected(path, setting)


# --- genuine public paths stay anonymous -------------------------------------------------


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize(
    "path,upstream_path",
    [("/public", "/public"), ("/public/x", "/public/x"), ("/public/a/../b", None)],
)
def test_genuine_public_path_is_anonymous(envoys, upstream, setting, path, upstream_path):
    resp = send(envoys, setting, upstream, path)

    seen = assert_allowed(resp, upstream)
    # with normalisation the upstream sees /public/b; without, the path as sent
    wanted = upstream_path or ("/public/b" if setting == "readme-hcm" else path)
    assert seen.raw_path == wanted


@pytest.mark.parametrize("setting", SETTINGS)
def test_encoded_slash_under_public_is_never_anonymous(envoys, upstream, setting):
    """`/public%2Fx` is ambiguous (servers disagree on `%2F`): Envoy rejects it with the
    README settings; without them the filter refuses it anonymous access."""
    resp = send(envoys, setting, upstream, "/public%2Fx")

    if setting == "readme-hcm":
        assert_rejected_by_envoy(resp, upstream)
    else:
        assert_missing(resp, upstream)


# --- case: some upstreams fold it ---------------------------------------------------------


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("path", ["/ADMIN", "/Admin/x"])
def test_upper_case_admin_needs_an_admin_because_some_upstreams_fold_case(
    envoys, upstream, user_token, admin_token, setting, path
):
    # /ADMIN is /admin to a case-insensitive upstream (IIS, ASP.NET): the /admin rule
    # applies as well as the default one, so a non-admin is refused...
    assert_missing(send(envoys, setting, upstream, path), upstream)
    assert_forbidden(send(envoys, setting, upstream, path, user_token), upstream)
    # ...and an admin reaches the upstream, which receives the path unchanged.
    seen = assert_allowed(send(envoys, setting, upstream, path, admin_token), upstream)
    assert seen.raw_path == path


@pytest.mark.parametrize("setting", SETTINGS)
def test_upper_case_public_path_is_not_anonymous(envoys, upstream, user_token, setting):
    # Its literal reading is not under /public: a token is needed, any valid one.
    assert_missing(send(envoys, setting, upstream, "/PUBLIC/x"), upstream)
    assert_allowed(send(envoys, setting, upstream, "/PUBLIC/x", user_token), upstream)
