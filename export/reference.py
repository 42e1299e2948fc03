"""Reference outputs: the exported model's probabilities on named recordings, written at export.

A shipped model is later checked against this file by recomputing everything in the field runtime
(runtime.dsp features, runtime.inference crops, ONNX Runtime). The reference side is computed here
on the trainer's path: features as training saw them (runtime.dsp through the trainer's feature
cache), trainer.crops.evaluation_crops and the torch ensemble graph, so a match proves the runtime
reproduces what was evaluated, not merely itself.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import torch

from export.data import RunData
from export.source import ExportSource
from runtime.metadata import encode_batch
from runtime.records import MURMUR_CLASSES, OUTCOME_CLASSES
from trainer.crops import evaluation_crops
from trainer.model import INPUT_NAMES

TOLERANCE = 1e-4


def reference_outputs(source: ExportSource, patient_ids: list[str], run: RunData, graph_sha256: str) -> dict:
    """{model hash, data, tolerance, recordings: [{id, group, label, probability, logit[, murmur]}]} for
    `patient_ids` of the run's data (export.data.run_data); ValueError naming any id that is not there.
    `murmur` (class -> probability) is there when the model has a murmur head (pcg-export --murmur-run)."""
    by_id = run.by_id
    missing = [i for i in patient_ids if i not in by_id]
    if missing:
        raise ValueError(f"--reference-ids: {', '.join(missing)} not among the usable patients of {run.folder}")
    chosen = [by_id[i] for i in patient_ids]
    crops = [evaluation_crops(e.longest(), source.clip_frames, source.n_crops, source.model_config["n_freq"]) for e in chosen]
    inputs = {"x": np.stack([c[0] for c in crops]), "site_mask": np.stack([c[1] for c in crops]),
              "metadata": encode_batch([e.demographics for e in chosen], source.metadata_stats)}
    with torch.no_grad():
        outputs = dict(zip(source.graph.output_names, source.graph(*(torch.from_numpy(inputs[n]) for n in INPUT_NAMES))))
    probability, logit = outputs["outcome_probability"].numpy(), outputs["outcome_logit"].numpy()
    murmur = outputs["murmur_probabilities"].numpy() if "murmur_probabilities" in outputs else None
    return {
        "model_graph_sha256": graph_sha256,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {"dataset": str(run.folder), "format": run.format,
                 "note": "read in place; each id is a patient of this folder (PhysioNet 2016: one recording; CirCor: "
                         "the longest recording of each site, with the patient's demographics)"},
        "computed_with": "torch ensemble graph (trainer.inference) on the trainer's features and trainer.crops.evaluation_crops; "
                         "demographics as the dataset gives them",
        "tolerance": TOLERANCE,
        "recordings": [{"id": e.patient_id, "group": e.group,
                        "label": OUTCOME_CLASSES[0] if e.outcome == 1 else OUTCOME_CLASSES[1] if e.outcome == 0 else None,
                        "probability": float(p), "logit": float(z),
                        **({"murmur": dict(zip(MURMUR_CLASSES, map(float, murmur[i])))} if murmur is not None else {})}
                       for i, (e, p, z) in enumerate(zip(chosen, probability, logit))],
    }
