"""Post hoc on saved LODO models: healthy-reference AdaBN, and centring the logits on the healthy
reference (each held-out database's normal recordings outside the scored part, 5-part cross-fitting)."""
import json, sys, copy
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, ".")
from runtime.dsp.config import FrontEndConfig
from trainer.crossval import load_labelled
from trainer.summary import FoldOutcome
from trainer.model import ModelConfig, ScreeningModel
from trainer.train import TrainConfig, predict
from trainer.adapt import adapt_batchnorm, adaptation_parts
from trainer import metrics
from runtime.metadata import MetadataStats, encode_batch

torch.set_num_threads(1)
examples, _, _ = load_labelled(Path("../shared/data/physionet2016"), "outcome", Path("runs/feature-cache"), FrontEndConfig())
by_id = {e.patient_id: e for e in examples}
CFG = TrainConfig(clip_frames=246, eval_crops=5)
variants = ("none", "centre", "zscore", "adabn", "adabn+centre", "adabn+zscore")
results = {}
for run in sys.argv[1:]:
    pooled = {v: [] for v in variants}
    for fold_dir in sorted(Path(run).glob("training-*")):
        ck = torch.load(fold_dir / "model.pt", weights_only=False)
        m = ScreeningModel(ModelConfig(**ck["model_config"])); m.load_state_dict(ck["model"]); m.eval()
        test = [by_id[i] for i in FoldOutcome.load(fold_dir).test_ids]
        labels = np.array([e.outcome for e in test])
        meta = encode_batch([e.demographics for e in test], MetadataStats.from_dict(ck["metadata_stats"]))
        a, b = ck["platt"]["a"], ck["platt"]["b"]
        plain = a * predict(m, test, meta, CFG, torch.device("cpu"))["logits"] + b
        out = {v: np.zeros(len(test)) for v in variants}
        for scored, refs in adaptation_parts(labels, "healthy", 0):
            out["none"][scored] = plain[scored]
            mu, sd = plain[refs].mean(), plain[refs].std() + 1e-6
            out["centre"][scored] = plain[scored] - mu
            out["zscore"][scored] = (plain[scored] - mu) / sd
            mm = adapt_batchnorm(m, [f for i in refs for f in test[i].longest() if f is not None], 246, 5)
            both = np.concatenate([scored, refs])
            z = a * predict(mm, [test[i] for i in both], meta[both], CFG, torch.device("cpu"))["logits"] + b
            zs, zr = z[: len(scored)], z[len(scored):]
            out["adabn"][scored] = zs
            out["adabn+centre"][scored] = zs - zr.mean()
            out["adabn+zscore"][scored] = (zs - zr.mean()) / (zr.std() + 1e-6)
        for v in variants:
            pooled[v].append((labels, out[v], fold_dir.name))
        print(fold_dir, {v: round(metrics.auroc(labels, out[v]), 3) for v in variants}, flush=True)
    res = {v: metrics.auroc(np.concatenate([l for l, _, _ in x]), np.concatenate([p for _, p, _ in x])) for v, x in pooled.items()}
    results[run] = res
    print(run, {k: round(v, 3) for k, v in res.items()}, flush=True)
Path("runs/s10/centre.json").write_text(json.dumps(results, indent=1))
