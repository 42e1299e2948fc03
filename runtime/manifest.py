"""The model manifest (DESIGN.md contract 5): what a model file must say about itself.

A manifest travels as JSON inside the ONNX file (ModelProto.metadata_props, key MANIFEST_KEY), so
ONNX Runtime reads it through the session's model metadata and the runtime needs no onnx package.
A TensorRT engine carries the same JSON in a sidecar file. `graph_sha256` is the SHA-256 of the
serialized GraphProto (ModelProto field 7); metadata_props is field 14, so embedding the manifest
does not change the hash, while any change to the graph does.

The runtime refuses a model whose manifest it cannot honour or whose hash does not match
(`verify_model_file`), with a message that says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from runtime.metadata import METADATA_FEATURES
from runtime.sites import SITES

SCHEMA_VERSION = 1
MANIFEST_KEY = "pcg_manifest"
DISCLAIMER = "Screening aid for research use only; not a diagnosis. A clinician decides on referral."

_GRAPH_FIELD = 7
_METADATA_PROPS_FIELD = 14


class ManifestError(ValueError):
    """A model's manifest is missing, malformed, or asks for something this runtime cannot do."""


@dataclass(frozen=True)
class OperatingPoint:
    """A named decision threshold on the (calibrated) outcome probability, chosen on validation data."""

    threshold: float
    description: str = ""
    # Out-of-fold figures at this threshold, labelled as cross-validated in `metrics` of the manifest.
    sensitivity: float | None = None
    specificity: float | None = None


@dataclass(frozen=True)
class ModelManifest:
    """Everything the runtime needs to reproduce what was evaluated, and the model's provenance."""

    model_name: str
    task: str  # "outcome" or "murmur"
    architecture: str  # "primary" | "mlp" | "hyper" | "hyperfusion"
    frontend: dict  # runtime.dsp FrontEndConfig as a dict (its to_json)
    frontend_hash: str
    inputs: dict  # input name -> {"shape": [...], "dtype": "float32"}; dynamic axes named
    outputs: dict  # output name -> {"shape": [...], "meaning": "..."}
    class_names: dict  # e.g. {"outcome": ["Abnormal", "Normal"], "murmur": ["Present", "Unknown", "Absent"]}
    operating_points: dict[str, OperatingPoint]  # e.g. "cost_optimal", "high_sensitivity"
    default_operating_point: str
    inference: dict  # crop frames, crop hop, aggregation, fold ensemble, calibration: exactly
    training_data: dict  # dataset name, root, counts, folds, grouping, date range
    metrics: dict  # cross-validated (out-of-fold) metrics, each block labelled with how it was measured
    created_utc: str
    code_version: str
    site_order: tuple[str, ...] = SITES
    sites_trained: tuple[str, ...] = SITES  # sites that had data in training
    metadata_features: tuple[str, ...] = ()  # () when the model ignores demographics
    metadata_stats: dict = field(default_factory=dict)  # MetadataStats.to_dict(); {} when unused
    graph_sha256: str = ""
    commands: tuple[str, ...] = ()  # the exact commands that made the model
    disclaimer: str = DISCLAIMER
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"model manifest is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ManifestError("model manifest must be a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"model manifest schema version {version!r} is not supported by this runtime (it reads version "
                f"{SCHEMA_VERSION}); use a pcg-screen release that matches the model, or re-export the model"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted(f.name for f in fields(cls) if f.name not in data and _required(f))
        if unknown or missing:
            raise ManifestError(f"model manifest fields: missing {missing}, unknown {unknown}")
        try:
            data["operating_points"] = {k: OperatingPoint(**v) for k, v in data["operating_points"].items()}
        except (AttributeError, TypeError) as exc:
            raise ManifestError(f"model manifest operating_points malformed: {exc}") from None
        for name in ("site_order", "sites_trained", "metadata_features", "commands"):
            if name in data:
                data[name] = tuple(data[name])
        manifest = cls(**data)
        manifest.check()
        return manifest

    def check(self) -> None:
        """Raise ManifestError unless this runtime can honour the manifest."""
        if tuple(self.site_order) != SITES:
            raise ManifestError(f"model expects site order {list(self.site_order)}, this runtime uses {list(SITES)}")
        if not set(self.sites_trained) <= set(SITES):
            raise ManifestError(f"model was trained on unknown sites {sorted(set(self.sites_trained) - set(SITES))}")
        if self.metadata_features and tuple(self.metadata_features) != METADATA_FEATURES:
            raise ManifestError(
                "model expects a metadata encoding this runtime does not produce: "
                f"{list(self.metadata_features)} vs {list(METADATA_FEATURES)}"
            )
        if self.default_operating_point not in self.operating_points:
            raise ManifestError(
                f"default operating point {self.default_operating_point!r} is not among "
                f"{sorted(self.operating_points)}"
            )
        for name, point in self.operating_points.items():
            if not 0.0 <= point.threshold <= 1.0:
                raise ManifestError(f"operating point {name!r} has threshold {point.threshold} outside [0, 1]")
        if len(self.graph_sha256) != 64:
            raise ManifestError("model manifest has no graph_sha256; re-export the model with pcg-export")

    @property
    def uses_metadata(self) -> bool:
        return bool(self.metadata_features)

    @property
    def missing_sites(self) -> tuple[str, ...]:
        """Sites the runtime may record but the model never saw in training."""
        return tuple(s for s in SITES if s not in self.sites_trained)


