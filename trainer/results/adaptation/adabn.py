"""AdaBN on saved LODO models, held out properly: each held-out database is split in two halves
(seeded, stratified); BN statistics are re-estimated on N unlabelled recordings drawn from the
first half (natural prevalence, or only normal / only abnormal ones), and the model is scored on
the second half. Pooled AUROC over the four second halves."""
import json, sys, copy
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
CFG = TrainConfig(clip_frames=246, eval_crops=5)

def adapt(model, recs):
    m = copy.deepcopy(model)
    for layer in m.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.reset_running_stats(); layer.momentum = None; layer.train()
    with torch.no_grad():
        for s in range(0, len(recs), 16):
            crops = [evaluation_crops(e.longest(), 246, 5, 48) for e in recs[s:s+16]]
            x = torch.from_numpy(np.concatenate([c[0] for c in crops])); mk = torch.from_numpy(np.repeat(np.stack([c[1] for c in crops]), 5, axis=0))
            m.encode_sites(x, mk)
    return m.eval()

variants = ["none", "n10", "n25", "n50", "n100", "half", "normal25", "abnormal25"]
results = {}
for run in sys.argv[1:]:
    for split_seed in (0, 1):
        pooled = {v: [] for v in variants}
        for fold_dir in sorted(Path(run).glob("training-*")):
            ck = torch.load(fold_dir / "model.pt", weights_only=False)
            m = ScreeningModel(ModelConfig(**ck["model_config"])); m.load_state_dict(ck["model"]); m.eval()
            test = [by_id[i] for i in FoldOutcome.load(fold_dir).test_ids]
            labels = np.array([e.outcome for e in test])
            rng = np.random.default_rng(100 + split_seed)
            first = np.zeros(len(test), bool)
            for c in (0, 1):
                idx = rng.permutation(np.flatnonzero(labels == c)); first[idx[: len(idx) // 2]] = True
            ev = [test[i] for i in np.flatnonzero(~first)]; ev_labels = labels[~first]
            pool = np.flatnonzero(first)
            stats = MetadataStats.from_dict(ck["metadata_stats"])
            meta = encode_batch([e.demographics for e in ev], stats)
            a, b = ck["platt"]["a"], ck["platt"]["b"]
            for v in variants:
                if v == "none":
                    mm = m
                else:
                    if v == "half": chosen = pool
                    elif v[1:].isdigit(): chosen = rng.permutation(pool)[: int(v[1:])]
                    else:
                        c = 0 if v.startswith("normal") else 1
                        chosen = rng.permutation(pool[labels[pool] == c])[:25]
                    mm = adapt(m, [test[i] for i in chosen])
                p = metrics.apply_platt(predict(mm, ev, meta, CFG, torch.device("cpu"))["logits"], a, b)
                pooled[v].append((ev_labels, p, fold_dir.name))
        res = {v: metrics.auroc(np.concatenate([l for l, _, _ in x]), np.concatenate([p for _, p, _ in x])) for v, x in pooled.items()}
        per_db = {v: {n: round(metrics.auroc(l, p), 3) for l, p, n in x} for v, x in pooled.items()}
        results[f"{run}#split{split_seed}"] = {"pooled": res, "per_db": per_db}
        print(run, split_seed, {k: round(v, 3) for k, v in res.items()}, flush=True)
        print("   per db", per_db, flush=True)
Path("runs/s10/adabn.json").write_text(json.dumps(results, indent=1))
