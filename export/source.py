"""What pcg-export exports: a pcg-train run folder (every fold, as one ensemble) or one fold's model.pt.

    load_source(path) -> ExportSource (the EnsembleGraph, the checkpoints, the run's metrics.json)
    with_murmur_head(source, murmur_run) -> the same with a murmur-task run's head as a fourth output

The graph is trainer.inference.EnsembleGraph: crop averaging, fold ensemble and Platt calibration
in one module, built by trainer.inference.ensemble_from (which also reconciles the folds' metadata
statistics: demographics are encoded with the first fold's, which the manifest states).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from runtime.dsp.config import FrontEndConfig
from runtime.metadata import MetadataStats
from trainer.inference import EnsembleGraph, ensemble_from, load_checkpoint


class SourceError(ValueError):
    """The path is not something pcg-export can export; the message says what was expected."""


@dataclass
class ExportSource:
    path: Path  # what the user named
    graph: EnsembleGraph
    checkpoints: list[dict]
    fold_dirs: list[Path]
    run_dir: Path | None  # the pcg-train --out folder, when known
    run: dict | None  # its metrics.json (summary, settings, data), when present
    adaptation: dict | None = None  # set by export.adapt.adapt_source when the graph was adapted to a stethoscope
    murmur: ExportSource | None = None  # with_murmur_head: the murmur-task run whose head the graph carries too

    @property
    def model_config(self) -> dict:
        return self.checkpoints[0]["model_config"]

    @property
    def train_config(self) -> dict:
        return self.checkpoints[0]["train_config"]

    @property
    def task(self) -> str:
        return self.model_config["task"]

    @property
    def architecture(self) -> str:
        return self.model_config["metadata_path"]

    @property
    def n_crops(self) -> int:
        return int(self.train_config["eval_crops"])

    @property
    def clip_frames(self) -> int:
        return int(self.model_config["n_frames"])

    @property
    def metadata_stats(self) -> MetadataStats:
        """The statistics the runtime must encode demographics with (the first fold's)."""
        return MetadataStats.from_dict(self.checkpoints[0]["metadata_stats"])

    @property
    def frontend(self) -> FrontEndConfig:
        """The run's front-end config (metrics.json settings); the default one when the run has no record,
        provided it yields the model's input shape."""
        if self.run and "frontend" in self.run.get("settings", {}):
            config = FrontEndConfig.from_dict(self.run["settings"]["frontend"])
        else:
            config = FrontEndConfig()
        if (config.n_freq, config.clip_frames) != (self.model_config["n_freq"], self.clip_frames):
            raise SourceError(
                f"{self.path}: the model takes crops of {self.model_config['n_freq']} x {self.clip_frames} but the front-end "
                f"config gives {config.n_freq} x {config.clip_frames}; export from the run folder whose metrics.json records it"
            )
        return config

    def input_example(self, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.model_config
        x = torch.randn(batch, self.n_crops, c["n_sites"], c["n_freq"], self.clip_frames)
        site_mask = torch.ones(batch, c["n_sites"])
        site_mask[0, 1:] = 0.0  # a patient with one site, so the export sees site gathering
        return x, site_mask, torch.zeros(batch, c["metadata_dim"])


def _read_run(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: cannot read the run's metrics: {exc}") from None


def load_source(path: Path, given: MetadataStats | None = None) -> ExportSource:
    """A pcg-train run folder (all */model.pt) or a single fold's model.pt; `given`: the metadata
    statistics the graph's input is encoded with (default: the first fold's; see ensemble_from)."""
    path = Path(path)
    if path.is_file():
        fold_paths, run_dir = [path], path.parent.parent
    elif path.is_dir():
        fold_paths, run_dir = sorted(path.glob("*/model.pt")), path
        if not fold_paths:
            raise SourceError(f"{path}: no */model.pt checkpoints; expected a pcg-train --out folder or a fold's model.pt")
    else:
        raise SourceError(f"{path}: no such file or folder; expected a pcg-train --out folder or a fold's model.pt")
    loaded = []
    for p in fold_paths:
        try:
            loaded.append(load_checkpoint(p))
        except (KeyError, RuntimeError, OSError, EOFError) as exc:
            raise SourceError(f"{p}: not a pcg-train checkpoint ({type(exc).__name__}: {exc})") from None
    checkpoints = [c for _, c in loaded]
    run = _read_run(run_dir)
    if path.is_dir():
        _check_one_run(path, [p.parent.name for p in fold_paths], run)
    configs = {json.dumps(c["model_config"], sort_keys=True) for c in checkpoints}
    if len(configs) > 1:
        raise SourceError(f"{path}: the folds have different model configs; export one fold's model.pt instead")
    graph = ensemble_from(loaded, given)
    return ExportSource(path, graph, checkpoints, [p.parent for p in fold_paths], run_dir, run)


MURMUR_HEAD_RULE = ("the referral decision is the outcome head's alone (its operating points); the murmur head's "
                    "finding (Present / Unknown / Absent) is reported beside it and does not change it")


def with_murmur_head(source: ExportSource, murmur_path: Path) -> ExportSource:
    """`source` (an outcome run) with the murmur head of another run (`pcg-train --task murmur`) on
    the same inputs, as one graph (trainer.inference.WithMurmurHead). The murmur folds are fed the
    outcome's metadata encoding, restandardized to their own; both runs must take the same crops."""
    from trainer.inference import WithMurmurHead

    if source.task != "outcome":
        raise SourceError(f"{source.path} is a {source.task} run; --murmur-run adds a murmur head to an outcome run")
    murmur = load_source(murmur_path, given=source.metadata_stats)  # its folds fed the outcome's encoding
    if murmur.task != "murmur":
        raise SourceError(f"--murmur-run {murmur_path} is a {murmur.task} run; train it with pcg-train --task murmur")
    mine, theirs = source.model_config, murmur.model_config
    for key in ("n_sites", "n_freq", "n_frames", "metadata_dim"):
        if mine[key] != theirs[key]:
            raise SourceError(f"--murmur-run {murmur_path}: its models take {key} {theirs[key]}, the outcome run's {mine[key]}")
    if murmur.n_crops != source.n_crops:
        raise SourceError(f"--murmur-run {murmur_path} was evaluated on {murmur.n_crops} crops, the outcome run on "
                          f"{source.n_crops}: train both with the same --eval-crops")
    if murmur.frontend.to_dict() != source.frontend.to_dict():
        raise SourceError(f"--murmur-run {murmur_path} used another front-end than {source.path}")
    return dataclasses.replace(source, graph=WithMurmurHead(source.graph, murmur.graph), murmur=murmur)


def _check_one_run(path: Path, folds: list[str], run: dict | None) -> None:
    """The fold models found must be exactly the run's folds: a folder that holds folds of an earlier
    run (trained into the same --out with other folds) would otherwise ship a mixed ensemble under
    the new run's metrics."""
    if run is None:
        raise SourceError(f"{path}: no metrics.json: the fold models cannot be checked to be one finished run; "
                          "export a finished pcg-train run, or one fold's model.pt")
    reported = sorted(run.get("summary", {}).get("folds", {}))
    if sorted(folds) != reported:
        raise SourceError(f"{path}: fold models {', '.join(sorted(folds))} but the run's metrics.json reports folds "
                          f"{', '.join(reported) or 'none'}: the folder mixes runs; retrain into a new --out")
