"""Packages the built filter for release: `make dist`.

Writes, into dist/ (or --out):

  cognito_authorizer.wasm          the module, byte for byte as built
  cognito_authorizer.wasm.sha256   its sha256 in `sha256sum` format (`sha256sum -c` checks it):
                                   the value for Envoy's remote code `sha256` and for a
                                   WasmPlugin with an http(s):// url
  cognito_authorizer.oci.digest    `sha256:<hex>` of the OCI image manifest: what a
                                   WasmPlugin with an oci:// url compares its `sha256` with
  oci/                             an OCI image layout (oci-layout, index.json, blobs/sha256/)
                                   holding one image tagged with the crate version

The image is the "compat" variant of the Wasm image specification that Istio reads
(istio-agent, pkg/wasm): a plain OCI image whose only layer is a tar.gz holding
`plugin.wasm`, with the manifest annotation `module.wasm.image/variant: compat`. Being an
ordinary image, any registry and any copy tool accepts it (skopeo, crane, oras, regctl).
The layout is written here rather than by such a tool because none installs from the
package registries this project can reach and also writes a layout offline; it is only
JSON, a tar and sha256 digests, and tests/dist/test_dist.py checks every digest and size.

Everything is deterministic (fixed tar metadata, gzip without timestamp, no creation date):
the same module always gives the same manifest digest.

Push it with any of (the tag is the crate version, here 0.1.0):
  skopeo copy --preserve-digests oci:dist/oci:0.1.0 docker://REGISTRY/cognito-authorizer:0.1.0
  oras cp --from-oci-layout dist/oci:0.1.0 REGISTRY/cognito-authorizer:0.1.0
  crane push dist/oci REGISTRY/cognito-authorizer:0.1.0

Usage: dist.py [--wasm PATH] [--out DIR] [--version VERSION]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "cognito_authorizer.wasm"
MODULE_NAME = "cognito_authorizer.wasm"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# The compat variant's file name inside the layer: istio-agent looks for this base name.
PLUGIN_FILE = "plugin.wasm"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    """Stable bytes for a JSON document (its digest must not change between runs)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def crate_version() -> str:
    with (ROOT / "Cargo.toml").open("rb") as f:
        return tomllib.load(f)["package"]["version"]


def layer_tar(wasm: bytes) -> bytes:
    """An uncompressed tar with the module as `plugin.wasm`, with fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(PLUGIN_FILE)
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and no file name in the header: the same input always gives the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def descriptor(media_type: str, blob: bytes, annotations: dict | None = None) -> dict:
    d = {"mediaType": media_type, "digest": f"sha256:{sha256_hex(blob)}", "size": len(blob)}
    if annotations:
        d["annotations"] = annotations
    return d


def build(wasm_path: Path, out: Path, version: str) -> dict:
    """Writes the release files into `out`; returns their names and digests."""
    wasm = wasm_path.read_bytes()
    if wasm[:4] != b"\0asm":
        raise SystemExit(f"{wasm_path}: not a Wasm module")
    out.mkdir(parents=True, exist_ok=True)

    (out / MODULE_NAME).write_bytes(wasm)
    wasm_sha = sha256_hex(wasm)
    (out / f"{MODULE_NAME}.sha256").write_text(f"{wasm_sha}  {MODULE_NAME}\n")

    tar = layer_tar(wasm)
    layer = gzip_bytes(tar)
    config = canonical_json({
        # The module's platform, as other Wasm images declare it (GOARCH wasm, GOOS wasip1).
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256_hex(tar)}"]},
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, config),
        # No title annotation on the layer: oras would save the tar.gz under that file name.
        "layers": [descriptor(MEDIA_LAYER, layer)],
        "annotations": {
            "module.wasm.image/variant": "compat",
            "org.opencontainers.image.title": "cognito-authorizer",
            "org.opencontainers.image.description": "Amazon Cognito JWT authorizer, a proxy-wasm filter for Envoy and Istio",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.licenses": "Apache-2.0",
        },
    })
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [descriptor(MEDIA_MANIFEST, manifest, {"org.opencontainers.image.ref.name": version})],
    })

    # A fresh layout each time: no blob of an older build stays behind.
    layout = out / "oci"
    if layout.exists():
        shutil.rmtree(layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (config, layer, manifest):
        (blobs / sha256_hex(blob)).write_bytes(blob)
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_bytes(index)

    manifest_digest = f"sha256:{sha256_hex(manifest)}"
    (out / "cognito_authorizer.oci.digest").write_text(manifest_digest + "\n")
    return {"version": version, "wasm_sha256": wasm_sha, "manifest_digest": manifest_digest, "out": str(out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wasm", type=Path, default=DEFAULT_WASM)
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--version", default=None, help="image tag (default: the crate version)")
    args = parser.parse_args(argv)
    if not args.wasm.is_file():
        print(f"{args.wasm}: no built module, run `make build`", file=sys.stderr)
        return 1
    r = build(args.wasm, args.out, args.version or crate_version())
    print(f"{r['out']}/{MODULE_NAME}  sha256 {r['wasm_sha256']}")
    print(f"{r['out']}/oci  tag {r['version']}  manifest {r['manifest_digest']}")
    print(f"push:  skopeo copy --preserve-digests oci:{r['out']}/oci:{r['version']} "
          f"docker://REGISTRY/cognito-authorizer:{r['version']}")
    print(f"WasmPlugin:  url: oci://REGISTRY/cognito-authorizer:{r['version']}   "
          f"sha256: {r['manifest_digest'].removeprefix('sha256:')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
