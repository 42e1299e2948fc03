#!/usr/bin/env bash
# Rebuild the bundled default model, runtime/models/default.onnx (the children's model), its reference
# outputs, runtime/models/default.reference.json, and its pinned hash, runtime/models/default.onnx.sha256.
# Run from anywhere; it works in the repository root. About an hour on this 2-core machine: the outcome
# run took 32 min, the murmur run 21 min, one after the other (the feature cache is not safe for two
# processes filling it at once), then 80 s of export and checks.
#
#   scripts/build_default_model.sh
#   OUTCOME_RUN=runs/c20-p0-hyper-pn16-s0 MURMUR_RUN=runs/ship-murmur scripts/build_default_model.sh   # reuse finished runs
#
# What it builds (chosen in trainer/STATUS.md, issue 20, on partition 0 of the shared CirCor children only):
#   outcome  the hypernetwork (demographics -> the final layer's weights), 5-fold cross-validation on the
#            saved CirCor partition 0, with PhysioNet 2016 as extra training data (30 % of each batch, never
#            in a test fold): refer / no referral. The five fold models are the shipped ensemble and their
#            out-of-fold predictions give every figure in the manifest.
#   murmur   the hypernetwork trained for the three murmur classes on the same folds: Present / Unknown /
#            Absent, a fourth output of the same ONNX file. It does not enter the referral decision.
#
# Settings (environment):
#   DATA         labelled CirCor tree, read in place                  (default ../shared/data/circor)
#   EXTRA        extra outcome training data, read in place           (default ../shared/data/physionet2016)
#   FOLDS_FILE   saved patient partition                              (default trainer/partitions/circor-p0.json)
#   SEED         training seed                                        (default 0)
#   OUTCOME_RUN  a finished outcome run to use instead of training one (same settings; the manifest records its command)
#   MURMUR_RUN   a finished murmur run to use instead of training one
#   NAME         run folder prefix under runs/                        (default default)
#   SIGN_KEY     pcg-export --sign-key (a programme's key); without it the file is trusted by its pinned hash
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data/circor}
EXTRA=${EXTRA:-../shared/data/physionet2016}
FOLDS_FILE=${FOLDS_FILE:-trainer/partitions/circor-p0.json}
SEED=${SEED:-0}
NAME=${NAME:-default}
EXPORT=runs/$NAME-export
COMMON=(--data "$DATA" --epochs 30 --quiet --folds-file "$FOLDS_FILE" --model hyper --seed "$SEED")
# 20 children: every age group (and the pregnant, who have none), both outcomes, the three murmur classes,
# one to four sites (50734 has two recordings of one site).
REFERENCE_IDS=49829,36327,49653,84983,24160,13918,29378,43852,46532,49897,50116,49873,49900,49607,49987,51064,85034,84731,49946,50734

train() {  # train RUN_DIR FLAGS...: a fresh run, refusing to overwrite a finished one
    local run=$1
    shift
    if [ -e "$run/metrics.json" ]; then
        echo "build_default_model: $run exists; move it away (or pick another NAME, or pass it as OUTCOME_RUN/MURMUR_RUN)" >&2
        exit 2
    fi
    python -m trainer.crossval "${COMMON[@]}" "$@" --out "$run"
}

OUTCOME_RUN=${OUTCOME_RUN:-}
MURMUR_RUN=${MURMUR_RUN:-}
if [ -z "$OUTCOME_RUN" ]; then
    OUTCOME_RUN=runs/$NAME-outcome
    train "$OUTCOME_RUN" --task outcome --extra-data "$EXTRA" --extra-share 0.3
fi
if [ -z "$MURMUR_RUN" ]; then
    MURMUR_RUN=runs/$NAME-murmur
    train "$MURMUR_RUN" --task murmur
fi
SIGN=()
if [ -n "${SIGN_KEY:-}" ]; then
    SIGN=(--sign-key "$SIGN_KEY")
fi
pcg-export "$OUTCOME_RUN" --murmur-run "$MURMUR_RUN" --out "$EXPORT/default.onnx" --reference-ids "$REFERENCE_IDS" "${SIGN[@]}"
cp "$EXPORT/default.onnx" "$EXPORT/default.reference.json" runtime/models/
# the bundled model is trusted by its pinned hash (runtime/signing.py): no private key in git
sha256sum runtime/models/default.onnx | cut -d' ' -f1 > runtime/models/default.onnx.sha256
python -m trainer.operating "$OUTCOME_RUN" --data "$DATA" --out "$EXPORT"
python -m pytest -q tests/test_bundled_model.py
