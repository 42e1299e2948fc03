"""The model in the field (DESIGN.md contracts 4 and 5): a checked ONNX file, one session, predictions.

    model = Model.load()                      # the bundled default model (runtime/models/default.onnx)
    model = Model.load(path, backend="auto")  # TensorRT, then CUDA, then CPU: whichever this box has
    prediction = model.predict(patient_tensor, demographics)

Loading refuses (ModelError, with the reason) a file whose manifest is missing, of another schema or
front-end, or whose graph does not match the SHA-256 its manifest states. The session runs one
intra-op and one inter-op thread, sequentially, without spinning, so a field box's other work (the
live front-end, the UI) keeps its core.

The inference procedure is the manifest's (`inference`): per present site the recording the patient
tensor holds (runtime.dsp.patient keeps the longest), `n_crops` windows of `clip_frames` frames
starting at round(linspace(0, T - clip_frames, n_crops)) (all at 0 when T <= clip_frames), a
recording shorter than a crop tiled end to start; crop averaging, the fold ensemble and calibration
are inside the graph. `patient_crops` is that rule; a test proves it equal to the trainer's.

TensorRT: through ONNX Runtime's TensorrtExecutionProvider, which builds an engine on first use and
caches it under cache_dir/<gpu>-<tensorrt version>-<graph sha256[:16]>, so a new GPU, TensorRT or
model never reuses a stale engine. `provider` says what ONNX Runtime actually used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.dsp.config import FrontEndConfig
from runtime.dsp.patient import PatientTensor
from runtime.manifest import MANIFEST_KEY, ManifestError, ModelManifest, verify_model_bytes
from runtime.signing import SIGNATURE_KEY, SignatureError, Trust, model_trust, pinned_hash
from runtime.metadata import METADATA_DIM, MetadataStats, encode_metadata
from runtime.records import Demographics
from runtime.sites import GUIDED_SITES, SITES

BACKENDS = ("auto", "cpu", "tensorrt")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
INPUT_NAMES = ("x", "site_mask", "metadata")
REQUIRED_OUTPUTS = ("outcome_probability", "outcome_logit", "site_weights")
# ONNX Runtime's QDQ propagation moves an int8 model's Q/DQ pairs across Relu and MaxPool, which turns
# MaxPool into ONNX Runtime's int8 MaxPool: 2.5 ms against 0.29 ms in float (export/STATUS.md). With it
# off, an int8 model runs its convolutions in int8 and Relu/MaxPool in float; float models have no
# Q/DQ nodes, so it changes nothing for them.
DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)
MAX_BATCH = 16  # patients per session run: bounds memory (16 x 5 crops x 5 sites x 48 x 246 floats = 24 MB)


class ModelError(Exception):
    """A model file cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class Prediction:
    """One patient's model output."""

    probability: float  # calibrated probability that the patient should be referred
    logit: float  # logit of `probability`
    site_contributions: dict[str, float]  # present site -> attention weight (site_weights output), SITES order
    murmur: dict[str, float] | None  # murmur class -> probability, None when the model has no murmur head


def default_model_path() -> Path:
    """The bundled default model shipped inside the package."""
    return Path(__file__).resolve().parent / "models" / "default.onnx"