def _required(f) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


# --- a few lines of protobuf reading: enough to find ModelProto fields without the onnx package ---


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ManifestError("model file is truncated (varint runs past the end)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ManifestError("model file is not a valid protobuf (varint too long)")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _top_level_fields(buf: bytes) -> list[tuple[int, int, int, int]]:
    """(field number, wire type, start of field incl. key, end) for each top-level protobuf field."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ManifestError(f"model file is not a valid ONNX protobuf (wire type {wire} at byte {start})")
        if pos > len(buf):
            raise ManifestError("model file is truncated")
        out.append((number, wire, start, pos))
    return out


def _payload(buf: bytes, start: int) -> bytes:
    _, pos = _read_varint(buf, start)
    length, pos = _read_varint(buf, pos)
    return buf[pos : pos + length]


def graph_sha256(model_bytes: bytes) -> str:
    """SHA-256 (hex) of the serialized GraphProto, ModelProto field 7."""
    graphs = [f for f in _top_level_fields(model_bytes) if f[0] == _GRAPH_FIELD and f[1] == 2]
    if len(graphs) != 1:
        raise ManifestError(f"model file has {len(graphs)} graphs; expected exactly one ONNX graph")
    return hashlib.sha256(_payload(model_bytes, graphs[0][2])).hexdigest()


def _string_entry(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    body = b"\x0a" + _encode_varint(len(k)) + k + b"\x12" + _encode_varint(len(v)) + v
    return _encode_varint(_METADATA_PROPS_FIELD << 3 | 2) + _encode_varint(len(body)) + body


def _entry_key(entry: bytes) -> str | None:
    for number, wire, start, _end in _top_level_fields(entry):
        if number == 1 and wire == 2:
            return _payload(entry, start).decode("utf-8", errors="replace")
    return None


def metadata_entries(model_bytes: bytes) -> dict[str, str]:
    """The model's metadata_props (ModelProto field 14) as key -> value, read without onnx."""
    entries = {}
    for number, wire, start, _end in _top_level_fields(model_bytes):
        if number == _METADATA_PROPS_FIELD and wire == 2:
            entry = _payload(model_bytes, start)
            values = {n: _payload(entry, s).decode("utf-8", errors="replace")
                      for n, w, s, _e in _top_level_fields(entry) if w == 2}
            if 1 in values:
                entries[values[1]] = values.get(2, "")
    return entries


def embed_metadata(model_bytes: bytes, key: str, value: str | None, *, drop: tuple[str, ...] = ()) -> bytes:
    """Model bytes with metadata_props[key] = value (None: removed) and the entries named in `drop`
    removed; the graph and every other field stay byte-identical."""
    removed = {key, *drop}
    kept = [
        model_bytes[start:end]
        for number, wire, start, end in _top_level_fields(model_bytes)
        if not (number == _METADATA_PROPS_FIELD and wire == 2 and _entry_key(_payload(model_bytes, start)) in removed)
    ]
    return b"".join(kept) + (_string_entry(key, value) if value is not None else b"")


def embed_manifest(model_bytes: bytes, manifest: ModelManifest) -> bytes:
    """Model bytes with the manifest (graph hash filled in) as metadata_props[MANIFEST_KEY].

    Any earlier manifest entry is replaced, and any signature with it (it vouched for the old
    manifest: the model is unsigned until runtime.signing.sign_model signs it again); the graph and
    every other field stay byte-identical.
    """
    from dataclasses import replace

    from runtime.signing import SIGNATURE_KEY

    manifest = replace(manifest, graph_sha256=graph_sha256(model_bytes))
    manifest.check()
    return embed_metadata(model_bytes, MANIFEST_KEY, manifest.to_json(), drop=(SIGNATURE_KEY,))


def manifest_from_session(session) -> ModelManifest:
    """The manifest of an onnxruntime.InferenceSession's model."""
    meta = session.get_modelmeta().custom_metadata_map
    if MANIFEST_KEY not in meta:
        raise ManifestError(f"model has no {MANIFEST_KEY!r} metadata; only models made by pcg-export can be used")
    return ModelManifest.from_json(meta[MANIFEST_KEY])


def verify_model_file(path: str | Path, session=None) -> ModelManifest:
    """Read the manifest of the ONNX model at `path` and check its graph hash; raise ManifestError.

    With `session` (an onnxruntime.InferenceSession of the same file) the manifest is read through
    ONNX Runtime's model metadata; without, one is created on the CPU.
    """
    path = Path(path)
    try:
        model_bytes = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the model file: {exc.strerror}") from None
    return verify_model_bytes(model_bytes, path, session)


def verify_model_bytes(model_bytes: bytes, path: str | Path, session=None) -> ModelManifest:
    """verify_model_file for bytes already read (`path` names them in messages); `session`, when
    given, must have been made from these same bytes."""
    if session is None:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            raise ManifestError(f"{path}: ONNX Runtime cannot load the model: {exc}") from None
    try:
        manifest = manifest_from_session(session)
        actual = graph_sha256(model_bytes)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None
    if actual != manifest.graph_sha256:
        raise ManifestError(
            f"{path}: the model graph does not match its manifest (graph SHA-256 {actual[:12]}..., manifest says "
            f"{manifest.graph_sha256[:12]}...); the file was modified after export. Re-export it or use the original."
        )
    return manifest
