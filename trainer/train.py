"""Training of one fold: batches, the loop, early stopping, calibration, operating points, checkpoints.

    fit_fold(examples, fold, model_config, train_config, fold_dir) -> FoldOutcome

Per epoch: `len(train)` patients drawn with replacement, each with probability proportional to
1 / (patients in its (database, class) cell), so databases and classes weigh the same; one random
augmented crop per site per patient. Adam, the learning rate multiplied by `lr_gamma` every
`lr_step` epochs, early stopping on the validation part's AUROC (outcome) or macro AUROC (murmur).
The best epoch's weights are kept; Platt scaling and the operating points (challenge-cost optimum,
sensitivity >= 0.95) are fitted on the validation part and stored in the checkpoint.

Files in the fold folder: last.pt (model, optimizer, scheduler, RNG states, history, best weights:
written after every epoch; `resume=True` continues from it, also to train further with a larger
`epochs`) and model.pt (best weights, model config, metadata statistics, Platt, thresholds).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from runtime.metadata import MetadataStats, encode_batch
from trainer import metrics
from trainer.adapt import adapt_batchnorm, adaptation_parts, reference_rows
from trainer.augment import AugmentConfig, augment_crop, drop_sites
from trainer.crops import crop, evaluation_crops
from trainer.examples import Example
from trainer.folds import Fold
from trainer.model import ModelConfig, ScreeningModel
from trainer.murmur_head import multi_head_murmur_loss
from trainer.summary import FoldOutcome

CHECKPOINT_SCHEMA = "pcg-screen/trainer-checkpoint/1"


@dataclass
class TrainConfig:
    task: str = "outcome"
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    lr_step: int = 20
    lr_gamma: float = 0.5
    patience: int = 10
    clip_frames: int = 246  # front-end config.clip_frames
    eval_crops: int = 5
    balance: str = "group_class"  # "group_class" | "class" | "none"
    pos_weight: float | None = None  # None: n_negative / n_positive under the chosen sampling
    calibration: str = "prevalence"  # "prevalence": Platt on the validation part as drawn; "balanced": classes weighed equally
    mixup: float = 0.0  # Beta(mixup, mixup) mixing of each batch with a shuffled copy (0: off)
    selection: str = "pooled"  # best epoch by the validation part's "pooled" AUROC, or "group": the mean of its per-database AUROCs
    group_weights: dict = field(default_factory=dict)  # database -> multiplier of its share of the draws (absent: 1)
    domain_batches: bool = False  # every training batch from one database (its batch-norm statistics those of one stethoscope)
    adapt_bn: str = "none"  # "unlabelled" | "healthy": every database scored after batch-norm adaptation to its reference recordings, calibration included (reference_adapted_predictions)
    seed: int = 0
    deterministic: bool = False
    device: str = "cpu"
    threads: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def sampling_weights(labels: np.ndarray, groups: np.ndarray, balance: str, group_weights: dict | None = None) -> np.ndarray:
    """Probability of drawing each training example. group_weights multiplies a database's share
    of the draws (e.g. {"e": 0.5} draws database e half as often as the balance alone would)."""
    if balance == "none":
        w = np.ones(len(labels))
    else:
        keys = list(zip(groups.tolist(), labels.tolist())) if balance == "group_class" else labels.tolist()
        counts: dict = {}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        w = np.array([1.0 / counts[k] for k in keys])
        if balance == "group_class":  # a database missing a class does not lose weight
            per_group = {g: sum(1 for k in counts if k[0] == g) for g in set(groups.tolist())}
            w = w / np.array([per_group[g] for g in groups.tolist()])
    if group_weights:
        w = w * np.array([float(group_weights.get(g, 1.0)) for g in groups.tolist()])
        if not w.sum() > 0:
            raise ValueError("group weights leave nothing to draw")
    return w / w.sum()


def domain_batch_order(rows: np.ndarray, groups: np.ndarray, draw: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """An epoch's draw (len(rows) examples, with replacement) arranged so that every batch of
    batch_size comes from one database: each batch picks its database with that database's share of
    `draw`, then its examples by `draw` within it. Batch normalisation then trains on one
    stethoscope's statistics at a time, as it is used after adaptation (trainer/adapt.py)."""
    names = np.unique(groups)
    share = np.array([draw[groups == g].sum() for g in names])
    order = []
    for start in range(0, len(rows), batch_size):
        size = min(batch_size, len(rows) - start)
        g = names[rng.choice(len(names), p=share / share.sum())]
        inside = np.flatnonzero(groups == g)
        order.append(rows[rng.choice(inside, size=size, replace=True, p=draw[inside] / draw[inside].sum())])
    return np.concatenate(order)


