"""Who vouches for a model: Ed25519 signatures over the manifest, a pinned hash for the bundled model.

Everything that changes a decision is in the manifest (operating points, metadata statistics,
front-end, inference, calibration notes) or in the graph, whose SHA-256 the manifest states and
the runtime checks (runtime.manifest.verify_model_file). So signing the manifest's exact text
covers the graph too: changing weights and re-embedding a manifest with the new graph hash breaks
the signature, and so does editing a threshold.

    keys = generate_keypair(folder, "programme")        # pcg-export keygen: programme.key (0600), programme.pub
    signed = sign_model(model_bytes, keys.private_path)  # pcg-export --sign-key: adds metadata_props[SIGNATURE_KEY]
    trust = model_trust(model_bytes, manifest_text, signature_text, trusted_keys)

The signature entry (JSON in metadata_props[SIGNATURE_KEY]) carries the signer's public key, so any
box can tell a tampered file (the signature does not verify: always refused) from one signed by a
key it does not trust (refused unless the operator allows it explicitly). The bundled model needs
no key on the box: the SHA-256 of its whole file is pinned in the installed package
(runtime/models/default.onnx.sha256, rewritten by scripts/build_default_model.sh), so no private
key ever sits in git.

The `cryptography` package (PyCA; wheels for 64-bit ARM and x86-64) is imported only when a
signature is made or checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_KEY = "pcg_signature"
ALGORITHM = "ed25519"
_DOMAIN = b"pcg-screen model manifest v1\n"  # what is signed: this, then the manifest's exact text
PINNED_SUFFIX = ".sha256"


class SignatureError(ValueError):
    """A signature entry that is malformed, or a signature that does not verify (the message says which)."""


@dataclass(frozen=True)
class Trust:
    """Why a model may be used: "bundled" (pinned hash), "signed" (by key_id), or "unsigned"."""

    kind: str
    key_id: str | None = None
    trusted: bool = False  # bundled, or signed by a key the box lists

    def describe(self) -> str:
        if self.kind == "bundled":
            return "the bundled model (its SHA-256 is pinned in the installed package)"
        if self.kind == "signed":
            return f"signed by key {self.key_id} ({'trusted by this box' if self.trusted else 'NOT trusted by this box'})"
        return "UNSIGNED: nobody vouches for its manifest (thresholds, statistics) or graph"


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    public_key: str  # "ed25519:<base64 of the 32 raw bytes>", as box configurations list it
    key_id: str


def key_id(public_raw: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of "ed25519:<base64>" (a .pub file's line, or a configuration entry)."""
    algorithm, _, encoded = text.strip().partition(":")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, TypeError):
        raw = b""
    if algorithm != ALGORITHM or len(raw) != 32:
        raise SignatureError(f"{text.strip()[:60]!r} is not an Ed25519 public key (expected 'ed25519:' and 44 base64 characters)")
    return raw


def format_public_key(raw: bytes) -> str:
    return f"{ALGORITHM}:{base64.b64encode(raw).decode()}"


def generate_keypair(folder: Path, name: str = "programme") -> KeyPair:
    """A new Ed25519 key pair: <name>.key (PKCS#8 PEM, mode 0600: keep it off the boxes) and
    <name>.pub (one line, 'ed25519:...', for the boxes' trusted_keys). Refuses to overwrite."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} exists: a key is never overwritten (choose another --name or folder)")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_text(format_public_key(raw) + "\n")
    return KeyPair(private_path, public_path, format_public_key(raw), key_id(raw))


def _load_private(path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not a readable unencrypted private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key (make one with pcg-export keygen)")
    return key


def signature_entry(manifest_text: str, private_key_path: Path) -> str:
    """The JSON to store under SIGNATURE_KEY for a manifest text."""
    from cryptography.hazmat.primitives import serialization

    private = _load_private(private_key_path)
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signature = private.sign(_DOMAIN + manifest_text.encode("utf-8"))
    return json.dumps({"algorithm": ALGORITHM, "key_id": key_id(raw), "public_key": format_public_key(raw),
                       "signature": base64.b64encode(signature).decode()}, sort_keys=True)


def sign_model(model_bytes: bytes, private_key_path: Path) -> bytes:
    """`model_bytes` (with its manifest embedded) signed: metadata_props gains SIGNATURE_KEY."""
    from runtime.manifest import MANIFEST_KEY, embed_metadata, metadata_entries

    manifest_text = metadata_entries(model_bytes).get(MANIFEST_KEY)
    if manifest_text is None:
        raise SignatureError("the model has no manifest to sign; embed it first (pcg-export does)")
    return embed_metadata(model_bytes, SIGNATURE_KEY, signature_entry(manifest_text, private_key_path))


def verify_signature(manifest_text: str, entry_text: str) -> str:
    """The signer's key id, once the signature over `manifest_text` verifies; SignatureError otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        entry = json.loads(entry_text)
        public_raw = parse_public_key(entry["public_key"])
        signature = base64.b64decode(entry["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"the model's signature entry is malformed ({exc}); re-export and sign it") from None
    if entry.get("algorithm") != ALGORITHM or entry.get("key_id") != key_id(public_raw):
        raise SignatureError("the model's signature entry names another algorithm or key than it holds; the file was altered")
    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(signature, _DOMAIN + manifest_text.encode("utf-8"))
    except InvalidSignature:
        raise SignatureError(f"the signature by key {key_id(public_raw)} does not match the model's manifest: the manifest "
                             "(thresholds, statistics, graph hash) was changed after signing. Use the original file") from None
    return key_id(public_raw)


def pinned_hash(model_path: Path) -> str | None:
    """The SHA-256 pinned beside a packaged model (<model>.sha256), or None."""
    pin = Path(str(model_path) + PINNED_SUFFIX)
    try:
        text = pin.read_text().split()[0]
    except (OSError, IndexError):
        return None
    return text if len(text) == 64 else None


def model_trust(model_bytes: bytes, manifest_text: str, entry_text: str | None, trusted_keys: set[str],
                pinned: str | None = None) -> Trust:
    """Trust of a model file: its bytes match the pinned hash (bundled), or its signature verifies
    (signed, trusted when its key id is in `trusted_keys`), or it has none (unsigned). A signature
    that does not verify raises SignatureError: a tampered file is never used."""
    if pinned is not None and hashlib.sha256(model_bytes).hexdigest() == pinned:
        return Trust("bundled", trusted=True)
    if entry_text is None:
        return Trust("unsigned")
    signer = verify_signature(manifest_text, entry_text)
    return Trust("signed", key_id=signer, trusted=signer in trusted_keys)
