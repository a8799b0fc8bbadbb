#!/usr/bin/env bash
# Train the shipped psi(2S) -> K+ K- K+ K- fast simulator (models/flow_psi2s_kkkk.pt) on
# conventional MC of models/r0.yaml's reaction through the default detector, and
# validate it against 200,000 held-out conventional events.
#
#   bash experiments/flow/train_psi2s.sh [WORKDIR]
#
# * The MC is drawn with the card's Breit-Wigner proposal for the phi (fastsim generate
#   --model, weighted by default); the file records the proposal, and fastsim train
#   reads the reaction and the proposal from it.
# * The flow works in the decay tree's coordinates (fastsim.tree_coords): 7 of the 8
#   (the root azimuth is uniform), folded on z -> -z, K+ <-> K- and the mirror plane,
#   identical kaons relabelled to the phi's pairing; acceptance gates at every kaon's
#   cuts; it learns the reconstructed proposal density (training weights
#   v = w / w_R, effective size about half the sample) and its samples carry the
#   analytic weight w_R = flat / proposal.
# * 1,000,000 events (900k train / 100k validation), batch 8192, peak LR 3e-3 with a
#   cosine decay over 16 epochs (patience 16: all run, the best is kept); 8
#   couplings, ResidualNet(64), 12 bins; one torch thread.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-/tmp/fastsim_psi2s_work}
RES=experiments/results
mkdir -p "$WORK" "$RES"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
[ -f "$WORK/train.parquet" ] || nice fastsim generate --model models/r0.yaml --n 1000000 --seed 1 --out "$WORK/train.parquet"
[ -f "$WORK/reference.parquet" ] || nice fastsim generate --model models/r0.yaml --n 200000 --seed 2 --out "$WORK/reference.parquet"
RESUME=""
[ -f "$WORK/flow.pt" ] && RESUME="--resume"
/usr/bin/time -v nice fastsim train --mc "$WORK/train.parquet" --out "$WORK/flow.pt" --kind flow \
    --epochs 16 --batch-size 8192 --lr 3e-3 --patience 16 --max-minutes 30 --seed 0 \
    --hp n_layers=8 --hp hidden=64 --hp n_bins=12 $RESUME 2>&1 | tee "$RES/flow_psi2s_train.log"
nice fastsim validate --model "$WORK/flow.pt" --reference "$WORK/reference.parquet" --out "$RES/flow_psi2s_validation"
cp "$WORK/flow.pt" models/flow_psi2s_kkkk.pt
cp "$RES/flow_psi2s_validation/metrics.json" models/flow_psi2s_kkkk.metrics.json