def training_batch(batch: list[Example], metadata: np.ndarray, config: TrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [B, S, F, clip] (one random augmented crop per present site), site_mask [B, S], metadata."""
    n_sites = len(batch[0].site_features)
    n_freq = next(f for recs in batch[0].site_features for f in recs).shape[0]
    x = np.zeros((len(batch), n_sites, n_freq, config.clip_frames), dtype=np.float32)
    masks = np.zeros((len(batch), n_sites), dtype=np.float32)
    for b, example in enumerate(batch):
        masks[b] = drop_sites(example.site_mask, rng, config.augment.site_dropout)
        for s in np.flatnonzero(masks[b]):
            recordings = example.site_features[s]
            features = recordings[int(rng.integers(0, len(recordings)))]
            start = int(rng.integers(0, max(1, features.shape[1] - config.clip_frames + 1)))
            x[b, s] = augment_crop(crop(features, start, config.clip_frames), rng, config.augment)
    return x, masks, metadata


def mix_batch(x: np.ndarray, site_mask: np.ndarray, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """Mixup of a batch with a shuffled copy of itself: x [B, S, F, T] log power mixed as
    weight * x + (1 - weight) * x[partner], weight ~ Beta(alpha, alpha) folded to >= 0.5 so the
    first label dominates; a site is present where either patient has it (an absent site's zeros
    are replaced by the present partner's crop). Batches are drawn balanced over databases, so most
    pairs mix two stethoscopes. Returns (x, site_mask, weight, partner)."""
    weight = float(rng.beta(alpha, alpha))
    weight = max(weight, 1.0 - weight)
    partner = rng.permutation(len(x))
    own = site_mask[:, :, None, None] > 0.5
    other = site_mask[partner][:, :, None, None] > 0.5
    mixed = np.where(own & other, weight * x + (1.0 - weight) * x[partner], np.where(own, x, x[partner]))
    return mixed.astype(np.float32), np.maximum(site_mask, site_mask[partner]), weight, partner


@torch.no_grad()
def predict(model: ScreeningModel, examples: list[Example], metadata: np.ndarray, config: TrainConfig, device: torch.device) -> dict[str, np.ndarray]:
    """Inference as crops.py describes: crop-averaged outcome logits [N], murmur probabilities
    [N, 3] (murmur task) and site weights [N, S]."""
    model.eval()
    logits, murmur, weights = [], [], []
    per_batch = max(1, config.batch_size // config.eval_crops)
    n_freq = next(f for recs in examples[0].site_features for f in recs).shape[0]
    for start in range(0, len(examples), per_batch):
        chunk = examples[start : start + per_batch]
        crops = [evaluation_crops(e.longest(), config.clip_frames, config.eval_crops, n_freq) for e in chunk]
        x = torch.from_numpy(np.concatenate([c[0] for c in crops])).to(device)
        k = config.eval_crops
        mask = torch.from_numpy(np.repeat(np.stack([c[1] for c in crops]), k, axis=0)).to(device)
        meta = torch.from_numpy(np.repeat(metadata[start : start + per_batch], k, axis=0)).to(device)
        outputs = model(x, mask, meta)
        logits.append(outputs[1].reshape(len(chunk), k).mean(dim=1).cpu().numpy())
        weights.append(outputs[2].reshape(len(chunk), k, -1).mean(dim=1).cpu().numpy())
        if model.config.task != "outcome":
            murmur.append(outputs[3].reshape(len(chunk), k, 3).mean(dim=1).cpu().numpy())
    result = {"logits": np.concatenate(logits).astype(np.float64), "site_weights": np.concatenate(weights)}
    if murmur:
        result["murmur"] = np.concatenate(murmur).astype(np.float64)
    if model.config.task == "murmur":
        refer = np.clip(result["murmur"][:, 0] + result["murmur"][:, 1], 1e-6, 1 - 1e-6)
        result["logits"] = np.log(refer) - np.log1p(-refer)  # crop-averaged probabilities, then logit
    return result


def adapted_predictions(model: ScreeningModel, examples: list[Example], metadata: np.ndarray, config: TrainConfig,
                        device: torch.device) -> dict[str, np.ndarray]:
    """predict() after batch-norm adaptation to a held-out database's own recordings (config.adapt_bn:
    "unlabelled" or "healthy"), cross-fitted: the examples fall in ADAPTATION_PARTS random parts and
    each part is scored by the model adapted on recordings outside it (adaptation_parts), so no
    recording takes part in the statistics that score it."""
    outcome = np.array([e.outcome for e in examples])
    result: dict[str, np.ndarray] = {}
    for scored, adapting in adaptation_parts(outcome, config.adapt_bn, config.seed):
        _place(result, scored, len(examples), _predict_adapted(model, examples, metadata, scored, adapting, config, device))
    return result


def reference_adapted_predictions(model: ScreeningModel, examples: list[Example], metadata: np.ndarray, scored: np.ndarray,
                                  references: np.ndarray, config: TrainConfig, device: torch.device) -> dict[str, np.ndarray]:
    """predict() for examples[scored], each database's patients scored by the model adapted to that
    database's reference recordings among examples[references] (all of them, or only the normal ones
    for config.adapt_bn "healthy"): how a stethoscope the model was trained on is scored once adapted.
    A database without references among them is cross-fitted within `scored` (adapted_predictions).
    Returned arrays follow the order of `scored`."""
    groups = np.array([e.group for e in examples])
    outcome = np.array([e.outcome for e in examples])
    result: dict[str, np.ndarray] = {}
    for group in np.unique(groups[scored]):
        at = np.flatnonzero(groups[scored] == group)  # positions in `scored`
        rows = scored[at]
        refs = reference_rows(outcome, groups, references, group, config.adapt_bn)
        if len(refs):
            part = _predict_adapted(model, examples, metadata, rows, refs, config, device)
        else:
            part = adapted_predictions(model, [examples[i] for i in rows], metadata[rows], config, device)
        _place(result, at, len(scored), part)
    return result


def _predict_adapted(model, examples, metadata, rows, adapting, config, device) -> dict[str, np.ndarray]:
    """predict() for examples[rows] by the model adapted on examples[adapting]'s recordings."""
    recordings = [f for i in adapting for f in examples[i].longest() if f is not None]
    adapted = adapt_batchnorm(model, recordings, config.clip_frames, config.eval_crops)
    return predict(adapted, [examples[i] for i in rows], metadata[rows], config, device)


