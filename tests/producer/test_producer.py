"""The revocation document producer (tools/revocations) against moto: a real user pool
(sign-in, refresh, AdminUserGlobalSignOut), S3 as the store, the Lambda handler fed the
EventBridge event CloudTrail would deliver, and the command line as a user runs it.

moto has no CloudTrail event history (no LookupEvents) and no RevokeToken, so the records are
written here in CloudTrail's shape, with the real pool id, username and time of the call
that moto performed; the assertions are on the JSON document the filter will fetch."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import jwt
import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
PRODUCER = REPO / "tools" / "revocations" / "cognito_revocations.py"
sys.path.insert(0, str(TESTS_DIR))
sys.path.insert(0, str(PRODUCER.parent))

import cognito_revocations as producer  # noqa: E402
from support.moto_pool import DUMMY_CREDENTIALS, REGION, MotoServer, create_pool  # noqa: E402

PASSWORD = "Sup3r-Secret-Passw0rd!"
BUCKET = "revocations"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, moto):
    """boto3 in the producer (Lambda handler, CLI) talks to moto only."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)


@pytest.fixture(scope="module")
def pool(moto):
    return create_pool(moto.endpoint, {"alice": (PASSWORD, []), "bob": (PASSWORD, [])})


@pytest.fixture(scope="module")
def s3(moto):
    import boto3

    client = boto3.client("s3", endpoint_url=moto.endpoint, region_name=REGION, **DUMMY_CREDENTIALS)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def s3_key():
    return f"{uuid.uuid4()}/revocations.json"


def cognito(moto):
    import boto3

    return boto3.client(
        "cognito-idp", endpoint_url=moto.endpoint, region_name=REGION, **DUMMY_CREDENTIALS
    )


def sign_in(moto, pool, username: str) -> dict:
    return cognito(moto).initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": PASSWORD},
    )["AuthenticationResult"]


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def cloudtrail_record(name: str, when: int, request: dict, extra: dict | None = None, **more) -> dict:
    """A CloudTrail record of a Cognito user pool call, as delivered in EventBridge's
    `detail` and in trail log files (secrets hidden the way Cognito hides them)."""
    record = {
        "eventVersion": "1.08",
        "userIdentity": {"type": "Unknown", "principalId": "Anonymous"},
        "eventTime": iso(when),
        "eventSource": "cognito-idp.amazonaws.com",
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": "192.0.2.1",
        "userAgent": "aws-sdk",
        "requestParameters": request,
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": "123456789012",
        "eventCategory": "Management",
    }
    if extra is not None:
        record["additionalEventData"] = extra
    record.update(more)
    return record


