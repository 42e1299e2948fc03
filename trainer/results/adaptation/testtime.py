"""Test-time variants on saved LODO models: eval crops 5/15/30 and AdaBN (BN statistics re-estimated
on the held-out database's unlabelled crops)."""
import json, sys
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, ".")
from runtime.dsp.config import FrontEndConfig
from trainer.crossval import load_labelled
from trainer.summary import FoldOutcome
from trainer.model import ModelConfig, ScreeningModel
from trainer.train import TrainConfig, predict
from trainer.crops import evaluation_crops
from trainer import metrics
from runtime.metadata import MetadataStats, encode_batch

torch.set_num_threads(1)
examples, _, _ = load_labelled(Path("../shared/data/physionet2016"), "outcome", Path("runs/feature-cache"), FrontEndConfig())
by_id = {e.patient_id: e for e in examples}
results = {}
for run in sys.argv[1:]:
    pooled = {}
    for fold_dir in sorted(Path(run).glob("training-*")):
        ck = torch.load(fold_dir / "model.pt", weights_only=False)
        mc = ModelConfig(**ck["model_config"]); m = ScreeningModel(mc); m.load_state_dict(ck["model"]); m.eval()
        out = FoldOutcome.load(fold_dir)
        test = [by_id[i] for i in out.test_ids]
        stats = MetadataStats.from_dict(ck["metadata_stats"]) if hasattr(MetadataStats, "from_dict") else MetadataStats.fit([e.demographics for e in test])
        meta = encode_batch([e.demographics for e in test], stats)
        a, b = ck["platt"]["a"], ck["platt"]["b"]
        labels = np.array([e.outcome for e in test])
        for k in (5, 15, 30):
            cfg = TrainConfig(clip_frames=246, eval_crops=k)
            p = metrics.apply_platt(predict(m, test, meta, cfg, torch.device("cpu"))["logits"], a, b)
            pooled.setdefault(f"crops{k}", []).append((labels, p))
        # AdaBN: cumulative BN statistics over the held-out database's 5 evaluation crops per recording
        for layer in m.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.reset_running_stats(); layer.momentum = None
        with torch.no_grad():
            for layer in m.modules():
                if isinstance(layer, torch.nn.BatchNorm2d): layer.train()
            for s in range(0, len(test), 16):
                chunk = test[s:s+16]
                crops = [evaluation_crops(e.longest(), 246, 5, 48) for e in chunk]
                x = torch.from_numpy(np.concatenate([c[0] for c in crops])); mk = torch.from_numpy(np.repeat(np.stack([c[1] for c in crops]), 5, axis=0))
                m.encode_sites(x, mk)
        m.eval()
        lg = predict(m, test, meta, TrainConfig(clip_frames=246, eval_crops=5), torch.device("cpu"))["logits"]
        # Platt was fitted to the unadapted model: refit-free variant uses the raw logits' ranking per db
        pooled.setdefault("adabn", []).append((labels, metrics.apply_platt(lg, a, b)))
        print(fold_dir, {k: round(metrics.auroc(*v[-1]), 3) for k, v in pooled.items()}, flush=True)
    results[run] = {k: metrics.auroc(np.concatenate([l for l, _ in v]), np.concatenate([p for _, p in v])) for k, v in pooled.items()}
    print(run, {k: round(v, 3) for k, v in results[run].items()}, flush=True)
Path("runs/s10/testtime.json").write_text(json.dumps(results, indent=1))