def _place(result: dict[str, np.ndarray], at: np.ndarray, size: int, part: dict[str, np.ndarray]) -> None:
    """Write each array of `part` into result's arrays (length `size`) at positions `at`."""
    for key, value in part.items():
        result.setdefault(key, np.zeros((size,) + value.shape[1:], dtype=value.dtype))[at] = value


def selection_score(task: str, labels: np.ndarray, prediction: dict[str, np.ndarray], groups: np.ndarray | None = None) -> float:
    """The validation figure early stopping follows: AUROC (outcome) or macro one-vs-rest AUROC
    (murmur). With groups, only pairs within one database count: the within-database AUROCs
    weighted by their numbers of (positive, negative) pairs, so a small database's handful of
    validation recordings does not swing it. Pooled over databases of different prevalence,
    telling the databases apart would also score, and that is exactly what must not carry over to
    an unfamiliar stethoscope."""
    def score(rows: np.ndarray) -> float:
        if task == "outcome":
            return metrics.auroc(labels[rows], prediction["logits"][rows])
        if task == "both":  # labels [N, 2]: outcome, murmur index
            return 0.5 * (metrics.auroc(labels[rows, 0], prediction["logits"][rows])
                          + metrics.macro_ovr(metrics.auroc, labels[rows, 1], prediction["murmur"][rows]))
        return metrics.macro_ovr(metrics.auroc, labels[rows], prediction["murmur"][rows])

    if groups is None:
        return score(np.arange(len(labels)))
    values, weights = [], []
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        value = score(rows)
        if np.isfinite(value):
            n_pos = int((labels[rows] == 1).sum()) if task == "outcome" else len(rows)  # "both": counted like murmur
            values.append(value)
            weights.append(n_pos * (len(rows) - n_pos) if task == "outcome" else len(rows))
    if not values:
        return score(np.arange(len(labels)))
    return float(np.average(values, weights=weights))