def eventbridge(record: dict) -> dict:
    """The EventBridge event a rule on "AWS API Call via CloudTrail" hands to Lambda."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.cognito-idp",
        "account": "123456789012",
        "time": record["eventTime"],
        "region": REGION,
        "resources": [],
        "detail": record,
    }


def read_s3(s3, key) -> dict | None:
    try:
        return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PRODUCER), *args], capture_output=True, text=True, check=check, timeout=60
    )


# --- AdminUserGlobalSignOut through EventBridge and the Lambda handler --------------------------


def test_admin_global_sign_out_event_revokes_the_users_earlier_tokens(moto, pool, s3, s3_key, monkeypatch):
    before = sign_in(moto, pool, "alice")
    old = claims(before["AccessToken"])
    old_id = claims(before["IdToken"])
    time.sleep(1.1)  # the sign-out happens in a later second than the sign-in
    cognito(moto).admin_user_global_sign_out(UserPoolId=pool.pool_id, Username="alice")
    signed_out_at = int(time.time())
    with pytest.raises(Exception, match="NotAuthorized"):
        cognito(moto).initiate_auth(
            ClientId=pool.client_id,
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": before["RefreshToken"]},
        )

    monkeypatch.setenv("REVOCATIONS_TARGET", f"s3://{BUCKET}/{s3_key}")
    record = cloudtrail_record(
        "AdminUserGlobalSignOut", signed_out_at, {"userPoolId": pool.pool_id, "username": "alice"}
    )
    result = producer.handler(eventbridge(record))
    assert result == {"signed_out": 1, "skipped": [], "entries": 1}

    doc = read_s3(s3, s3_key)
    assert set(doc) == {"version", "generated_at", "max_token_lifetime_seconds", "revoked_jti", "signed_out"}
    assert doc["version"] == 1
    assert doc["max_token_lifetime_seconds"] == 86400
    assert abs(doc["generated_at"] - time.time()) < 60
    assert doc["revoked_jti"] == {}
    # Keyed by the sub the tokens carry (AdminGetUser resolved the username).
    assert doc["signed_out"] == {old["sub"]: signed_out_at}
    assert old["sub"] == old_id["sub"]
    # The filter's rule: auth_time (else iat) before the instant → revoked.
    assert old["auth_time"] < doc["signed_out"][old["sub"]]
    assert old_id["auth_time"] < doc["signed_out"][old["sub"]]

    # A fresh sign-in is not before the instant; bob was never signed out.
    after = claims(sign_in(moto, pool, "alice")["AccessToken"])
    assert after["auth_time"] >= doc["signed_out"][after["sub"]]
    bob = claims(sign_in(moto, pool, "bob")["AccessToken"])
    assert bob["sub"] not in doc["signed_out"]


def test_cloudtrail_record_of_a_failed_or_other_call_changes_nothing(moto, pool, s3, s3_key, monkeypatch):
    monkeypatch.setenv("REVOCATIONS_TARGET", f"s3://{BUCKET}/{s3_key}")
    now = int(time.time())
    failed = cloudtrail_record(
        "AdminUserGlobalSignOut",
        now,
        {"userPoolId": pool.pool_id, "username": "alice"},
        errorCode="UserNotFoundException",
    )
    other = cloudtrail_record("InitiateAuth", now, {"clientId": pool.client_id})
    assert producer.handler(eventbridge(failed)) == {"signed_out": 0, "skipped": [], "entries": None}
    assert producer.handler(eventbridge(other))["signed_out"] == 0
    assert read_s3(s3, s3_key) is None


def test_global_sign_out_names_the_user_only_through_a_sub_in_the_record(moto, pool, s3, s3_key, monkeypatch):
    """GlobalSignOut is authorised by the user's access token, which CloudTrail hides: without
    a sub in the record the producer reports the event instead of guessing."""
    monkeypatch.setenv("REVOCATIONS_TARGET", f"s3://{BUCKET}/{s3_key}")
    now = int(time.time())
    hidden = {"accessToken": "HIDDEN_DUE_TO_SECURITY_REASONS"}
    anonymous = cloudtrail_record("GlobalSignOut", now, hidden)
    result = producer.handler(eventbridge(anonymous))
    assert result["signed_out"] == 0
    assert result["skipped"] == [
        {"event_id": anonymous["eventID"], "event_name": "GlobalSignOut",
         "why": "the record does not identify the user"}
    ]
    assert read_s3(s3, s3_key) is None

    sub = claims(sign_in(moto, pool, "bob")["AccessToken"])["sub"]
    with_sub = cloudtrail_record("GlobalSignOut", now, hidden, {"sub": sub})
    assert producer.handler(eventbridge(with_sub))["signed_out"] == 1
    assert read_s3(s3, s3_key)["signed_out"] == {sub: now}


def test_revoke_token_record_cannot_name_the_session_and_is_reported(s3, s3_key, monkeypatch):
    monkeypatch.setenv("REVOCATIONS_TARGET", f"s3://{BUCKET}/{s3_key}")
    record = cloudtrail_record(
        "RevokeToken", int(time.time()),
        {"token": "HIDDEN_DUE_TO_SECURITY_REASONS", "clientId": "abc"},
    )
    result = producer.handler(eventbridge(record))
    assert result["signed_out"] == 0
    assert result["skipped"][0]["why"] == "CloudTrail does not record the revoked token's origin_jti"
    assert read_s3(s3, s3_key) is None


def test_sign_out_of_a_deleted_user_is_reported(moto, pool, s3, s3_key, monkeypatch):
    monkeypatch.setenv("REVOCATIONS_TARGET", f"s3://{BUCKET}/{s3_key}")
    record = cloudtrail_record(
        "AdminUserGlobalSignOut", int(time.time()), {"userPoolId": pool.pool_id, "username": "nobody"}
    )
    result = producer.handler(eventbridge(record))
    assert result["skipped"][0]["why"] == "the user no longer exists"
    assert read_s3(s3, s3_key) is None


def test_events_of_other_pools_are_ignored_when_pools_are_listed(moto, pool, s3, s3_key, monkeypatch):
    monkeypatch.setenv("REVOCATIONS_TARGET", f"s3://{BUCKET}/{s3_key}")
    monkeypatch.setenv("USER_POOL_IDS", "us-east-1_someotherpool")
    record = cloudtrail_record(
        "AdminUserGlobalSignOut", int(time.time()), {"userPoolId": pool.pool_id, "username": "alice"}
    )
    assert producer.handler(eventbridge(record))["signed_out"] == 0
    assert read_s3(s3, s3_key) is None


def test_concurrent_lambda_invocations_lose_no_sign_out(s3, s3_key, monkeypatch):
    """Conditional PutObject: every writer's entries survive the others'."""
    monkeypatch.setenv("REVOCATIONS_TARGET", f"s3://{BUCKET}/{s3_key}")
    now = int(time.time())
    subs = [str(uuid.uuid4()) for _ in range(24)]
    errors: list[BaseException] = []

    def invoke(chunk: list[str]) -> None:
        try:
            for sub in chunk:
                record = cloudtrail_record("GlobalSignOut", now, {}, {"sub": sub})
                producer.handler(eventbridge(record))
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=invoke, args=(subs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert read_s3(s3, s3_key)["signed_out"] == {sub: now for sub in subs}


# --- the application's own sign-out hook (command line) ----------------------------------------


def test_app_revokes_a_session_by_the_origin_jti_its_tokens_carry(moto, pool, tmp_path):
    """RevokeToken leaves no origin_jti in CloudTrail, but the app that calls it holds the
    session's access token, whose origin_jti names every token of that session."""
    first = sign_in(moto, pool, "bob")
    refreshed = cognito(moto).initiate_auth(
        ClientId=pool.client_id,
        AuthFlow="REFRESH_TOKEN_AUTH",
        AuthParameters={"REFRESH_TOKEN": first["RefreshToken"]},
    )["AuthenticationResult"]
    origin = claims(first["AccessToken"])["origin_jti"]
    assert claims(refreshed["AccessToken"])["origin_jti"] == origin
    assert claims(refreshed["IdToken"])["origin_jti"] == origin
    other_session = claims(sign_in(moto, pool, "bob")["AccessToken"])["origin_jti"]

    target = tmp_path / "revocations.json"
    now = 1_767_225_600
    out = run_cli("--target", str(target), "--now", str(now), "--max-token-lifetime", "3600",
                  "revoke", origin)
    assert json.loads(out.stdout) == {"target": str(target), "entries": 1}
    doc = json.loads(target.read_bytes())
    assert doc == {
        "version": 1,
        "generated_at": now,
        "max_token_lifetime_seconds": 3600,
        # until: the last token of the session was issued before now, so it expires by now + lifetime
        "revoked_jti": {origin: now + 3600},
        "signed_out": {},
    }
    assert other_session not in doc["revoked_jti"]