def default_cache_dir() -> Path:
    """Where TensorRT engines are cached when Model.load gets no cache_dir."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pcg-screen" / "tensorrt"


def patient_crops(tensor: PatientTensor, clip_frames: int, n_crops: int) -> tuple[np.ndarray, np.ndarray]:
    """The model input for one patient: x float32 [n_crops, S, F, clip_frames], site_mask float32 [S].

    Each present site's real frames (time_mask) give n_crops windows (see the module docstring);
    absent sites stay zeros with site_mask 0, and padding never enters a crop.
    """
    n_sites, n_freq, _ = tensor.x.shape
    x = np.zeros((n_crops, n_sites, n_freq, clip_frames), dtype=np.float32)
    for s in np.flatnonzero(tensor.site_mask):
        frames = tensor.x[s][:, np.asarray(tensor.time_mask[s], dtype=bool)]
        n_frames = frames.shape[1]
        if n_frames == 0:
            raise ValueError(f"site {SITES[s]} is marked present but has no frames")
        if n_frames <= clip_frames:
            frames = np.tile(frames, (1, -(-clip_frames // n_frames)))
            starts = np.zeros(n_crops, dtype=np.int64)
        else:
            starts = np.round(np.linspace(0, n_frames - clip_frames, n_crops)).astype(np.int64)
        for k, start in enumerate(starts):
            x[k, s] = frames[:, start : start + clip_frames]
    return x, np.asarray(tensor.site_mask, dtype=np.float32)


def session_options() -> ort.SessionOptions:
    """One intra-op and one inter-op thread, sequential execution, no spinning, no memory arena."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # no memory arena: with the children's model warmed up at start (Model.warm_up) the arena held
    # its buffers through the whole recording, peak RSS 150 MB against 137 MB without it (11 ms slower)
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def gpu_name() -> str | None:
    """The first NVIDIA GPU's model name (driver's /proc entry, or a Jetson's device tree), else None."""
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    jetson = Path("/proc/device-tree/model")
    if jetson.is_file():
        return jetson.read_bytes().rstrip(b"\0").decode(errors="replace").strip() or None
    return None