def _loss_function(task: str, pos_weight: float, device: torch.device):
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    if task == "outcome":
        return lambda logits, y: bce(logits[:, 0], y.float())
    if task == "both":  # y [B, 2]: outcome, murmur index; the two losses weigh the same
        return lambda logits, y: (bce(logits[:, 0], y[:, 0].float())
                                  + multi_head_murmur_loss(logits[:, 1:].reshape(logits.shape[0], -1, 3), y[:, 1]))
    return lambda logits, y: multi_head_murmur_loss(logits.reshape(logits.shape[0], -1, 3), y)


def fit_fold(examples: list[Example], fold: Fold, model_config: ModelConfig, config: TrainConfig, fold_dir: Path, resume: bool = False) -> FoldOutcome:
    """Train on fold.train, stop early on fold.validation, predict fold.test."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    seed_everything(config.seed, config.deterministic)
    device = torch.device(config.device)
    task = config.task
    labels = np.array([e.label(task) for e in examples])
    # what the loss and the selection score read: for "both", outcome and murmur side by side
    targets = np.array([[e.outcome, e.murmur] for e in examples]) if task == "both" else labels
    groups = np.array([e.group for e in examples])
    stats = MetadataStats.fit([examples[i].demographics for i in fold.train])
    metadata = encode_batch([e.demographics for e in examples], stats)

    model = ScreeningModel(model_config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)
    draw = sampling_weights(labels[fold.train], groups[fold.train], config.balance, config.group_weights)
    selection_groups = groups[fold.validation] if config.selection == "group" else None
    if config.pos_weight is not None:
        pos_weight = config.pos_weight
    else:
        drawn_positive = float(draw[labels[fold.train] == 1].sum())
        pos_weight = (1.0 - drawn_positive) / max(drawn_positive, 1e-6)
    loss_fn = _loss_function(task, pos_weight, device)
    rng = np.random.default_rng(config.seed)
    history: list[dict] = []
    best = {"score": -np.inf, "epoch": -1, "state": None}
    start_epoch = 0
    last_path = fold_dir / "last.pt"
    if resume and last_path.is_file():
        state = torch.load(last_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1

    validation_examples = [examples[i] for i in fold.validation]
    started = time.perf_counter()
    epoch_seconds = []
    epochs = tqdm(range(start_epoch, config.epochs), desc=fold.name, disable=not config.progress, mininterval=2.0, leave=False)
    for epoch in epochs:
        epoch_started = time.perf_counter()
        model.train()
        if config.domain_batches:
            order = domain_batch_order(fold.train, groups[fold.train], draw, config.batch_size, rng)
        else:
            order = rng.choice(fold.train, size=len(fold.train), replace=True, p=draw)
        losses = []
        batches = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}", disable=not config.progress, mininterval=2.0, leave=False)
        for b in batches:
            rows = order[b : b + config.batch_size]
            x, mask, meta = training_batch([examples[i] for i in rows], metadata[rows], config, rng)
            y = torch.from_numpy(targets[rows]).to(device)
            if config.mixup > 0:
                x, mask, weight, partner = mix_batch(x, mask, config.mixup, rng)
                logits, _ = model.head_logits(torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device), torch.from_numpy(meta).to(device))
                loss = weight * loss_fn(logits, y) + (1.0 - weight) * loss_fn(logits, y[torch.from_numpy(partner).to(device)])
            else:
                logits, _ = model.head_logits(torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device), torch.from_numpy(meta).to(device))
                loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            losses.append(loss.item())
            batches.set_postfix(loss=f"{np.mean(losses):.4f}")
        scheduler.step()
        validation = predict(model, validation_examples, metadata[fold.validation], config, device)
        score = selection_score(task, targets[fold.validation], validation, selection_groups)
        epoch_seconds.append(time.perf_counter() - epoch_started)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "validation_score": score, "seconds": epoch_seconds[-1]})
        if best["state"] is None or (np.isfinite(score) and not score <= best["score"]):  # a nan score (one class) never wins over a real one
            best = {"score": score, "epoch": epoch + 1, "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        epochs.set_postfix(loss=f"{np.mean(losses):.4f}", val=f"{score:.3f}", best=f"{best['score']:.3f}@{best['epoch']}")
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "history": history, "best": best, "epoch": epoch},
            last_path,
        )
        if epoch + 1 - best["epoch"] >= config.patience:
            break

    model.load_state_dict(best["state"])
    validation = predict(model, validation_examples, metadata[fold.validation], config, device)
    validation_binary = (labels[fold.validation] <= 1).astype(np.int64) if task == "murmur" else labels[fold.validation]
    balanced = config.calibration == "balanced"
    unadapted_platt = None
    if config.adapt_bn != "none":
        # calibration and thresholds as the model will be used: adapted to each stethoscope's references
        unadapted_platt = metrics.fit_platt(validation["logits"], validation_binary, balanced=balanced)
        validation = reference_adapted_predictions(model, examples, metadata, fold.validation, fold.train, config, device)
    a, b = metrics.fit_platt(validation["logits"], validation_binary, balanced=balanced)
    validation_probabilities = metrics.apply_platt(validation["logits"], a, b)
    thresholds = {
        "cost_optimal": metrics.cost_optimal_threshold(validation_binary, validation_probabilities),
        "high_sensitivity": metrics.sensitivity_threshold(validation_binary, validation_probabilities, 0.95),
    }
    test_examples = [examples[i] for i in fold.test]
    test = predict(model, test_examples, metadata[fold.test], config, device)
    unadapted_logits = None
    if config.adapt_bn != "none":
        unadapted_logits = test["logits"]
        known = np.concatenate([fold.train, fold.validation])  # a test database heard in training adapts on its references there
        test = reference_adapted_predictions(model, examples, metadata, fold.test, known, config, device)
    seconds = time.perf_counter() - started
    torch.save(
        {
            "schema": CHECKPOINT_SCHEMA,
            "model_config": model_config.to_dict(),
            "train_config": config.to_dict(),
            "model": best["state"],
            "metadata_stats": stats.to_dict(),
            "platt": {"a": a, "b": b},
            "thresholds": thresholds,
            "best_epoch": best["epoch"],
            "validation_score": best["score"],
            "history": history,
            "fold": fold.name,
        },
        fold_dir / "model.pt",
    )
    murmur_labels = None if task == "outcome" else np.array([e.murmur for e in test_examples])
    outcome = FoldOutcome(
        name=fold.name,
        test_ids=[e.patient_id for e in test_examples],
        test_labels=(labels[fold.test] <= 1).astype(np.int64) if task == "murmur" else np.array([e.outcome for e in test_examples]),
        test_logits=test["logits"],
        test_probabilities=metrics.apply_platt(test["logits"], a, b),
        test_murmur=test.get("murmur"),
        test_murmur_labels=murmur_labels,
        test_site_weights=test["site_weights"],
        validation_labels=validation_binary,
        validation_probabilities=validation_probabilities,
        platt=(a, b),
        thresholds=thresholds,
        history=history,
        best_epoch=best["epoch"],
        seconds=seconds,
        seconds_per_epoch=float(np.mean(epoch_seconds)) if epoch_seconds else float("nan"),
        test_logits_unadapted=unadapted_logits,
        platt_unadapted=unadapted_platt,
    )
    (fold_dir / "fold.json").write_text(json.dumps({"name": fold.name, "best_epoch": best["epoch"], "thresholds": thresholds, "platt": [a, b], "history": history}, indent=1))
    return outcome
