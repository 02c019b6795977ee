"""`make run`: the Cognito authorizer in front of a small API, with a local Cognito.

Starts, all on 127.0.0.1:
  - moto_server, the Cognito emulator (port 5000), with a user pool, an app client and the
    user alice (group admins);
  - an echo upstream (port 8081) that answers with the headers it received;
  - Envoy (listener 8080, admin 9901) from envoy/envoy.yaml, rendered with the real pool id,
    client id and ports into target/demo/envoy.yaml.
Then it sends the walkthrough requests once itself (401 without a token, 200 with one),
prints the commands to repeat them, and runs until Ctrl-C.

Environment: ENVOY_BIN, WASM (the Makefile sets both); DEMO_PORT, DEMO_ADMIN_PORT,
DEMO_UPSTREAM_PORT, DEMO_MOTO_PORT to choose ports (a default port that is taken is
replaced by a free one); DEMO_DIR for its files (default target/demo); DEMO_SELFTEST=1 to
check the walkthrough and exit 0 (works) or 1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.client import Response  # noqa: E402
from support.envoy import Envoy, EnvoyExited  # noqa: E402
from support.moto_pool import REGION, CognitoPool, MotoServer, create_pool  # noqa: E402
from support.polling import WaitTimeout  # noqa: E402
from support.ports import free_port, port_is_free  # noqa: E402
from support.upstream import EchoUpstream  # noqa: E402

TEMPLATE = REPO / "envoy" / "envoy.yaml"
DEMO_DIR = Path(os.environ.get("DEMO_DIR") or REPO / "target" / "demo").resolve()
USERNAME = "alice"
PASSWORD = "Passw0rd!demo"
GROUP = "admins"

# What envoy/envoy.yaml says, and what this script puts in its place.
TEMPLATE_POOL_ID = "us-east-1_EXAMPLE"
TEMPLATE_CLIENT_ID = "EXAMPLECLIENTID"
TEMPLATE_WASM = "target/wasm32-wasip1/release/cognito_authorizer.wasm"
DEFAULT_PORTS = {  # role: (environment variable, port in the template)
    "listener": ("DEMO_PORT", 8080),
    "admin": ("DEMO_ADMIN_PORT", 9901),
    "upstream": ("DEMO_UPSTREAM_PORT", 8081),
    "moto": ("DEMO_MOTO_PORT", 5000),
}


class DemoError(Exception):
    """Something the person running the demo must fix (printed without a traceback)."""


def choose_ports() -> dict[str, int]:
    """The template's ports, unless overridden by the environment or already taken."""
    ports = {}
    for role, (variable, default) in DEFAULT_PORTS.items():
        if os.environ.get(variable):
            port = int(os.environ[variable])
            if not port_is_free(port):
                raise DemoError(f"{variable}={port}: that port is in use")
        elif port_is_free(default):
            port = default
        else:
            port = free_port()
            print(f"note: port {default} ({role}) is in use; using {port} instead")
        ports[role] = port
    return ports


def render(template: str, pool: CognitoPool, ports: dict[str, int], wasm: str) -> str:
    """envoy/envoy.yaml with the demo's pool, client, ports and module path.

    Every placeholder must be found, so a change to the template that this script does not
    know about fails here rather than in a confusing Envoy error."""
    replacements = [
        (re.escape(TEMPLATE_POOL_ID), pool.pool_id),
        (re.escape(TEMPLATE_CLIENT_ID), pool.client_id),
        (rf"(filename:\s*){re.escape(TEMPLATE_WASM)}", rf"\g<1>{wasm}"),
        *(
            (rf"(port_value:\s*){default}\b", rf"\g<1>{ports[role]}")
            for role, (_, default) in DEFAULT_PORTS.items()
        ),
    ]
    for pattern, replacement in replacements:
        template, count = re.subn(pattern, replacement, template)
        if count == 0:
            raise DemoError(f"{TEMPLATE} no longer contains {pattern!r}; update {__file__}")
    return template


