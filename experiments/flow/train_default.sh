#!/usr/bin/env bash
# Train the shipped default fast simulator (models/flow_besiii_like.pt) and
# (optionally, TRAIN_VAE=1) the VAE baseline on conventional MC from the
# default (BESIII-like) detector, then validate against 200,000 held-out
# conventional events.
#
#   bash experiments/flow/train_default.sh [WORKDIR]
#
# Settings sized for the 2-core shared CPU (40-minute training budget):
# * 1,000,000 training events (900k train / 100k validation), batch 8192,
#   peak LR 3e-3 with a cosine decay that completes over the planned 16
#   epochs (the wall-clock cap is only a safety net; patience 16: all epochs run,
#   the best validation epoch is kept);
# * the flow the closure uses (fastsim train's defaults): folded coordinates
#   (--fold: 4 coordinates on the fundamental domain of the detector's symmetries),
#   acceptance gates at the card's cuts (--gates), and a fixed piecewise-linear
#   pre-transform with knots at the photon acceptance edges (--edge-knots);
# * 6 couplings, ResidualNet(64, 1 block), 16 bins;
# * one torch thread (OMP_NUM_THREADS=1): on a loaded 2-core machine two
#   threads wait on each other and train 2-3x slower.
# Training and reference samples use different seeds (independent samples).
# Outputs: models/flow_besiii_like.pt (+ _training.png, .metrics.json),
# experiments/results/flow_default_validation/, flow_vae_validation/ and the logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/fastsim_flow_work2}
RES=experiments/results
mkdir -p "$WORK" "$RES"
N_TRAIN=${N_TRAIN:-1000000}
N_REF=${N_REF:-200000}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

[ -f "$WORK/train.parquet" ] || nice fastsim generate --n "$N_TRAIN" --seed 1 --out "$WORK/train.parquet"
[ -f "$WORK/reference.parquet" ] || nice fastsim generate --n "$N_REF" --seed 2 --out "$WORK/reference.parquet"

# Flow: resumes if a checkpoint from an interrupted run is there.
RESUME=""
[ -f models/flow_besiii_like.pt ] && RESUME="--resume"
/usr/bin/time -v nice fastsim train --mc "$WORK/train.parquet" --out models/flow_besiii_like.pt --kind flow \
    --epochs 16 --batch-size 8192 --lr 3e-3 --patience 16 --max-minutes 40 --seed 0 \
    --hp n_layers=6 --hp hidden=64 --hp n_blocks=1 --hp n_bins=16 $RESUME 2>&1 | tee "$RES/flow_default_train.log"
nice fastsim validate --model models/flow_besiii_like.pt --reference "$WORK/reference.parquet" \
    --out "$RES/flow_default_validation"
cp "$RES/flow_default_validation/metrics.json" models/flow_besiii_like.metrics.json

# VAE baseline (same data, same validation).
if [ "${TRAIN_VAE:-0}" = 1 ]; then
    RESUME=""
    [ -f "$WORK/vae.pt" ] && RESUME="--resume"
    nice fastsim train --mc "$WORK/train.parquet" --out "$WORK/vae.pt" --kind vae --epochs 30 --patience 5 \
        --max-minutes 6 --seed 0 $RESUME 2>&1 | tee "$RES/flow_vae_train.log"
    nice fastsim validate --model "$WORK/vae.pt" --reference "$WORK/reference.parquet" --out "$RES/flow_vae_validation"
fi
