"""What this install is: the package version and the bundled model's identity, for `--version`.

    add_version_flag(parser)     # every command: pcg-runtime [triage|export|model|erase], pcg-export, pcg-train
"""

from __future__ import annotations

import argparse
import json
import sys


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pcg-screen")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def bundled_model_id() -> str:
    """The bundled model's name, graph hash prefix and date, read from its manifest (no ONNX session)."""
    from runtime.inference import default_model_path
    from runtime.manifest import MANIFEST_KEY, ManifestError, metadata_entries

    path = default_model_path()
    try:
        manifest = json.loads(metadata_entries(path.read_bytes())[MANIFEST_KEY])
        return f"{manifest['model_name']} (graph {manifest['graph_sha256'][:12]}, created {manifest['created_utc'][:10]})"
    except (OSError, KeyError, ValueError, ManifestError) as exc:
        return f"unreadable ({path}: {exc})"


def version_line(prog: str) -> str:
    return f"{prog} {package_version()}; bundled model {bundled_model_id()}"


class _Version(argparse.Action):
    """--version, computed only when asked (it reads the bundled model's manifest)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line(parser.prog.split()[0]))
        sys.exit(0)


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_Version, help="print the package version and the bundled model's id, then exit")
