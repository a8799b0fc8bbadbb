#!/usr/bin/env bash
# Train the shipped default fast simulator (models/flow_besiii_like.pt) and the
# VAE baseline on conventional MC from the default (BESIII-like) detector, then
# validate both against 200,000 held-out conventional events.
#
#   bash experiments/flow/train_default.sh [WORKDIR]
#
# Training and reference samples use different seeds (independent samples).
# Outputs: models/flow_besiii_like.pt (+ _training.png, .metrics.json),
# experiments/results/flow_default_validation/, flow_vae_validation/ and the logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/fastsim_flow_work}
RES=experiments/results
mkdir -p "$WORK" "$RES"
N_TRAIN=${N_TRAIN:-500000}
N_REF=${N_REF:-200000}

[ -f "$WORK/train.parquet" ] || fastsim generate --n "$N_TRAIN" --seed 1 --out "$WORK/train.parquet"
[ -f "$WORK/reference.parquet" ] || fastsim generate --n "$N_REF" --seed 2 --out "$WORK/reference.parquet"

# Flow: resumes if a checkpoint from an interrupted run is there.
RESUME=""
[ -f models/flow_besiii_like.pt ] && RESUME="--resume"
/usr/bin/time -v fastsim train --mc "$WORK/train.parquet" --out models/flow_besiii_like.pt --kind flow \
    --epochs 40 --patience 6 --max-minutes 20 --seed 0 $RESUME 2>&1 | tee "$RES/flow_default_train.log"
fastsim validate --model models/flow_besiii_like.pt --reference "$WORK/reference.parquet" \
    --out "$RES/flow_default_validation"
cp "$RES/flow_default_validation/metrics.json" models/flow_besiii_like.metrics.json

# VAE baseline (same data, same validation).
RESUME=""
[ -f "$WORK/vae.pt" ] && RESUME="--resume"
fastsim train --mc "$WORK/train.parquet" --out "$WORK/vae.pt" --kind vae --epochs 30 --patience 5 \
    --max-minutes 6 --seed 0 $RESUME 2>&1 | tee "$RES/flow_vae_train.log"
fastsim validate --model "$WORK/vae.pt" --reference "$WORK/reference.parquet" --out "$RES/flow_vae_validation"