def tensorrt_version() -> str | None:
    """The TensorRT version ONNX Runtime will load: the tensorrt package's, else libnvinfer's; None if absent."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        pass
    library = ctypes.util.find_library("nvinfer")
    if library is None:
        return None
    try:
        code = ctypes.CDLL(library).getInferLibVersion()
    except (OSError, AttributeError):
        return None
    # NV_TENSORRT_VERSION: major * 10000 + minor * 100 + patch from TensorRT 10, major * 1000 + ... before
    major, rest = (code // 10000, code % 10000) if code >= 100000 else (code // 1000, code % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def _path_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def engine_cache_path(cache_dir: Path, gpu: str, trt_version: str, graph_sha256: str) -> Path:
    """cache_dir/<gpu>-<tensorrt version>-<graph sha256[:16]>: one folder per GPU, TensorRT and model."""
    return Path(cache_dir) / f"{_path_part(gpu)}-{_path_part(trt_version)}-{graph_sha256[:16]}"


def provider_plan(backend: str, available: Sequence[str], trt_cache: Path | None) -> list:
    """ONNX Runtime's providers argument for `backend` given the providers this onnxruntime offers.

    auto: TensorRT (with its engine cache), then CUDA, then CPU, each only where available.
    tensorrt: the same, but TensorRT must be available. cpu: CPU only.
    """
    if backend not in BACKENDS:
        raise ModelError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "cpu":
        return [CPU]
    if backend == "tensorrt" and TENSORRT not in available:
        raise ModelError(
            f"backend 'tensorrt': this onnxruntime has no {TENSORRT} (it offers {', '.join(available)}); install the "
            "onnxruntime-gpu build for this box with TensorRT (docs/deploy-jetson.md) or use backend 'cpu'"
        )
    plan: list = []
    if TENSORRT in available and trt_cache is not None:
        plan.append((TENSORRT, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(trt_cache),
                                "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(trt_cache)}))
    if CUDA in available:
        plan.append(CUDA)
    plan.append(CPU)
    return plan


def _check_procedure(manifest: ModelManifest, session: ort.InferenceSession) -> tuple[FrontEndConfig, int, int]:
    """The front-end config, n_crops and clip_frames the manifest asks for, checked against this runtime."""
    try:
        frontend = FrontEndConfig.from_dict(manifest.frontend)
    except ValueError as err:
        raise ModelError(f"the model's front-end config cannot be honoured by this runtime: {err}") from None
    if frontend.config_hash() != manifest.frontend_hash:
        raise ModelError(
            f"front-end config hash mismatch: the model was trained on features with hash {manifest.frontend_hash[:16]}..., "
            f"this runtime computes {frontend.config_hash()[:16]}... from the same config; its features would differ from "
            "training. Use the pcg-screen release the model was exported with, or re-export the model"
        )
    try:
        n_crops, clip_frames = int(manifest.inference["n_crops"]), int(manifest.inference["clip_frames"])
    except (KeyError, TypeError, ValueError):
        raise ModelError("the model's manifest does not state its crops (inference.n_crops, inference.clip_frames)") from None
    if clip_frames != frontend.clip_frames or n_crops < 1:
        raise ModelError(f"the manifest's crops ({n_crops} x {clip_frames} frames) do not fit its front-end "
                         f"({frontend.clip_frames} frames per crop)")
    inputs = {i.name: i.shape for i in session.get_inputs()}
    expected = [n_crops, len(SITES), frontend.n_freq, clip_frames]
    if set(inputs) != set(INPUT_NAMES) or list(inputs["x"][1:]) != expected:
        raise ModelError(f"the model's inputs {inputs} are not x [batch, {', '.join(map(str, expected))}], site_mask, metadata")
    outputs = {o.name for o in session.get_outputs()}
    if missing := [n for n in REQUIRED_OUTPUTS if n not in outputs]:
        raise ModelError(f"the model lacks the outputs {missing}")
    return frontend, n_crops, clip_frames


class Model:
    """An ONNX Runtime session of a verified model file and the manifest that says how to feed it."""

    def __init__(self, session: ort.InferenceSession, manifest: ModelManifest, path: Path, trust: Trust | None = None):
        self.session, self.manifest, self.path = session, manifest, path
        self.trust = trust or Trust("unsigned")  # who vouches for it (runtime.signing); the box's policy decides
        self.provider = session.get_providers()[0]  # the first provider ONNX Runtime kept is the one in use
        self.frontend, self.n_crops, self.clip_frames = _check_procedure(manifest, session)
        self.metadata_stats = MetadataStats.from_dict(manifest.metadata_stats) if manifest.uses_metadata else None
        self._outputs = [o.name for o in session.get_outputs()]

    @property
    def sites_trained(self) -> tuple[str, ...]:
        return tuple(self.manifest.sites_trained)

    @property
    def uses_metadata(self) -> bool:
        return self.manifest.uses_metadata

    @classmethod
    def load(cls, path: str | Path | None = None, backend: str = "auto", cache_dir: str | Path | None = None,
             trusted_keys: frozenset[str] | set[str] = frozenset()) -> Model:
        """Open and verify the model at `path` (default: the bundled model) on `backend`; ModelError if
        refused. The file is read once: the hash check, the signature check and the session all see
        the same bytes. `trust` says who vouches for it: the pinned bundled model, a signature (by a
        key in `trusted_keys` or not), or nobody; a signature that does not verify is refused here.
        Whether an unsigned or untrusted model may screen is the box's decision (runtime.cli)."""
        path = Path(path) if path is not None else default_model_path()
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        try:
            model_bytes = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the model file: {exc.strerror}") from None
        available = ort.get_available_providers()
        if backend == "cpu" or (backend == "auto" and not {TENSORRT, CUDA} & set(available)):
            session = cls._session(path, model_bytes, [CPU])
            manifest = cls._verify(path, model_bytes, session)
        else:
            manifest = cls._verify(path, model_bytes, None)  # before a GPU session: an engine build takes minutes
            gpu, trt = gpu_name(), tensorrt_version()
            cache = None
            if TENSORRT in available:
                cache = engine_cache_path(Path(cache_dir) if cache_dir else default_cache_dir(),
                                          gpu or "unknown-gpu", trt or "unknown-tensorrt", manifest.graph_sha256)
                cache.mkdir(parents=True, exist_ok=True)
            session = cls._session(path, model_bytes, provider_plan(backend, available, cache))
            if backend == "tensorrt" and session.get_providers()[0] != TENSORRT:
                raise ModelError(f"backend 'tensorrt': ONNX Runtime could not start {TENSORRT} here (it fell back to "
                                 f"{session.get_providers()[0]}); check CUDA and TensorRT libraries (docs/deploy-jetson.md)")
        meta = session.get_modelmeta().custom_metadata_map
        try:
            trust = model_trust(model_bytes, meta[MANIFEST_KEY], meta.get(SIGNATURE_KEY), set(trusted_keys),
                                pinned=pinned_hash(default_model_path()))
        except SignatureError as err:
            raise ModelError(f"model refused: {path}: {err}") from None
        return cls(session, manifest, path, trust)

    @staticmethod
    def _session(path: Path, model_bytes: bytes, providers: list) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(model_bytes, sess_options=session_options(), providers=providers,
                                        disabled_optimizers=list(DISABLED_OPTIMIZERS))
        except Exception as exc:  # onnxruntime raises several unrelated exception types
            raise ModelError(f"{path}: ONNX Runtime cannot load the model: {exc}") from None

    @staticmethod
    def _verify(path: Path, model_bytes: bytes, session: ort.InferenceSession | None) -> ModelManifest:
        try:
            return verify_model_bytes(model_bytes, path, session)
        except ManifestError as err:
            raise ModelError(f"model refused: {err}") from None

    def warm_up(self) -> None:
        """One run on silence shaped like a screening: the guided sites for a model that fuses them,
        one unknown-location site for a model that scores sites alone. ONNX Runtime sizes its
        buffers on a session's first run of a shape, so without this the first child's decision
        is the slowest (benchmarks/runtime.py screens one patient per fresh process). A screening
        box calls it once, when it starts."""
        alone = set(self.manifest.sites_trained) == {SITES[-1]}  # the unknown-location slot only (runtime.triage)
        present = [SITES[-1]] if alone else [s for s in GUIDED_SITES if s in self.manifest.sites_trained]
        x = np.zeros((1, self.n_crops, len(SITES), self.frontend.n_freq, self.clip_frames), dtype=np.float32)
        mask = np.array([[1.0 if s in present else 0.0 for s in SITES]], dtype=np.float32)
        self.session.run(self._outputs, {"x": x, "site_mask": mask, "metadata": np.zeros((1, METADATA_DIM), dtype=np.float32)})

    def predict(self, tensor: PatientTensor, demographics: Demographics | None = None) -> Prediction:
        """One patient's prediction; demographics None (or fields None) means unknown."""
        return self.predict_batch([tensor], [demographics])[0]

    def predict_batch(self, tensors: Sequence[PatientTensor],
                      demographics: Sequence[Demographics | None] | None = None) -> list[Prediction]:
        """Predictions for many patients, in order; `demographics` aligned with `tensors` (None: all unknown)."""
        if demographics is None:
            demographics = [None] * len(tensors)
        if len(demographics) != len(tensors):
            raise ValueError(f"{len(tensors)} patient tensors but {len(demographics)} demographics")
        predictions: list[Prediction] = []
        for start in range(0, len(tensors), MAX_BATCH):
            chunk = range(start, min(start + MAX_BATCH, len(tensors)))
            predictions += self._run([tensors[i] for i in chunk], [demographics[i] for i in chunk])
        return predictions

    def _run(self, tensors: list[PatientTensor], demographics: list[Demographics | None]) -> list[Prediction]:
        for t in tensors:
            if t.x.shape[:2] != (len(SITES), self.frontend.n_freq):
                raise ValueError(f"patient tensor of shape {t.x.shape}; this model takes [{len(SITES)}, "
                                 f"{self.frontend.n_freq}, frames] made with its front-end config (model.frontend)")
        crops = [patient_crops(t, self.clip_frames, self.n_crops) for t in tensors]
        if self.metadata_stats is None:
            metadata = np.zeros((len(tensors), METADATA_DIM), dtype=np.float32)
        else:
            metadata = np.stack([encode_metadata(d or Demographics(), self.metadata_stats) for d in demographics])
        feeds = {"x": np.stack([c[0] for c in crops]), "site_mask": np.stack([c[1] for c in crops]), "metadata": metadata}
        out = dict(zip(self._outputs, self.session.run(self._outputs, feeds)))
        murmur_names = self.manifest.class_names.get("murmur", [])
        predictions = []
        for b, t in enumerate(tensors):
            murmur = out.get("murmur_probabilities")
            predictions.append(Prediction(
                probability=float(out["outcome_probability"][b]),
                logit=float(out["outcome_logit"][b]),
                site_contributions={s: float(out["site_weights"][b, i]) for i, s in enumerate(SITES) if t.site_mask[i]},
                murmur=None if murmur is None else dict(zip(murmur_names, map(float, murmur[b]))),
            ))
        return predictions
