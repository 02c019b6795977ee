#!/usr/bin/env python3
"""Writes the revocation document that cognito-authorizer reads (README, "Revocation").

Three ways in, one document out (a local file or an S3 object):

- as an AWS Lambda function (``handler``) behind an EventBridge rule that matches Cognito's
  ``AdminUserGlobalSignOut``, ``GlobalSignOut`` and ``RevokeToken`` calls as CloudTrail
  records them ("AWS API Call via CloudTrail");
- ``apply``: the same records from CloudTrail log files (``{"Records": [...]}``, plain or
  gzipped) or saved EventBridge events;
- ``revoke`` / ``sign-out``: called by your application's own sign-out code, which knows
  what CloudTrail does not record (the ``origin_jti`` of a revoked session, the ``sub`` of a
  user who signed out with ``GlobalSignOut``).

Every change is read-merge-write: entries are merged (the most revoking value wins),
entries that can no longer revoke anything are pruned, the size is bounded (an update that
would exceed it fails loudly rather than drop a revocation), and an S3 object is replaced
only if nobody else replaced it meanwhile (conditional ``PutObject``, retried).

Needs only boto3 (and the standard library).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import gzip
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

DOCUMENT_VERSION = 1
# Cognito id and access tokens live at most one day: a sign-out older than that (plus the
# grace below) can no longer revoke any token.
DEFAULT_MAX_TOKEN_LIFETIME_SECONDS = 86_400
# Entries are kept this long past their expiry: the largest clock skew the filter accepts
# (`clock_skew_seconds` ≤ 3600), during which it still accepts a just-expired token.
PRUNE_GRACE_SECONDS = 3_600
# The filter's default `max_bytes` is 8 MiB; stay under it with the default bound.
DEFAULT_MAX_ENTRIES = 150_000
DEFAULT_MAX_BYTES = 8 << 20
MAX_ID_BYTES = 512
MAX_TOKEN_LIFETIME_SECONDS = 366 * 86_400

COGNITO_EVENT_SOURCE = "cognito-idp.amazonaws.com"
SIGN_OUT_EVENTS = ("AdminUserGlobalSignOut", "GlobalSignOut")
REVOKE_TOKEN_EVENT = "RevokeToken"

log = logging.getLogger("cognito_revocations")


class DocumentError(Exception):
    """The stored document is not a valid version-1 revocation document."""


class DocumentTooLarge(Exception):
    """The update would make the document exceed its bounds; nothing was written."""


# --- the document ---------------------------------------------------------------------------


@dataclass
class RevocationDocument:
    """The JSON document, as Python values. ``revoked_jti``: jti or origin_jti → until (epoch
    seconds); ``signed_out``: sub → sign-out instant (tokens authenticated before it are
    revoked)."""

    max_token_lifetime_seconds: int = DEFAULT_MAX_TOKEN_LIFETIME_SECONDS
    revoked_jti: dict[str, int] = field(default_factory=dict)
    signed_out: dict[str, int] = field(default_factory=dict)
    generated_at: int = 0

    @classmethod
    def from_json(cls, data: bytes) -> RevocationDocument:
        try:
            raw = json.loads(data, object_pairs_hook=_no_duplicate_keys)
        except (ValueError, UnicodeDecodeError) as e:
            raise DocumentError(f"not JSON: {e}") from e
        if not isinstance(raw, dict):
            raise DocumentError("not a JSON object")
        if raw.get("version") != DOCUMENT_VERSION:
            raise DocumentError(f"version {raw.get('version')!r} is not {DOCUMENT_VERSION}")
        unknown = set(raw) - {
            "version",
            "generated_at",
            "max_token_lifetime_seconds",
            "revoked_jti",
            "signed_out",
        }
        if unknown:
            raise DocumentError(f"unknown keys {sorted(unknown)}")
        lifetime = raw.get("max_token_lifetime_seconds")
        if not _is_epoch(lifetime) or not 1 <= lifetime <= MAX_TOKEN_LIFETIME_SECONDS:
            raise DocumentError("max_token_lifetime_seconds is missing or out of range")
        if not _is_epoch(raw.get("generated_at")):
            raise DocumentError("generated_at is missing or not a non-negative integer")
        return cls(
            max_token_lifetime_seconds=lifetime,
            revoked_jti=_entries(raw.get("revoked_jti", {}), "revoked_jti"),
            signed_out=_entries(raw.get("signed_out", {}), "signed_out"),
            generated_at=raw["generated_at"],
        )

    def revoke(self, identifier: str, until: int) -> None:
        """Revokes every token whose ``jti`` or ``origin_jti`` is ``identifier`` until ``until``."""
        _check_id(identifier)
        self.revoked_jti[identifier] = max(until, self.revoked_jti.get(identifier, 0))

    def sign_out(self, sub: str, instant: int) -> None:
        """Revokes the user's tokens authenticated before ``instant``."""
        _check_id(sub)
        self.signed_out[sub] = max(instant, self.signed_out.get(sub, 0))

    def prune(self, now: int) -> int:
        """Drops entries that cannot revoke any token any more; returns how many."""
        before = len(self.revoked_jti) + len(self.signed_out)
        self.revoked_jti = {
            k: v for k, v in self.revoked_jti.items() if v + PRUNE_GRACE_SECONDS >= now
        }
        lifetime = self.max_token_lifetime_seconds
        self.signed_out = {
            k: v
            for k, v in self.signed_out.items()
            if v + lifetime + PRUNE_GRACE_SECONDS >= now
        }
        return before - len(self.revoked_jti) - len(self.signed_out)

    def entries(self) -> int:
        return len(self.revoked_jti) + len(self.signed_out)

    def to_json(
        self, now: int, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> bytes:
        """Compact, sorted JSON stamped ``generated_at = now``; refuses to exceed the bounds."""
        if self.entries() > max_entries:
            raise DocumentTooLarge(f"{self.entries()} entries is more than {max_entries}")
        self.generated_at = now
        body = json.dumps(
            {
                "version": DOCUMENT_VERSION,
                "generated_at": self.generated_at,
                "max_token_lifetime_seconds": self.max_token_lifetime_seconds,
                "revoked_jti": dict(sorted(self.revoked_jti.items())),
                "signed_out": dict(sorted(self.signed_out.items())),
            },
            separators=(",", ":"),
        ).encode()
        if len(body) > max_bytes:
            raise DocumentTooLarge(f"{len(body)} bytes is more than {max_bytes}")
        return body


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DocumentError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _is_epoch(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_id(identifier: Any) -> None:
    if not isinstance(identifier, str) or not 1 <= len(identifier.encode()) <= MAX_ID_BYTES:
        raise ValueError(f"an identifier must be a string of 1 to {MAX_ID_BYTES} bytes")


def _entries(section: Any, name: str) -> dict[str, int]:
    if not isinstance(section, dict):
        raise DocumentError(f"{name} is not an object")
    for key, value in section.items():
        try:
            _check_id(key)
        except ValueError as e:
            raise DocumentError(f"{name}: {e}") from e
        if not _is_epoch(value):
            raise DocumentError(f"{name}: values must be non-negative integers (epoch seconds)")
    return dict(section)


# --- stores ---------------------------------------------------------------------------------


@dataclass
class Limits:
    max_token_lifetime_seconds: int = DEFAULT_MAX_TOKEN_LIFETIME_SECONDS
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_bytes: int = DEFAULT_MAX_BYTES


Mutation = Callable[[RevocationDocument], None]


def _apply(current: bytes | None, mutate: Mutation, limits: Limits, now: int) -> tuple[bytes, RevocationDocument]:
    doc = RevocationDocument.from_json(current) if current is not None else RevocationDocument()
    # The configured lifetime wins: it is what the pools' app clients allow now.
    doc.max_token_lifetime_seconds = limits.max_token_lifetime_seconds
    mutate(doc)
    doc.prune(now)
    return doc.to_json(now, limits.max_entries, limits.max_bytes), doc


class FileStore:
    """A local file, replaced atomically (write + rename) under an exclusive lock."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def update(self, mutate: Mutation, limits: Limits, now: int) -> RevocationDocument:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            body, doc = _apply(self.read(), mutate, limits, now)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return doc

    def __str__(self) -> str:
        return str(self.path)


class S3Store:
    """An S3 object, replaced only if unchanged since it was read (If-Match / If-None-Match),
    so concurrent Lambda invocations never lose each other's revocations."""

    ATTEMPTS = 8

    def __init__(self, s3, bucket: str, key: str):
        self.s3, self.bucket, self.key = s3, bucket, key

    def read_with_etag(self) -> tuple[bytes | None, str | None]:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except self.s3.exceptions.NoSuchKey:
            return None, None
        return obj["Body"].read(), obj["ETag"]

    def read(self) -> bytes | None:
        return self.read_with_etag()[0]

    def update(self, mutate: Mutation, limits: Limits, now: int) -> RevocationDocument:
        from botocore.exceptions import ClientError

        for attempt in range(self.ATTEMPTS):
            current, etag = self.read_with_etag()
            body, doc = _apply(current, mutate, limits, now)
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self.s3.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=body,
                    ContentType="application/json",
                    CacheControl="no-cache",
                    **condition,
                )
                return doc
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code not in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                    raise
                log.info("s3://%s/%s changed meanwhile (attempt %d), retrying", self.bucket, self.key, attempt + 1)
                time.sleep(min(0.05 * 2**attempt, 1.0))
        raise RuntimeError(f"s3://{self.bucket}/{self.key}: still contended after {self.ATTEMPTS} attempts")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def open_store(target: str, endpoint_url: str | None = None):
    """``s3://bucket/key`` or a file path."""
    if target.startswith("s3://"):
        bucket, _, key = target[len("s3://") :].partition("/")
        if not bucket or not key:
            raise ValueError(f"{target!r} is not s3://bucket/key")
        import boto3

        return S3Store(boto3.client("s3", endpoint_url=endpoint_url), bucket, key)
    return FileStore(target)


# --- CloudTrail records -----------------------------------------------------------------------


@dataclass(frozen=True)
class SignOut:
    sub: str
    instant: int


@dataclass(frozen=True)
class Skipped:
    event_id: str
    event_name: str
    why: str


def _hidden(value: Any) -> bool:
    """Cognito replaces secrets in CloudTrail with HIDDEN_DUE_TO_SECURITY_REASONS (or a
    similar HIDDEN_... marker)."""
    return not isinstance(value, str) or not value or value.startswith("HIDDEN")


def _event_instant(record: dict[str, Any]) -> int:
    """eventTime (``2026-01-01T12:00:00Z``), whole seconds."""
    when = dt.datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%SZ")
    return int(when.replace(tzinfo=dt.timezone.utc).timestamp())


class SubResolver:
    """username → sub with AdminGetUser (cognito-idp:AdminGetUser on the pool)."""

    def __init__(self, cognito):
        self.cognito = cognito

    def __call__(self, user_pool_id: str, username: str) -> str | None:
        try:
            user = self.cognito.admin_get_user(UserPoolId=user_pool_id, Username=username)
        except self.cognito.exceptions.UserNotFoundException:
            return None
        attributes = {a["Name"]: a["Value"] for a in user.get("UserAttributes", [])}
        return attributes.get("sub")


def sign_outs_from_records(
    records: Iterable[dict[str, Any]],
    resolve_sub: Callable[[str, str], str | None],
    user_pool_ids: set[str] | None = None,
) -> tuple[list[SignOut], list[Skipped]]:
    """What CloudTrail records of Cognito calls tell: the sign-outs they prove, and the
    records that revoked something this producer cannot identify (logged; see README).

    - ``AdminUserGlobalSignOut``: ``requestParameters.userPoolId`` and ``.username`` →
      AdminGetUser → ``sub``.
    - ``GlobalSignOut``: the access token is hidden; the user is known only if the record
      carries ``additionalEventData.sub``.
    - ``RevokeToken``: the refresh token is hidden and its ``origin_jti`` is not recorded:
      nothing here can name the revoked session.
    Failed calls (``errorCode``) and other events are ignored.
    """
    sign_outs: list[SignOut] = []
    skipped: list[Skipped] = []
    for record in records:
        name = record.get("eventName", "")
        if record.get("eventSource") != COGNITO_EVENT_SOURCE:
            continue
        if name not in SIGN_OUT_EVENTS and name != REVOKE_TOKEN_EVENT:
            continue
        if record.get("errorCode"):
            continue
        event_id = str(record.get("eventID", "?"))
        params = record.get("requestParameters") or {}
        extra = record.get("additionalEventData") or {}
        pool = params.get("userPoolId") or extra.get("userPoolId")
        if user_pool_ids is not None and pool is not None and pool not in user_pool_ids:
            continue
        if name == REVOKE_TOKEN_EVENT:
            skipped.append(
                Skipped(event_id, name, "CloudTrail does not record the revoked token's origin_jti")
            )
            continue
        sub = extra.get("sub")
        if _hidden(sub):
            sub = None
            username = params.get("username")
            if name == "AdminUserGlobalSignOut" and pool and not _hidden(username):
                sub = resolve_sub(pool, username)
                if sub is None:
                    skipped.append(Skipped(event_id, name, "the user no longer exists"))
                    continue
        if sub is None:
            skipped.append(Skipped(event_id, name, "the record does not identify the user"))
            continue
        sign_outs.append(SignOut(sub=sub, instant=_event_instant(record)))
    return sign_outs, skipped


def records_from_event(event: dict[str, Any]) -> list[dict[str, Any]]:
    """An EventBridge event ("AWS API Call via CloudTrail": the record is ``detail``) or a
    CloudTrail log file (``{"Records": [...]}``)."""
    if "Records" in event and isinstance(event["Records"], list):
        return event["Records"]
    if event.get("detail-type") == "AWS API Call via CloudTrail" and isinstance(
        event.get("detail"), dict
    ):
        return [event["detail"]]
    raise ValueError("neither an EventBridge CloudTrail event nor a CloudTrail log file")


def apply_records(
    store, records: list[dict[str, Any]], resolve_sub, limits: Limits, now: int,
    user_pool_ids: set[str] | None = None,
) -> dict[str, Any]:
    sign_outs, skipped = sign_outs_from_records(records, resolve_sub, user_pool_ids)
    for s in skipped:
        log.warning("not applied: %s %s: %s", s.event_name, s.event_id, s.why)

    def mutate(doc: RevocationDocument) -> None:
        for s in sign_outs:
            doc.sign_out(s.sub, s.instant)

    doc = store.update(mutate, limits, now) if sign_outs else None
    return {
        "signed_out": len(sign_outs),
        "skipped": [s.__dict__ for s in skipped],
        "entries": doc.entries() if doc else None,
    }


# --- Lambda ---------------------------------------------------------------------------------


def _limits_from_env(env: dict[str, str]) -> Limits:
    return Limits(
        max_token_lifetime_seconds=int(
            env.get("MAX_TOKEN_LIFETIME_SECONDS", DEFAULT_MAX_TOKEN_LIFETIME_SECONDS)
        ),
        max_entries=int(env.get("MAX_ENTRIES", DEFAULT_MAX_ENTRIES)),
        max_bytes=int(env.get("MAX_BYTES", DEFAULT_MAX_BYTES)),
    )


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point. Environment: ``REVOCATIONS_TARGET`` (``s3://bucket/key``),
    optional ``USER_POOL_IDS`` (comma-separated: only these pools), ``MAX_TOKEN_LIFETIME_SECONDS``,
    ``MAX_ENTRIES``, ``MAX_BYTES``, ``AWS_ENDPOINT_URL`` (tests)."""
    import boto3

    env = dict(os.environ)
    endpoint = env.get("AWS_ENDPOINT_URL")
    store = open_store(env["REVOCATIONS_TARGET"], endpoint)
    pools = {p for p in env.get("USER_POOL_IDS", "").split(",") if p} or None
    resolve = SubResolver(boto3.client("cognito-idp", endpoint_url=endpoint))
    result = apply_records(
        store, records_from_event(event), resolve, _limits_from_env(env), int(time.time()), pools
    )
    log.info("revocations %s: %s", store, json.dumps(result))
    return result


# --- command line -----------------------------------------------------------------------------


def _read_records(path: str) -> list[dict[str, Any]]:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return records_from_event(json.loads(raw))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Maintain the cognito-authorizer revocation document (README, 'Revocation')."
    )
    parser.add_argument("--target", required=True, help="s3://bucket/key or a file path")
    parser.add_argument("--endpoint-url", help="AWS endpoint (tests, local emulators)")
    parser.add_argument(
        "--max-token-lifetime",
        type=int,
        default=DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
        help="longest id/access token validity of the pools, seconds (default 86400)",
    )
    parser.add_argument("--max-entries", type=int, default=DEFAULT_MAX_ENTRIES)
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--now", type=int, help=argparse.SUPPRESS)  # tests pin the clock
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("revoke", help="revoke a session (origin_jti) or one token (jti)")
    p.add_argument("identifier", help="origin_jti (every token of the session) or jti")
    p.add_argument("--until", type=int, help="epoch seconds (default: now + max token lifetime)")

    p = sub.add_parser("sign-out", help="revoke a user's tokens authenticated before an instant")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--sub")
    who.add_argument("--username", help="with --user-pool-id: resolved to sub by AdminGetUser")
    p.add_argument("--user-pool-id")
    p.add_argument("--at", type=int, help="the sign-out instant, epoch seconds (default: now)")

    p = sub.add_parser("apply", help="apply CloudTrail log files or saved EventBridge events")
    p.add_argument("files", nargs="+")
    p.add_argument("--user-pool-id", action="append", help="only these pools (repeatable)")

    sub.add_parser("prune", help="drop entries that can no longer revoke anything")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    now = args.now if args.now is not None else int(time.time())
    limits = Limits(args.max_token_lifetime, args.max_entries, args.max_bytes)
    store = open_store(args.target, args.endpoint_url)

    def cognito():
        import boto3

        return boto3.client("cognito-idp", endpoint_url=args.endpoint_url)

    if args.command == "revoke":
        until = args.until if args.until is not None else now + limits.max_token_lifetime_seconds
        doc = store.update(lambda d: d.revoke(args.identifier, until), limits, now)
    elif args.command == "sign-out":
        subject = args.sub
        if subject is None:
            if not args.user_pool_id:
                parser.error("--username needs --user-pool-id")
            subject = SubResolver(cognito())(args.user_pool_id, args.username)
            if subject is None:
                print(f"no user {args.username!r} in {args.user_pool_id}", file=sys.stderr)
                return 1
        at = args.at if args.at is not None else now
        doc = store.update(lambda d: d.sign_out(subject, at), limits, now)
    elif args.command == "apply":
        records = [r for f in args.files for r in _read_records(f)]
        pools = set(args.user_pool_id) if args.user_pool_id else None
        result = apply_records(store, records, SubResolver(cognito()), limits, now, pools)
        print(json.dumps(result))
        return 0
    else:
        doc = store.update(lambda d: None, limits, now)
    print(json.dumps({"target": str(store), "entries": doc.entries()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
