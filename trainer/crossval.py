"""pcg-train: cross-validated training on a labelled folder (CirCor 2022 or PhysioNet 2016,
auto-detected by runtime.formats), writing metrics.json, report.md, plots and one checkpoint per fold.

    pcg-train --data DIR --task outcome|murmur --model primary|mlp|hyper|hyperfusion \
              --folds 5 | --folds lodo   --out runs/NAME [--cache DIR] [--resume] [--deterministic]

`--folds lodo` leaves one database (PhysioNet 2016) or campaign (CirCor) out at a time.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from runtime.dsp.config import FrontEndConfig
from runtime.metadata import METADATA_DIM, METADATA_FEATURES
from trainer.adapt import MIN_RECORDINGS, adaptation_shortfalls
from trainer.augment import AUGMENTATIONS
from trainer.encoder import NORMS
from trainer.examples import DataError, DataReport, Example, FeatureCache, load_examples
from trainer.folds import Fold, k_fold, leave_one_group_out
from trainer.report import write_report
from trainer.summary import FoldOutcome, summarize


def make_folds(examples: list[Example], task: str, scheme: str, seed: int) -> list[Fold]:
    """scheme: a number of folds ("5") or "lodo"."""
    labels = np.array([e.label(task) for e in examples])
    groups = np.array([e.group for e in examples])
    if scheme == "lodo":
        return leave_one_group_out(labels, groups, seed)
    try:
        n_folds = int(scheme)
    except ValueError:
        raise DataError(f"--folds must be a number of folds or 'lodo', got {scheme!r}") from None
    return k_fold(labels, groups, n_folds, seed)


def metadata_note(examples: list[Example]) -> str:
    """What the metadata path actually sees in these data."""
    missing_all = all(
        e.demographics.age_group is None and e.demographics.sex is None and e.demographics.height_cm is None
        and e.demographics.weight_kg is None and e.demographics.pregnant is None
        for e in examples
    )
    if missing_all:
        return ("no patient has demographics: every metadata vector is the same constant (all five missing "
                "indicators set, values 0), so mlp/hyper models see a constant input and reduce to the primary "
                "network with a learned constant offset (hyper: a fixed generated delta on the final layer)")
    return f"demographics encoded as runtime.metadata ({METADATA_DIM} values: {', '.join(METADATA_FEATURES)})"


def run_cross_validation(examples: list[Example], folds: list[Fold], model_config, train_config, out_dir: Path, resume: bool = False) -> list[FoldOutcome]:
    from trainer.train import fit_fold  # torch is imported only when training

    outcomes = []
    for fold in folds:
        fold_dir = out_dir / fold.name
        if resume and (fold_dir / "outcome.json").is_file():
            outcomes.append(FoldOutcome.load(fold_dir))
            continue
        outcome = fit_fold(examples, fold, model_config, train_config, fold_dir, resume=resume)
        outcome.save(fold_dir)
        outcomes.append(outcome)
        print(f"{fold.name}: test AUROC {np.nan_to_num(_auroc(outcome), nan=-1):.3f}, best epoch {outcome.best_epoch}, "
              f"{outcome.seconds:.0f} s ({outcome.seconds_per_epoch:.1f} s/epoch)", file=sys.stderr)
    return outcomes


def _auroc(outcome: FoldOutcome) -> float:
    from trainer.metrics import auroc

    return auroc(outcome.test_labels, outcome.test_scores)


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_labelled(data: Path, task: str, cache_dir: Path | None, frontend: FrontEndConfig) -> tuple[list[Example], DataReport, str]:
    """Read a folder with runtime.formats and turn it into examples; (examples, report, format)."""
    from runtime.formats import FormatError, load_dataset

    if not data.exists():
        raise DataError(f"--data {data}: no such folder")
    try:
        dataset = load_dataset(data)
    except FormatError as err:
        raise DataError(f"--data {data}: {err}") from None
    examples, report = load_examples(dataset, FeatureCache(cache_dir, frontend), task)
    return examples, report, dataset.format


def load_and_fold(args: argparse.Namespace, frontend: FrontEndConfig) -> tuple[list[Example], DataReport, str, list[Fold]]:
    """The labelled examples and folds the command-line arguments ask for; raises DataError."""
    cache = args.cache if args.cache is not None else Path("runs") / "feature-cache"
    examples, data_report, data_format = load_labelled(args.data, args.task, cache, frontend)
    if getattr(args, "folds_file", None) is not None:
        from trainer.partition import folds_from_partition

        folds, notes = folds_from_partition(examples, args.task, args.folds_file)
        data_report.warnings.extend(notes)
    else:
        folds = make_folds(examples, args.task, args.folds, args.seed)
    if getattr(args, "extra_data", None) is not None:
        examples, folds = add_training_data(examples, folds, args, cache, frontend, data_report)
    return examples, data_report, data_format, folds


def add_training_data(examples: list[Example], folds: list[Fold], args: argparse.Namespace, cache: Path, frontend: FrontEndConfig,
                      data_report: DataReport) -> tuple[list[Example], list[Fold]]:
    """--extra-data: another labelled folder's patients join every fold's TRAINING part only (never
    validation or test, so every figure is still on --data's patients). Their databases are renamed
    "extra:<name>" and drawn, all together, with --extra-share of each epoch's draws."""
    if args.task != "outcome":
        raise DataError("--extra-data adds outcome-labelled patients: it needs --task outcome")
    if not 0 < args.extra_share < 1:
        raise DataError(f"--extra-share must be between 0 and 1, got {args.extra_share}")
    extra, extra_report, extra_format = load_labelled(args.extra_data, "outcome", cache, frontend)
    for e in extra:
        e.group = f"extra:{e.group}"
        e.patient_id = f"extra:{e.patient_id}"
    data_report.problems.extend(f"--extra-data: {p}" for p in extra_report.problems)
    data_report.notes.append(f"--extra-data {args.extra_data} ({extra_format}): {len(extra)} patients added to every fold's "
                             f"training part, {args.extra_share:.0%} of the draws")
    added = np.arange(len(examples), len(examples) + len(extra))
    folds = [Fold(f.name, np.concatenate([f.train, added]), f.validation, f.test) for f in folds]
    return examples + extra, folds


def extra_group_weights(examples: list[Example], share: float) -> dict[str, float]:
    """Group weights giving the "extra:" databases `share` of the draws together, when every
    database otherwise weighs the same (--balance group_class)."""
    groups = {e.group for e in examples}
    extra = [g for g in groups if g.startswith("extra:")]
    if not extra or not 0 < share < 1:
        return {}
    weight = (len(groups) - len(extra)) * share / (len(extra) * (1 - share))
    return {g: weight for g in extra}


RUN_FILE = "run.json"
# settings a --resume may change: how long to train (a larger --epochs trains further) and how it runs
RESUMABLE = ("epochs", "patience", "progress", "threads", "device")


def run_identity(examples: list[Example], folds: list[Fold], model_config, train_config) -> dict:
    """What makes a run this run: its folds (names and test patients) and its model and training settings."""
    train = {k: v for k, v in train_config.to_dict().items() if k not in RESUMABLE}
    identity = {"folds": {f.name: sorted(examples[i].patient_id for i in f.test) for f in folds},
                "model": model_config.to_dict(), "train": train}
    return json.loads(json.dumps(identity, default=str))  # as it reads back from run.json


def claim_run_folder(out_dir: Path, identity: dict, resume: bool) -> None:
    """Refuse to mix two runs in one --out folder (pcg-export would ship their folds as one ensemble):
    a folder already holding fold results is refused unless --resume continues the very same run."""
    record = out_dir / RUN_FILE
    existing = sorted({p.parent.name for pattern in ("*/model.pt", "*/last.pt", "*/outcome.json") for p in out_dir.glob(pattern)})
    if existing and not resume:
        raise DataError(f"--out {out_dir} already holds a run (folds {', '.join(existing)}); pcg-train never mixes two runs in one "
                        "folder: choose a new --out, or add --resume to continue that same run")
    if existing or record.is_file():
        try:
            previous = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            raise DataError(f"--out {out_dir} holds fold results without a readable {RUN_FILE}: it cannot be checked to be the same "
                            "run; choose a new --out") from None
        changed = [k for k in ("folds", "model", "train") if previous.get(k) != identity[k]]
        if changed:
            raise DataError(f"--resume into {out_dir}: its run had other {' and '.join(changed)} settings; --resume continues the same "
                            "run only (the same folds, model and training settings, a larger --epochs allowed); choose a new --out")
        stale = sorted(set(existing) - set(identity["folds"]))
        if stale:
            raise DataError(f"--out {out_dir} holds fold folders this run does not have ({', '.join(stale)}); choose a new --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(identity, indent=1) + "\n")


def train_and_report(examples: list[Example], folds: list[Fold], model_config, train_config, out_dir: Path, resume: bool,
                     data_report: DataReport, settings: dict, title: str, started: float) -> dict:
    """Cross-validate one model and write its metrics.json, report.md and plots; returns the summary."""
    from trainer.model import ScreeningModel, parameter_count

    claim_run_folder(out_dir, run_identity(examples, folds, model_config, train_config), resume)
    outcomes = run_cross_validation(examples, folds, model_config, train_config, out_dir, resume=resume)
    summary = summarize(outcomes, {e.patient_id: e.group for e in examples})
    settings = {
        "command": " ".join(sys.argv), **settings,
        "model": model_config.to_dict(), "train": train_config.to_dict(),
        "parameters": parameter_count(ScreeningModel(model_config)),
        "metadata": metadata_note(examples),
        "seconds_total": time.perf_counter() - started,
        "seconds_training": sum(o.seconds for o in outcomes),
        "peak_memory_mb": peak_memory_mb(),
    }
    write_report(out_dir, title, outcomes, summary, settings, data_report.to_dict())
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcg-train", description=__doc__.split("\n\n")[0])
    from runtime.version import add_version_flag

    add_version_flag(p)
    p.add_argument("--data", type=Path, required=True, help="labelled CirCor or PhysioNet 2016 folder")
    p.add_argument("--task", choices=("outcome", "murmur", "both"), default="outcome",
                   help="outcome (refer / no referral), murmur (Present / Unknown / Absent; refers on Present or Unknown), "
                        "or both from one model (outcome head and murmur head on shared site embeddings)")
    p.add_argument("--model", choices=("primary", "mlp", "hyper", "hyperfusion"), default="hyper")
    p.add_argument("--folds", default="5", help="number of stratified folds, or 'lodo' (leave one database out)")
    p.add_argument("--folds-file", type=Path, default=None,
                   help="a saved fold partition (python -m trainer.partition): its test and validation parts replace --folds, "
                        "so --seed varies only initialisation, batch order and augmentation")
    p.add_argument("--extra-data", type=Path, default=None,
                   help="another labelled folder (e.g. PhysioNet 2016) whose patients join every fold's training part only; outcome task")
    p.add_argument("--extra-share", type=float, default=0.25, help="with --extra-data: its share of each epoch's draws (0-1)")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, metrics.json, report.md, plots)")
    p.add_argument("--cache", type=Path, default=None, help="feature cache folder (default: runs/feature-cache)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-step", type=int, default=20, help="multiply the learning rate by 0.5 every this many epochs")
    p.add_argument("--eval-crops", type=int, default=5)
    p.add_argument("--weight-decay", type=float, default=1e-4, help="Adam L2 weight decay")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout in the encoder projection, before the final layer, and in the metadata paths")
    p.add_argument("--freq-rows", type=int, default=None,
                   help="use only the lowest this many frequency rows, a multiple of 8 (default: all 48, 31-398 Hz; 32: up to 273 Hz; 24: up to 211 Hz); "
                        "the model still takes every row as input")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup of training batches, Beta(ALPHA, ALPHA) weights (0: off)")
    p.add_argument("--calibration", choices=("prevalence", "balanced"), default="prevalence",
                   help="Platt scaling on the validation part: prevalence (its class mix enters the probability) or balanced "
                        "(classes weighed equally: the score is a likelihood ratio that does not carry the training databases' prevalence)")
    p.add_argument("--balance", choices=("group_class", "class", "none"), default="group_class")
    p.add_argument("--group-weight", action="append", default=[], metavar="DB=W",
                   help="multiply a database's share of the training draws by W (repeatable; e.g. e=0.5)")
    p.add_argument("--selection", choices=("pooled", "group"), default="pooled",
                   help="best epoch by the validation part's pooled AUROC, or by AUROC within each database only "
                        "(pairs from one database; telling databases apart earns nothing)")
    p.add_argument("--adapt-bn", choices=("unlabelled", "healthy"), default=None,
                   help="score every database after re-estimating the batch-norm statistics on reference recordings of its own "
                        "stethoscope (AdaBN), calibration and thresholds included: unlabelled (all its recordings) or healthy (only its "
                        "normal ones, a reference of people without heart disease). References come from the training part; a held-out "
                        "database (--folds lodo) is cross-fitted in 5 parts of itself, so no recording is scored by statistics it took "
                        "part in. The report gives the same models' unadapted figures beside them; the models are then meant to be "
                        "exported with pcg-export --adapt-bn")
    p.add_argument("--domain-batches", action="store_true",
                   help="draw every training batch from one database, so batch normalisation trains on one stethoscope at a time "
                        "(as it is used after --adapt-bn)")
    p.add_argument("--norm", choices=NORMS, default="batch",
                   help="the CNN's normalisation: batch, or instance (each crop's own statistics, for unfamiliar stethoscopes)")
    p.add_argument("--augment", choices=tuple(AUGMENTATIONS), default="default",
                   help="training augmentation preset (strong: more band-limiting and noise, for unseen stethoscopes; masked: default plus a frequency and a time mask)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true", help="torch deterministic algorithms (same seed, same result)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, at most 2 (1 is fastest on a busy 2-core machine: the LSTM's small steps stall on thread barriers)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_group_weights(items: list[str]) -> dict[str, float]:
    """["e=0.5", ...] -> {"e": 0.5}; raises DataError on a malformed or negative weight."""
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name or not weight >= 0:
            raise DataError(f"--group-weight {item!r}: expected DATABASE=WEIGHT with a weight >= 0")
        weights[name] = weight
    return weights


def configs_from_args(args: argparse.Namespace, frontend: FrontEndConfig):
    from trainer.model import ModelConfig
    from trainer.train import TrainConfig

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model_config = ModelConfig(task=args.task, metadata_path=args.model, n_freq=frontend.n_freq,
                               n_frames=frontend.clip_frames, metadata_dim=METADATA_DIM, dropout=args.dropout,
                               freq_rows=args.freq_rows, norm=args.norm)
    train_config = TrainConfig(
        task=args.task, epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, learning_rate=args.lr,
        weight_decay=args.weight_decay, mixup=args.mixup, calibration=args.calibration, lr_step=args.lr_step, clip_frames=frontend.clip_frames, eval_crops=args.eval_crops, balance=args.balance,
        seed=args.seed, deterministic=args.deterministic, device=device, threads=min(args.threads, 2),
        augment=AUGMENTATIONS[args.augment], progress=not args.quiet,
        selection=args.selection, group_weights=parse_group_weights(args.group_weight), adapt_bn=args.adapt_bn or "none",
        domain_batches=args.domain_batches,
    )
    if args.adapt_bn and args.norm != "batch":
        raise DataError("--adapt-bn re-estimates batch-norm statistics: it needs --norm batch")
    return model_config, train_config


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (exit 2, with the flag named) numbers no run could use, before any data is read."""
    if args.folds != "lodo" and not (args.folds.isascii() and args.folds.isdigit() and 2 <= int(args.folds) <= 100):
        parser.error(f"--folds must be a whole number from 2 to 100, or 'lodo'; got {args.folds!r}")
    for name, value, low in (("--epochs", args.epochs, 1), ("--patience", args.patience, 1),
                             ("--batch-size", args.batch_size, 2), ("--eval-crops", args.eval_crops, 1),
                             ("--lr-step", args.lr_step, 1), ("--threads", args.threads, 1)):
        if value < low:
            parser.error(f"{name} must be at least {low}; got {value}")
    for name, value, low, high in (("--lr", args.lr, 0.0, 1.0), ("--weight-decay", args.weight_decay, 0.0, 1.0),
                                   ("--dropout", args.dropout, 0.0, 0.95), ("--mixup", args.mixup, 0.0, 10.0),
                                   ("--extra-share", args.extra_share, 0.0, 0.95)):
        if not low <= value <= high or (name == "--lr" and value == 0):
            parser.error(f"{name} must be in [{low:g}, {high:g}]" + (" and above 0" if name == "--lr" else "")
                         + f"; got {value:g}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = "pcg-train " + " ".join(sys.argv[1:] if argv is None else argv)  # what reproduces the run
    check_numbers(parser, args)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"\npcg-train: stopped (Ctrl-C); the folds already finished are kept in {args.out}: "
              "run the same command with --resume to go on", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    frontend = FrontEndConfig()
    started = time.perf_counter()
    try:
        model_config, train_config = configs_from_args(args, frontend)
        examples, data_report, data_format, folds = load_and_fold(args, frontend)
        train_config.group_weights = {**extra_group_weights(examples, args.extra_share), **train_config.group_weights}
        unknown = sorted(set(train_config.group_weights) - {e.group for e in examples})
        if unknown:
            raise DataError(f"--group-weight names no database of these data: {', '.join(unknown)}")
        if train_config.adapt_bn != "none":
            outcome = np.array([e.outcome for e in examples])
            short = adaptation_shortfalls(outcome, np.array([e.group for e in examples]), folds, train_config.adapt_bn)
            if short:
                raise DataError(f"--adapt-bn {train_config.adapt_bn} needs at least {MIN_RECORDINGS} "
                                f"{'normal ' if train_config.adapt_bn == 'healthy' else ''}reference recordings for every database it "
                                f"scores; too few for {'; '.join(short[:5])}")
    except DataError as err:
        print(f"pcg-train: {err}", file=sys.stderr)
        return 2
    for warning in data_report.warnings:
        print(f"pcg-train: warning: {warning}", file=sys.stderr)
    print(f"pcg-train: {len(examples)} patients ({data_format}), {len(folds)} folds, "
          f"{len(data_report.problems)} input problem(s) reported", file=sys.stderr)
    try:
        summary = train_and_report(examples, folds, model_config, train_config, args.out, args.resume, data_report,
                                   {"command": args.command, "data": str(args.data), "format": data_format,
                                    "folds": args.folds if args.folds_file is None else f"file:{args.folds_file}",
                                    "frontend": frontend.to_dict()},
                                   f"pcg-train {args.task} / {args.model} / folds {args.folds} on {args.data.name}", started)
    except DataError as err:
        print(f"pcg-train: {err}", file=sys.stderr)
        return 2
    pooled = summary["pooled"]
    print(f"pcg-train: pooled AUROC {pooled['auroc']:.3f} {tuple(round(v, 3) for v in pooled['auroc_ci'])}, "
          f"cost {pooled['cost_optimal']['cost']:.1f}, MAcc {pooled['cost_optimal']['macc']:.3f}"
          + (f" (adapted; unadapted {summary['unadapted']['auroc']:.3f})" if "unadapted" in summary else "")
          + f"; report in {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