def test_app_signs_a_user_out_by_username_or_sub(moto, pool, tmp_path):
    target = tmp_path / "doc.json"
    sub = claims(sign_in(moto, pool, "alice")["AccessToken"])["sub"]
    run_cli("--target", str(target), "--endpoint-url", moto.endpoint, "--now", "2000000000",
            "sign-out", "--user-pool-id", pool.pool_id, "--username", "alice", "--at", "1999999990")
    assert json.loads(target.read_bytes())["signed_out"] == {sub: 1999999990}
    # An earlier instant never shortens a sign-out already listed.
    run_cli("--target", str(target), "--now", "2000000000", "sign-out", "--sub", sub, "--at", "1999990000")
    assert json.loads(target.read_bytes())["signed_out"] == {sub: 1999999990}
    missing = run_cli("--target", str(target), "--endpoint-url", moto.endpoint,
                      "sign-out", "--user-pool-id", pool.pool_id, "--username", "nobody", check=False)
    assert missing.returncode == 1 and "no user" in missing.stderr


def test_cloudtrail_log_files_apply_to_an_s3_document(moto, pool, s3, s3_key, tmp_path):
    """A trail's log files (gzipped {"Records": [...]}), e.g. for a backfill."""
    sub = claims(sign_in(moto, pool, "alice")["AccessToken"])["sub"]
    when = int(time.time())
    log_file = tmp_path / "123456789012_CloudTrail_us-east-1_20260101T0000Z_abc.json.gz"
    log_file.write_bytes(gzip.compress(json.dumps({"Records": [
        cloudtrail_record("AdminUserGlobalSignOut", when - 5, {"userPoolId": pool.pool_id, "username": "alice"}),
        cloudtrail_record("AdminUserGlobalSignOut", when, {"userPoolId": pool.pool_id, "username": "alice"}),
        cloudtrail_record("RevokeToken", when, {"token": "HIDDEN_DUE_TO_SECURITY_REASONS"}),
    ]}).encode()))
    out = run_cli("--target", f"s3://{BUCKET}/{s3_key}", "--endpoint-url", moto.endpoint,
                  "apply", str(log_file))
    result = json.loads(out.stdout)
    assert result["signed_out"] == 2 and result["entries"] == 1
    assert [s["event_name"] for s in result["skipped"]] == ["RevokeToken"]
    assert read_s3(s3, s3_key)["signed_out"] == {sub: when}


