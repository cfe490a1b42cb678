#!/usr/bin/env python3
"""Vendor the web UI's browser libraries from the npm registry, pinned and verified.

For each package below: ``npm pack name@version`` fetches the tarball, its SHA-512 is
checked against the integrity pinned here *and* against the registry's
``dist.integrity`` (a re-published or tampered tarball fails either way), then the
browser build(s) and the licence file(s) are copied, byte for byte, into
``webui/static/vendor/<name>/``, and ``webui/static/vendor/manifest.json`` records the
versions, the tarball integrity and the sha256 of every copied file.

Every script is saved as ``.js``: Python's ``mimetypes`` may not know ``.mjs`` (it then
serves ``text/plain``, which browsers refuse for a module). The page loads these files
from the gateway itself (no CDN), so the CSP can stay ``script-src 'self'``.

To upgrade: change a version, set its integrity to the one ``npm view name@version
dist.integrity`` prints, run this script, check the diff.

Usage: python3 scripts/vendor-webui.py   (needs npm on PATH)
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "webui" / "static" / "vendor"


@dataclass(frozen=True)
class Package:
    name: str  # the npm package
    version: str
    integrity: str  # the registry's dist.integrity for this version
    target: str  # folder under webui/static/vendor/
    files: dict[str, str]  # path in the tarball (under package/) -> file name in target


PACKAGES = (
    Package("marked", "18.2.1",
            "sha512-ii4bxCTCqqwpT86XZWgJNs+ZnAIZksmLGYMViWA7PDIXYIeNo1x6cDdX3JOip9NM/cI6p8z57F"
            "xliACboTruMA==",
            "marked", {"lib/marked.esm.js": "marked.esm.js", "LICENSE": "LICENSE"}),
    Package("dompurify", "3.5.0",
            "sha512-LYC0ZkE8P1V42JsRYTwMdme/2ET8SpOc5AA2eOFjP/IadvRd2fwiT4TVz5vkfy0XUx12aS2UaR"
            "kTnfVPNOv9vw==",
            "dompurify", {"dist/purify.es.mjs": "purify.es.js", "LICENSE": "LICENSE",
                          "LICENSE-MPL": "LICENSE-MPL"}),
    # The CDN build of highlight.js: the "common" languages bundled as one ES module.
    Package("@highlightjs/cdn-assets", "11.12.0",
            "sha512-KvOKXODaiFmId9xaq3xc5xCL66wVLUuOngDbO9B/kewbFTqdGbn2nJxNhN3H5R1cgDTVj6R8vH"
            "0zgiNDEGjpDw==",
            "highlight.js", {"es/highlight.min.js": "highlight.min.js",
                             "styles/github.min.css": "github.min.css",
                             "styles/github-dark.min.css": "github-dark.min.css",
                             "LICENSE": "LICENSE"}),
)


def npm(*args: str, cwd: Path) -> str:
    return subprocess.run(["npm", *args], cwd=cwd, check=True, capture_output=True,
                          text=True, timeout=300).stdout


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(pkg: Package, work: Path) -> Path:
    """The package's tarball, checked against the pinned and the registry's integrity."""
    spec = f"{pkg.name}@{pkg.version}"
    packed = json.loads(npm("pack", spec, "--json", "--silent", cwd=work))
    tarball = work / packed[0]["filename"]
    actual = sri(tarball.read_bytes())
    registry = json.loads(npm("view", spec, "dist.integrity", "--json", cwd=work))
    if actual != pkg.integrity or registry != pkg.integrity:
        sys.exit(f"{spec}: integrity mismatch\n  pinned:   {pkg.integrity}\n"
                 f"  registry: {registry}\n  tarball:  {actual}")
    return tarball


def vendor(pkg: Package, tarball: Path) -> dict[str, object]:
    target = VENDOR / pkg.target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    hashes = {}
    with tarfile.open(tarball) as tar:
        for inner, name in pkg.files.items():
            member = tar.extractfile(f"package/{inner}")
            if member is None:
                sys.exit(f"{pkg.name}: package/{inner} is not a file")
            data = member.read()
            (target / name).write_bytes(data)
            hashes[name] = hashlib.sha256(data).hexdigest()
    return {"package": pkg.name, "version": pkg.version, "integrity": pkg.integrity,
            "files": hashes}


def main() -> None:
    if shutil.which("npm") is None:
        sys.exit("npm is needed: apt-get install npm")
    VENDOR.mkdir(parents=True, exist_ok=True)
    manifest = {}
    with tempfile.TemporaryDirectory(prefix="vendor-webui-") as tmp:
        for pkg in PACKAGES:
            manifest[pkg.target] = vendor(pkg, fetch(pkg, Path(tmp)))
            print(f"vendored {pkg.name}@{pkg.version} into webui/static/vendor/{pkg.target}/")
    (VENDOR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
