"""`make dist` output is well-formed and carries exactly the built module.

The layout is read back the way a registry client and istio-agent read it: from
index.json through digests only, each blob checked against its digest and size, and the
module taken from the image the way Istio takes it from a "compat" image (last layer,
tar+gzip, the member whose base name is plugin.wasm).
"""

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import dist  # noqa: E402

WASM = Path(os.environ.get("WASM", dist.DEFAULT_WASM))
VERSION = "9.8.7-test"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def wasm() -> bytes:
    assert WASM.is_file(), f"{WASM}: run `make build` first"
    return WASM.read_bytes()


@pytest.fixture(scope="module")
def out(tmp_path_factory, wasm) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, str(HERE / "dist.py"), "--wasm", str(WASM), "--out", str(out), "--version", VERSION],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def blob(layout: Path, descriptor: dict) -> bytes:
    """A blob by descriptor, checked against the descriptor's digest and size."""
    algorithm, hex_digest = descriptor["digest"].split(":")
    assert algorithm == "sha256"
    data = (layout / "blobs" / "sha256" / hex_digest).read_bytes()
    assert sha256(data) == hex_digest, f"{descriptor['digest']}: content does not match its digest"
    assert len(data) == descriptor["size"], f"{descriptor['digest']}: size {len(data)} != {descriptor['size']}"
    return data


def manifest_of(layout: Path) -> tuple[dict, dict]:
    index = json.loads((layout / "index.json").read_text())
    [desc] = index["manifests"]
    return desc, json.loads(blob(layout, desc))


def test_module_is_copied_byte_for_byte(out, wasm):
    assert (out / "cognito_authorizer.wasm").read_bytes() == wasm


def test_sha256_file_is_in_sha256sum_format_and_right(out, wasm):
    text = (out / "cognito_authorizer.wasm.sha256").read_text()
    assert text == f"{sha256(wasm)}  cognito_authorizer.wasm\n"
    # And the real tool agrees.
    proc = subprocess.run(["sha256sum", "-c", "cognito_authorizer.wasm.sha256"], cwd=out, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "cognito_authorizer.wasm: OK", proc.stdout + proc.stderr


def test_layout_marker_and_index(out):
    layout = out / "oci"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    [desc] = index["manifests"]
    assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    # The tag skopeo/oras address as oci:dist/oci:<tag>.
    assert desc["annotations"] == {"org.opencontainers.image.ref.name": VERSION}


def test_every_blob_is_named_by_its_digest_and_referenced(out):
    layout = out / "oci"
    files = {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    for name, data in files.items():
        assert re.fullmatch(r"[0-9a-f]{64}", name) and sha256(data) == name
    desc, manifest = manifest_of(layout)
    referenced = {d["digest"].split(":")[1] for d in [desc, manifest["config"], *manifest["layers"]]}
    assert set(files) == referenced


def test_manifest_is_a_compat_wasm_image(out):
    desc, manifest = manifest_of(out / "oci")
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert manifest["annotations"]["org.opencontainers.image.version"] == VERSION


def test_config_declares_the_layer_it_describes(out):
    layout = out / "oci"
    _, manifest = manifest_of(layout)
    config = json.loads(blob(layout, manifest["config"]))
    uncompressed = gzip.decompress(blob(layout, manifest["layers"][0]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{sha256(uncompressed)}"]}
    assert (config["architecture"], config["os"]) == ("wasm", "wasip1")


def test_module_in_the_image_is_the_built_one(out, wasm):
    # As istio-agent reads a compat image: the last layer, gunzipped, untarred, plugin.wasm.
    layout = out / "oci"
    _, manifest = manifest_of(layout)
    with tarfile.open(fileobj=io.BytesIO(blob(layout, manifest["layers"][-1])), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [(m.name, m.isfile(), m.mode) for m in members] == [("plugin.wasm", True, 0o644)]
        assert tar.extractfile(members[0]).read() == wasm


def test_digest_file_names_the_manifest(out):
    desc, _ = manifest_of(out / "oci")
    assert (out / "cognito_authorizer.oci.digest").read_text() == desc["digest"] + "\n"


def test_same_module_gives_the_same_image(out, tmp_path):
    again = dist.build(WASM, tmp_path, VERSION)
    assert again["manifest_digest"] == (out / "cognito_authorizer.oci.digest").read_text().strip()


def test_rebuild_leaves_no_stale_blob(tmp_path, wasm):
    dist.build(WASM, tmp_path, "1.0.0")
    stale = tmp_path / "oci" / "blobs" / "sha256" / ("0" * 64)
    stale.write_bytes(b"old")
    dist.build(WASM, tmp_path, "1.0.0")
    assert not stale.exists()


def test_refuses_a_file_that_is_not_wasm(tmp_path):
    bogus = tmp_path / "x.wasm"
    bogus.write_bytes(b"not wasm")
    with pytest.raises(SystemExit):
        dist.build(bogus, tmp_path / "out", "1.0.0")