def _shown(path: Path) -> str:
    """`path` relative to the repository when inside it (shorter to read and copy)."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def show(title: str, command: str, resp: Response, token: str | None = None) -> None:
    """Prints a response like `curl -i` would (the token shortened, for readability)."""
    print(f"\n# {title}\n$ {command}")
    print(f"HTTP/1.1 {resp.status}")
    for name, value in resp.headers:
        print(f"{name}: {value}")
    print()
    body = resp.body.decode(errors="replace").rstrip()
    if token:
        body = body.replace(token, f"{token[:24]}...")
    print(body)


def commands(pool: CognitoPool, ports: dict[str, int]) -> tuple[str, str, str, str]:
    """The commands a newcomer copies: no token, get a token (AWS CLI or Python), with it."""
    base = f"localhost:{ports['listener']}"
    endpoint = f"http://127.0.0.1:{ports['moto']}"
    auth_params = shlex.quote(f"USERNAME={USERNAME},PASSWORD={PASSWORD}")
    aws_cli = (
        f"TOKEN=$(aws cognito-idp initiate-auth --endpoint-url {endpoint} --region {REGION} "
        f"--no-sign-request --client-id {pool.client_id} --auth-flow USER_PASSWORD_AUTH "
        f"--auth-parameters {auth_params} --query AuthenticationResult.IdToken --output text)"
    )
    python = os.path.relpath(sys.executable)
    if python.startswith(".."):
        python = sys.executable
    snippet = (
        f'import boto3; c = boto3.client("cognito-idp", endpoint_url="{endpoint}", '
        f'region_name="{REGION}", aws_access_key_id="x", aws_secret_access_key="x"); '
        f'print(c.initiate_auth(ClientId="{pool.client_id}", AuthFlow="USER_PASSWORD_AUTH", '
        f'AuthParameters={{"USERNAME": "{USERNAME}", "PASSWORD": "{PASSWORD}"}})'
        f'["AuthenticationResult"]["IdToken"])'
    )
    with_python = f"TOKEN=$({python} -c {shlex.quote(snippet)})"
    return (
        f"curl -i {base}/hello",
        aws_cli,
        with_python,
        f'curl -i -H "Authorization: Bearer $TOKEN" {base}/hello',
    )


def walkthrough(envoy: Envoy, pool: CognitoPool, ports: dict[str, int]) -> list[str]:
    """Sends the demo requests once, prints them, and returns what did not go as promised."""
    no_token, aws_cli, with_python, with_token = commands(pool, ports)
    problems = []

    resp = envoy.request("/hello")
    show("no token: 401", no_token, resp)
    if resp.status != 401:
        problems.append(f"without a token: expected 401, got {resp.status}")

    token = pool.login(USERNAME).id_token
    resp = envoy.request("/hello", {"Authorization": f"Bearer {token}"})
    show("with alice's id token: 200, the upstream sees her identity", with_token, resp, token)
    if resp.status != 200:
        problems.append(f"with a token: expected 200, got {resp.status}")
    else:
        seen = json.loads(resp.body)["headers"]
        if seen.get("x-cognito-username") != USERNAME:
            problems.append(f"the upstream did not get x-cognito-username: {USERNAME}")

    # The security review's reproductions, as a new user would try them on the demo.
    resp = envoy.request("/admin/../healthz")
    if resp.status != 200 or json.loads(resp.body).get("path") != "/healthz":
        problems.append(f"/admin/../healthz: expected Envoy to normalise it to /healthz, got {resp.status}")
    resp = envoy.request("/healthz", {"x_cognito_sub": "victim-uuid"})
    if resp.status != 400:
        problems.append(f"a header named x_cognito_sub: expected 400 from Envoy, got {resp.status}")

    print(
        f"""
------------------------------------------------------------------------------------------
Envoy with the authorizer: localhost:{ports["listener"]}  (admin: localhost:{ports["admin"]})
Local Cognito (moto): {pool.endpoint}, user pool {pool.pool_id},
app client {pool.client_id}, user {USERNAME} / {PASSWORD} in group {GROUP}.

Try it yourself:

  # 1. No token: 401
  {no_token}

  # 2. Get an id token for {USERNAME}, with the AWS CLI ...
  {aws_cli}
  #    ... or without it:
  {with_python}

  # 3. With the token: 200, and the upstream's echo shows x-cognito-sub, -username, -groups
  {with_token}

  # Anonymous route (rules: /healthz is allowed without a token)
  curl -i localhost:{ports["listener"]}/healthz

  # Counters
  curl -s localhost:{ports["admin"]}/stats | grep cognito_authorizer

Envoy config: {_shown(envoy.config_path)}   log: {_shown(envoy.log_path)}
------------------------------------------------------------------------------------------"""
    )
    return problems


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def wait_for_interrupt() -> None:
    print("Running. Press Ctrl-C to stop.", flush=True)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass


def main() -> int:
    selftest = os.environ.get("DEMO_SELFTEST") == "1"
    # Ctrl-C and SIGTERM stop everything (SIGINT explicitly too: a shell that starts us in
    # the background would otherwise leave it ignored).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    envoy_bin = os.environ.get("ENVOY_BIN") or str(REPO / ".venv" / "bin" / "envoy")
    wasm = os.path.abspath(
        os.environ.get("WASM")
        or REPO / "target" / "wasm32-wasip1" / "release" / "cognito_authorizer.wasm"
    )
    if not os.path.isfile(wasm):
        raise DemoError(f"no filter at {wasm}: run `make build` first")
    if not os.access(envoy_bin, os.X_OK):
        raise DemoError(f"no Envoy binary at {envoy_bin}: run `make venv` or set ENVOY_BIN")
    if not TEMPLATE.is_file():
        raise DemoError(f"{TEMPLATE} is missing")

    ports = choose_ports()
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    stoppers = []
    try:
        print(f"starting the local Cognito (moto) on 127.0.0.1:{ports['moto']} ...", flush=True)
        moto = MotoServer(DEMO_DIR / "moto.log", port=ports["moto"])
        stoppers.append(moto.stop)
        pool = create_pool(
            moto.endpoint, {USERNAME: (PASSWORD, [GROUP])}, pool_name="demo", client_name="demo-app"
        )

        upstream = EchoUpstream(ports["upstream"])
        stoppers.append(upstream.stop)

        config_path = DEMO_DIR / "envoy.yaml"
        config_path.write_text(render(TEMPLATE.read_text(), pool, ports, wasm))
        print(f"starting Envoy with {_shown(config_path)} ...", flush=True)
        envoy = Envoy(envoy_bin, config_path, DEMO_DIR, "envoy")
        stoppers.append(envoy.stop)
        try:
            envoy.wait_ready(timeout=60)
        except (EnvoyExited, WaitTimeout) as e:
            raise DemoError(f"Envoy did not start: {e}") from None

        problems = walkthrough(envoy, pool, ports)
        if selftest:
            for problem in problems:
                print(f"DEMO SELFTEST FAILED: {problem}", file=sys.stderr)
            if problems:
                print(f"Envoy log tail:\n{envoy.log_tail()}", file=sys.stderr)
                return 1
            print("demo selftest: ok (401 without a token, 200 with one)")
            return 0
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        wait_for_interrupt()
        return 0
    finally:
        print("stopping ...", flush=True)
        for stop in reversed(stoppers):
            stop()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
