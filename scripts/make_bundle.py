"""Make the offline bundle a field box installs from, with no network: one folder (and its .tar.gz).

    python scripts/make_bundle.py --out dist/              # both platforms: 64-bit ARM (Raspberry Pi) and x86-64
    python scripts/make_bundle.py --out dist/ --platforms x86_64

Run on a connected machine from the repository checkout (any OS with Python 3.10+ and pip: the
wheels are chosen for the box, not for this machine). The bundle holds:

    pcg-bundle-<version>/
      install.sh            # on the box: sh install.sh [--prefix /opt/pcg]; checks every checksum first
      SHA256SUMS            # sha256sum -c format, every other file of the bundle
      bundle.json           # version, bundled model id, platforms, the exact pip commands, date
      wheels/aarch64/       # pcg-screen's own wheel + its runtime dependencies for CPython 3.11, manylinux aarch64
      wheels/x86_64/        # the same for x86-64
      deploy/               # systemd service, kiosk browser script and autostart entry
      docs/, README.md      # the deployment guides

Only the runtime's dependencies go in (numpy, onnxruntime, pyserial, cryptography and what they
need): no torch, no scipy. Exits 2 with a sentence when pip cannot fetch a wheel (no network).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON_VERSION = "3.11"
PLATFORM_TAGS = {
    "aarch64": ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"],
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"],
}
INSTALL_SH = r'''#!/bin/sh
# Install pcg-screen on this box from this bundle, with no network:
#   sh install.sh [--prefix /opt/pcg]      (default /opt/pcg: where deploy/pcg-kiosk.service looks)
# Checks every file against SHA256SUMS first; a damaged bundle installs nothing.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/pcg
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    *) echo "install.sh: unknown option $1 (use --prefix DIR)" >&2; exit 2 ;;
  esac
done
python="${PYTHON:-python3}"
cd "$here"
if ! sha256sum --quiet -c SHA256SUMS; then
  echo "install.sh: the bundle is damaged (the files above do not match SHA256SUMS): copy it again; nothing was installed" >&2
  exit 2
fi
arch=$(uname -m)
case "$arch" in
  aarch64|arm64) arch=aarch64 ;;
  x86_64|amd64) arch=x86_64 ;;
  *) echo "install.sh: this bundle has wheels for aarch64 and x86_64, not $arch" >&2; exit 2 ;;
esac
if [ ! -d "wheels/$arch" ]; then
  echo "install.sh: this bundle was made without $arch wheels (make_bundle.py --platforms)" >&2; exit 2
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "install.sh: the wheels are for CPython 3.11; $python is $("$python" -V 2>&1) (set PYTHON=python3.11)" >&2; exit 2
fi
"$python" -m venv "$prefix"
"$prefix/bin/python" -m pip install --quiet --no-index --find-links "wheels/$arch" pcg-screen
mkdir -p "$prefix/share/doc"
cp deploy/* "$prefix/share/"
cp docs/*.md README.md "$prefix/share/doc/"
chmod 755 "$prefix/share/pcg-kiosk-browser.sh"
"$prefix/bin/pcg-runtime" --version
"$prefix/bin/pcg-runtime" model > /dev/null
echo "install.sh: installed in $prefix; the bundled model verified. Next: $prefix/share/doc/deploy-raspberry-pi.md, step 3"
'''


class BundleError(Exception):
    pass


def project_version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def runtime_requirements() -> list[str]:
    return list(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"])


def bundled_model_id() -> str:
    sys.path.insert(0, str(REPO_ROOT))
    from runtime.manifest import MANIFEST_KEY, metadata_entries

    model = REPO_ROOT / "runtime" / "models" / "default.onnx"
    manifest = json.loads(metadata_entries(model.read_bytes())[MANIFEST_KEY])
    return f"{manifest['model_name']} (graph {manifest['graph_sha256'][:12]})"


def pip(*args: str) -> list[str]:
    command = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("WARNING: Location")]
        raise BundleError(f"pip could not {args[0]} ({' '.join(last[-2:])[:400]}); is the package index reachable?")
    return command


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_bundle(out: Path, platforms: list[str]) -> Path:
    version = project_version()
    root = out / f"pcg-bundle-{version}"
    if root.exists():
        shutil.rmtree(root)
    (root / "wheels").mkdir(parents=True)
    own = root / "own-wheel"
    commands = [" ".join(pip("wheel", "--no-deps", "--quiet", "-w", str(own), str(REPO_ROOT))[2:])]
    (wheel,) = own.glob("pcg_screen-*.whl")
    for platform in platforms:
        folder = root / "wheels" / platform
        platform_flags = [flag for tag in PLATFORM_TAGS[platform] for flag in ("--platform", tag)]
        commands.append(" ".join(pip("download", "--quiet", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
                                     "--implementation", "cp", *platform_flags, "-d", str(folder),
                                     *runtime_requirements())[2:]))
        shutil.copy2(wheel, folder / wheel.name)
    shutil.rmtree(own)
    shutil.copytree(REPO_ROOT / "deploy", root / "deploy")
    (root / "docs").mkdir()
    for doc in sorted((REPO_ROOT / "docs").glob("*.md")):
        shutil.copy2(doc, root / "docs" / doc.name)
    shutil.copy2(REPO_ROOT / "README.md", root / "README.md")
    (root / "install.sh").write_text(INSTALL_SH)
    (root / "install.sh").chmod(0o755)
    (root / "bundle.json").write_text(json.dumps({
        "pcg_screen": version, "bundled_model": bundled_model_id(), "platforms": platforms,
        "python": f"CPython {PYTHON_VERSION}", "made_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commands": commands,
    }, indent=1) + "\n")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    (root / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(root).as_posix()}\n" for p in files))
    archive = out / f"{root.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder to write pcg-bundle-<version>/ and its .tar.gz into")
    p.add_argument("--platforms", default="aarch64,x86_64", help="comma-separated: aarch64, x86_64 (default both)")
    args = p.parse_args(argv)
    platforms = [x.strip() for x in args.platforms.split(",") if x.strip()]
    unknown = [x for x in platforms if x not in PLATFORM_TAGS]
    if unknown or not platforms:
        p.error(f"--platforms: {', '.join(unknown) or 'none given'}; choose from {', '.join(PLATFORM_TAGS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        root = make_bundle(args.out, platforms)
    except BundleError as exc:
        print(f"make_bundle: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    print(f"{root} ({size / 1e6:.0f} MB) and {root}.tar.gz: copy either to the box, then run: sh install.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
