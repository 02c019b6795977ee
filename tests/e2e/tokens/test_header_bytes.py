"""Header values are bytes: HTTP/1.1 allows obs-text (0x80-0xFF), which is not UTF-8.

Regression for a VM-killing request found by reading the glue (fuzzing issue): the SDK's
string getter panicked on such bytes, the VM trapped, and with FAIL_CLOSED that worker
answered 503 to everything afterwards."""

from support import tokens as tk
from support.assertions import assert_invalid, assert_missing


def test_non_utf8_authorization_is_invalid_and_the_filter_stays_up(authorizer, upstream, alice):
    # Several requests so that every worker (concurrency 2) sees at least one.
    for _ in range(8):
        resp = authorizer.request("/x", headers=[("authorization", b"Bearer \xff\xfe.\x80.\xc3")])
        assert_invalid(resp, upstream)
    for _ in range(8):
        upstream.clear()
        assert_missing(authorizer.request("/x"), upstream)
        resp = authorizer.request("/x", headers={"authorization": f"Bearer {alice.id_token}"})
        assert resp.status == 200, resp.describe()


def test_non_utf8_bytes_in_other_headers_do_not_matter(authorizer, upstream, alice):
    _, claims, _ = tk.split(alice.id_token)
    for _ in range(8):
        resp = authorizer.request(
            "/x",
            headers=[
                ("authorization", f"Bearer {alice.id_token}"),
                ("x-cognito-sub", b"\xff\xfe"),
                ("origin", b"https://\xe9.example"),
            ],
        )
        assert resp.status == 200, resp.describe()
        received = upstream.requests[-1]
        # The client's non-UTF-8 copy is gone and the verified sub is what the upstream sees
        # (a missing header would fail here too).
        assert received.header_values("x-cognito-sub") == [claims["sub"]]
