"""Harness for the end-to-end tests and the demo: real Envoy, a local Cognito (moto), an echo
upstream, a controllable JWKS server and a token minter. Everything binds to 127.0.0.1 only,
and every process started here runs in its own process group so it can be stopped whole."""