# --- the document: expiry, bounds, and never clobbering what it cannot read --------------------


def test_entries_that_can_revoke_nothing_any_more_are_pruned(tmp_path):
    target = tmp_path / "doc.json"
    base = 1_800_000_000
    lifetime = 3600
    common = ("--target", str(target), "--max-token-lifetime", str(lifetime))
    run_cli(*common, "--now", str(base), "revoke", "gone-soon", "--until", str(base + 10))
    run_cli(*common, "--now", str(base), "sign-out", "--sub", "user-1", "--at", str(base))
    run_cli(*common, "--now", str(base), "revoke", "long", "--until", str(base + 100_000))
    grace = producer.PRUNE_GRACE_SECONDS
    # Kept through the grace (the filter's largest clock skew) ...
    run_cli(*common, "--now", str(base + 10 + grace), "prune")
    assert set(json.loads(target.read_bytes())["revoked_jti"]) == {"gone-soon", "long"}
    # ... then dropped; the sign-out lasts one token lifetime more.
    run_cli(*common, "--now", str(base + 11 + grace), "prune")
    doc = json.loads(target.read_bytes())
    assert set(doc["revoked_jti"]) == {"long"} and set(doc["signed_out"]) == {"user-1"}
    run_cli(*common, "--now", str(base + lifetime + grace + 1), "prune")
    assert json.loads(target.read_bytes())["signed_out"] == {}


def test_an_update_beyond_the_bounds_fails_and_leaves_the_document_as_it_was(tmp_path):
    target = tmp_path / "doc.json"
    now = 1_800_000_000
    for i in range(3):
        run_cli("--target", str(target), "--now", str(now), "--max-entries", "3", "revoke", f"id-{i}")
    before = target.read_bytes()
    full = run_cli("--target", str(target), "--now", str(now), "--max-entries", "3", "revoke", "id-3",
                   check=False)
    assert full.returncode != 0 and "DocumentTooLarge" in full.stderr
    assert target.read_bytes() == before
    too_big = run_cli("--target", str(target), "--now", str(now), "--max-bytes", "100", "revoke", "id-4",
                      check=False)
    assert too_big.returncode != 0 and "bytes is more than 100" in too_big.stderr
    assert target.read_bytes() == before


@pytest.mark.parametrize(
    "stored",
    [
        b"not json",
        b'{"version":2,"generated_at":1,"max_token_lifetime_seconds":1}',
        b'{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"revoked_jti":{"a":1.5}}',
        b'{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"signed_out":{"a":1,"a":2}}',
        b'{"version":1,"generated_at":1,"max_token_lifetime_seconds":1,"extra":1}',
    ],
    ids=["not-json", "version-2", "float-value", "duplicate-key", "unknown-key"],
)
def test_a_stored_document_it_cannot_read_is_never_overwritten(tmp_path, stored):
    target = tmp_path / "doc.json"
    target.write_bytes(stored)
    out = run_cli("--target", str(target), "revoke", "x", check=False)
    assert out.returncode != 0 and "DocumentError" in out.stderr
    assert target.read_bytes() == stored


def test_written_document_is_compact_and_round_trips(tmp_path):
    doc = producer.RevocationDocument(max_token_lifetime_seconds=600)
    doc.revoke("b", 5)
    doc.revoke("a", 7)
    doc.sign_out("s", 3)
    body = doc.to_json(now=9)
    assert body == (
        b'{"version":1,"generated_at":9,"max_token_lifetime_seconds":600,'
        b'"revoked_jti":{"a":7,"b":5},"signed_out":{"s":3}}'
    )
    assert producer.RevocationDocument.from_json(body) == doc
