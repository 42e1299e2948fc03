#!/usr/bin/env bash
# Rebuild the bundled default model, runtime/models/default.onnx, and its reference outputs,
# runtime/models/default.reference.json, from the shared PhysioNet 2016 data. Run from anywhere;
# it works in the repository root. About 45 minutes on one free CPU core (one 5-fold run, three LODO runs).
#
#   scripts/build_default_model.sh
#   MODEL=hyper TRAIN_FLAGS="--epochs 35 --augment strong --quiet" NAME=pn16-hyper scripts/build_default_model.sh
#
# Settings (environment):
#   DATA         labelled PhysioNet 2016 tree, read in place   (default ../shared/data/physionet2016)
#   MODEL        pcg-train --model                             (default primary)
#   TRAIN_FLAGS  further pcg-train flags, the same for every run (default: the flags recommended by
#                trainer/STATUS.md for unseen stethoscopes, "--epochs 30 --patience 30 --freq-rows 32 --mixup 0.4
#                --augment masked --calibration balanced --quiet")
#   SEEDS        further seeds of the LODO run, recorded as the manifest's seed spread (default "1 2")
#   NAME         run folder prefix under runs/                 (default default)
#
# Steps: (1) 5-fold cross-validation: the fold models become the shipped ensemble and give the
# out-of-fold figures; (2) leave-one-database-out with the same settings: its figures go into the
# manifest too (pcg-export refuses a LODO run whose settings differ); (3) pcg-export with the
# reference outputs on REFERENCE_IDS; (4) copy into the package and check it with the runtime.
# The two trainings run one after the other: the feature cache is not safe for two processes filling
# it at once.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/physionet2016}
MODEL=${MODEL:-primary}
TRAIN_FLAGS=${TRAIN_FLAGS:---epochs 30 --patience 30 --freq-rows 32 --mixup 0.4 --augment masked --calibration balanced --quiet}
SEEDS=${SEEDS:-1 2}
NAME=${NAME:-default}
KFOLD=runs/$NAME-5fold
LODO=runs/$NAME-lodo
EXPORT=runs/$NAME-export
# 20 recordings, 4 databases, both labels; d0001/d0006 (6 s) are shorter than one 8 s crop, c0031 is 122 s.
REFERENCE_IDS=a0001,a0002,a0007,a0009,a0025,c0002,c0003,c0005,c0031,d0001,d0006,d0009,d0015,d0029,e00006,e00020,e00026,e00048,e00059,e00103

for run in "$KFOLD" "$LODO"; do
    if [ -e "$run/metrics.json" ]; then
        echo "build_default_model: $run exists; move it away (or pick another NAME) so the model is rebuilt from scratch" >&2
        exit 2
    fi
done

# shellcheck disable=SC2086  # TRAIN_FLAGS is a list of flags
python -m trainer.crossval --data "$DATA" --model "$MODEL" --folds 5 --out "$KFOLD" $TRAIN_FLAGS
# shellcheck disable=SC2086
python -m trainer.crossval --data "$DATA" --model "$MODEL" --folds lodo --out "$LODO" $TRAIN_FLAGS
SEED_RUNS=()
for seed in $SEEDS; do
    # shellcheck disable=SC2086
    python -m trainer.crossval --data "$DATA" --model "$MODEL" --folds lodo --out "$LODO-s$seed" --seed "$seed" $TRAIN_FLAGS
    SEED_RUNS+=(--lodo-seed-run "$LODO-s$seed")
done
pcg-export "$KFOLD" --out "$EXPORT/default.onnx" --lodo-run "$LODO" "${SEED_RUNS[@]}" --reference-ids "$REFERENCE_IDS"
cp "$EXPORT/default.onnx" "$EXPORT/default.reference.json" runtime/models/
# the bundled model is trusted by its pinned hash (runtime/signing.py): no private key in git
sha256sum runtime/models/default.onnx | cut -d' ' -f1 > runtime/models/default.onnx.sha256
python -m pytest -q tests/test_bundled_model.py
