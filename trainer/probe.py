"""What a trained run's demographics do, measured on its own saved fold models (no retraining).

    python -m trainer.probe runs/NAME --data ../shared/data/circor [--out trainer/results/NAME]

For every fold, the fold's model.pt scores its own test patients again, first as trained, then with
one demographic field set to unknown for every patient (age group, sex, height, weight, pregnancy,
then all five): the drop in pooled AUROC and the rise in cost say which fields carry the result.
For a hypernetwork model it also measures the generated part of the final layer: the logit that
the static layer alone would give and the generated delta's contribution, per patient, so
"the delta varies with the demographics" is a number (its spread across patients against the
static logit's), not a belief.
Writes probe.json and probe.md into --out (default: the run folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from runtime.metadata import MetadataStats, encode_batch
from trainer import metrics
from trainer.examples import DataError

FIELDS = {"age group": ("age_group",), "sex": ("sex",), "height": ("height_cm",), "weight": ("weight_kg",),
          "pregnancy": ("pregnant",), "all five": ("age_group", "sex", "height_cm", "weight_kg", "pregnant")}


def masked(demographics, names: tuple[str, ...]):
    return replace(demographics, **{n: None for n in names})


def _score(y, scores, referred, murmur=None, murmur_labels=None) -> dict:
    counts = metrics.binary_counts(y, referred)
    result = {"auroc": metrics.auroc(y, scores), "cost": metrics.outcome_cost(*counts),
              **{k: v for k, v in metrics.threshold_metrics(y, referred.astype(np.float64), 0.5).items() if k in ("sensitivity", "specificity")}}
    if murmur is not None:
        result["murmur_weighted_accuracy"] = metrics.murmur_metrics(murmur_labels, murmur)["weighted_accuracy"]
    return result


def probe_run(run: Path, data: Path, cache: Path | None) -> dict:
    import torch

    from runtime.dsp.config import FrontEndConfig
    from trainer.crossval import load_labelled
    from trainer.inference import load_checkpoint
    from trainer.train import TrainConfig, predict

    body = json.loads((run / "metrics.json").read_text())
    task = body["settings"]["train"]["task"]
    train = body["settings"]["train"]
    config = TrainConfig(task=task, clip_frames=train["clip_frames"], eval_crops=train["eval_crops"], batch_size=train["batch_size"])
    examples, _, _ = load_labelled(data, task, cache if cache is not None else Path("runs") / "feature-cache", FrontEndConfig())
    by_id = {e.patient_id: e for e in examples}
    folds = sorted(p.parent for p in run.glob("*/model.pt"))
    if not folds:
        raise DataError(f"{run}: no fold model.pt to probe")
    variants = {"as trained": ()} | FIELDS
    collected = {name: {"y": [], "scores": [], "referred": [], "murmur": [], "murmur_labels": []} for name in variants}
    delta = {"static": [], "delta": [], "ids": []}
    torch.set_num_threads(1)
    for fold in folds:
        model, checkpoint = load_checkpoint(fold / "model.pt")
        stats = MetadataStats.from_dict(checkpoint["metadata_stats"])
        a, b = checkpoint["platt"]["a"], checkpoint["platt"]["b"]
        threshold = checkpoint["thresholds"]["cost_optimal"]
        ids = json.loads((fold / "outcome.json").read_text())["test_ids"]
        test = [by_id[i] for i in ids]
        for name, names in variants.items():
            meta = encode_batch([masked(e.demographics, names) for e in test], stats)
            captured = []
            hook = None
            if name == "as trained" and hasattr(model.final, "generator"):
                hook = model.final.register_forward_hook(lambda module, inputs, output: captured.append((inputs[0].detach(), output.detach())))
            prediction = predict(model, test, meta, config, torch.device("cpu"))
            if hook is not None:
                hook.remove()
                pooled = torch.cat([c[0] for c in captured])
                full = torch.cat([c[1] for c in captured])[:, 0]
                with torch.no_grad():
                    static = (pooled @ model.final.static.weight.t() + model.final.static.bias)[:, 0]
                k = config.eval_crops
                delta["static"].append(static.reshape(-1, k).mean(dim=1).numpy())
                delta["delta"].append((full - static).reshape(-1, k).mean(dim=1).numpy())
                delta["ids"].extend(ids)
            scores = a * prediction["logits"] + b
            c = collected[name]
            c["y"].append(np.array([e.outcome if task != "murmur" else int(e.murmur <= 1) for e in test]))
            c["scores"].append(scores)
            c["referred"].append(1.0 / (1.0 + np.exp(-scores)) >= threshold)
            if "murmur" in prediction:
                c["murmur"].append(prediction["murmur"])
                c["murmur_labels"].append(np.array([e.murmur for e in test]))
    result: dict = {"run": str(run), "task": task, "folds": [f.name for f in folds], "variants": {}}
    for name, c in collected.items():
        joined = {k: (np.concatenate(v) if v else None) for k, v in c.items()}
        result["variants"][name] = _score(joined["y"], joined["scores"], joined["referred"], joined["murmur"], joined["murmur_labels"])
    base = result["variants"]["as trained"]
    for name, v in result["variants"].items():
        v["auroc_change"] = v["auroc"] - base["auroc"]
        v["cost_change"] = v["cost"] - base["cost"]
    if delta["ids"]:
        static, generated = np.concatenate(delta["static"]), np.concatenate(delta["delta"])
        result["hypernetwork"] = {
            "static_logit_sd": float(static.std()), "delta_logit_sd": float(generated.std()),
            "delta_logit_mean": float(generated.mean()), "delta_share_of_spread": float(generated.std() / max(static.std(), 1e-12)),
            "delta_by_age_group": _by_field(delta["ids"], generated, by_id, "age_group"),
            "delta_by_sex": _by_field(delta["ids"], generated, by_id, "sex"),
        }
    return result


def _by_field(ids: list[str], values: np.ndarray, by_id: dict, name: str) -> dict:
    groups: dict[str, list[float]] = {}
    for i, v in zip(ids, values):
        groups.setdefault(str(getattr(by_id[i].demographics, name)), []).append(float(v))
    return {k: {"n": len(v), "mean": float(np.mean(v)), "sd": float(np.std(v))} for k, v in sorted(groups.items())}


def probe_markdown(result: dict) -> str:
    lines = [f"# Demographics probe of `{result['run']}` ({result['task']})", "",
             "Each fold's saved model re-scores its own test patients with a field set to unknown for everyone "
             "(no retraining); pooled over the folds, decisions at each fold's cost-optimal threshold.", "",
             "| demographics given | AUROC | ΔAUROC | cost | Δcost | sensitivity | specificity |" +
             (" murmur weighted accuracy |" if "murmur_weighted_accuracy" in result["variants"]["as trained"] else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if "murmur_weighted_accuracy" in result["variants"]["as trained"] else "")]
    for name, v in result["variants"].items():
        label = name if name == "as trained" else f"{name} unknown"
        row = (f"| {label} | {v['auroc']:.3f} | {v['auroc_change']:+.3f} | {v['cost']:.0f} | {v['cost_change']:+.0f} | "
               f"{v['sensitivity']:.3f} | {v['specificity']:.3f} |")
        if "murmur_weighted_accuracy" in v:
            row += f" {v['murmur_weighted_accuracy']:.3f} |"
        lines.append(row)
    if "hypernetwork" in result:
        h = result["hypernetwork"]
        lines += ["", "## The hypernetwork's generated delta (outcome logit, test patients, crop-averaged)", "",
                  f"- static layer's logit: sd {h['static_logit_sd']:.3f} across patients",
                  f"- generated delta's contribution: mean {h['delta_logit_mean']:+.3f}, sd {h['delta_logit_sd']:.3f} "
                  f"({100 * h['delta_share_of_spread']:.0f} % of the static spread)", "",
                  "| age group | n | mean delta | sd |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['n']} | {v['mean']:+.3f} | {v['sd']:.3f} |" for k, v in h["delta_by_age_group"].items()]
        lines += ["", "| sex | n | mean delta | sd |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['n']} | {v['mean']:+.3f} | {v['sd']:.3f} |" for k, v in h["delta_by_sex"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a pcg-train run folder (fold folders with model.pt and outcome.json)")
    p.add_argument("--data", type=Path, required=True, help="the run's data folder")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="folder for probe.json and probe.md (default: the run folder)")
    args = p.parse_args(argv)
    try:
        result = probe_run(args.run, args.data, args.cache)
    except (DataError, OSError, KeyError, json.JSONDecodeError) as err:
        print(f"probe: {err}", file=sys.stderr)
        return 2
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(json.dumps(result, indent=1))
    (out / "probe.md").write_text(probe_markdown(result))
    print(probe_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
