"""A local Cognito: moto_server, and a user pool with an app client and a user in a group.

moto signs real RS256 tokens (kid "dummy") and serves the pool's JWKS at
`/<pool id>/.well-known/jwks.json` whatever the Host header, so Envoy can fetch keys from it
exactly as it would from cognito-idp.<region>.amazonaws.com."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .polling import wait_until
from .ports import LOOPBACK, free_port
from .processes import ManagedProcess

REGION = "us-east-1"
# moto accepts any credentials; these only keep boto3 from looking for real ones.
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def moto_server_bin() -> str:
    """moto_server next to the running interpreter (the project venv)."""
    return str(Path(sys.executable).parent / "moto_server")


class MotoServer:
    """moto_server on 127.0.0.1:`port` (a free one when not given)."""

    def __init__(self, log_path: Path, port: int | None = None, start_timeout: float = 30.0):
        self.port = port or free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        env = dict(os.environ)
        env.update(
            {"AWS_DEFAULT_REGION": REGION, **{k.upper(): v for k, v in DUMMY_CREDENTIALS.items()}}
        )
        self.process = ManagedProcess(
            [moto_server_bin(), "-H", LOOPBACK, "-p", str(self.port)], log_path, env=env
        )
        try:
            wait_until(self._ready, start_timeout, f"moto_server on port {self.port}", 0.05)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.exit_code() is not None:
            raise RuntimeError(f"moto_server exited:\n{self.process.output()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        self.process.stop()


@dataclass(frozen=True)
class Tokens:
    id_token: str
    access_token: str


@dataclass
class CognitoPool:
    """A user pool in moto, with the ids a filter configuration needs."""

    endpoint: str
    pool_id: str
    client_id: str
    users: dict[str, str] = field(default_factory=dict)  # username -> password

    @property
    def issuer(self) -> str:
        return f"https://cognito-idp.{REGION}.amazonaws.com/{self.pool_id}"

    @property
    def jwks_path(self) -> str:
        return f"/{self.pool_id}/.well-known/jwks.json"

    def _client(self):
        return cognito_client(self.endpoint)

    def add_client(self, name: str) -> str:
        """Another app client of the same pool (its tokens are signed by the same key)."""
        return create_app_client(self._client(), self.pool_id, name)

    def login(self, username: str, client_id: str | None = None) -> Tokens:
        """USER_PASSWORD_AUTH, exactly as an app would: returns the IdToken and AccessToken."""
        result = self._client().initiate_auth(
            ClientId=client_id or self.client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": self.users[username]},
        )["AuthenticationResult"]
        return Tokens(id_token=result["IdToken"], access_token=result["AccessToken"])


def cognito_client(endpoint: str):
    """A boto3 cognito-idp client that talks to the emulator at `endpoint` only."""
    import boto3  # imported here: slow to import, and only needed once a server runs

    return boto3.client(
        "cognito-idp", endpoint_url=endpoint, region_name=REGION, **DUMMY_CREDENTIALS
    )


def create_app_client(cognito, pool_id: str, name: str) -> str:
    return cognito.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName=name,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]


def create_pool(
    endpoint: str,
    users: dict[str, tuple[str, list[str]]],
    pool_name: str = "cognito-authorizer-test",
    client_name: str = "web",
) -> CognitoPool:
    """Creates a pool, an app client and `users` ({name: (password, [groups])}).

    Users are confirmed with a permanent password, so USER_PASSWORD_AUTH works at once."""
    cognito = cognito_client(endpoint)
    pool_id = cognito.create_user_pool(PoolName=pool_name)["UserPool"]["Id"]
    client_id = create_app_client(cognito, pool_id, client_name)
    groups = sorted({g for _, gs in users.values() for g in gs})
    for group in groups:
        cognito.create_group(UserPoolId=pool_id, GroupName=group)
    for username, (password, user_groups) in users.items():
        cognito.admin_create_user(
            UserPoolId=pool_id,
            Username=username,
            UserAttributes=[{"Name": "email", "Value": f"{username}@example.com"}],
            MessageAction="SUPPRESS",
        )
        cognito.admin_set_user_password(
            UserPoolId=pool_id, Username=username, Password=password, Permanent=True
        )
        for group in user_groups:
            cognito.admin_add_user_to_group(UserPoolId=pool_id, Username=username, GroupName=group)
    return CognitoPool(
        endpoint=endpoint,
        pool_id=pool_id,
        client_id=client_id,
        users={name: password for name, (password, _) in users.items()},
    )
