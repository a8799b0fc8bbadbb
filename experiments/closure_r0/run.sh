#!/usr/bin/env bash
# Closure test on the seed's reaction, psi(2S) -> phi K+ K- (model R0, models/r0.yaml):
# K toys, each with N data events, T conventional MC events on which a fresh flow is
# trained, F flow events and a conventional reference of R events, all through the
# default detector. The MC is drawn with the card's Breit-Wigner proposal for the
# phi and weighted flat / proposal; the flow, in the decay tree's coordinates
# (fastsim.tree_coords: masses through the proposal's conditional CDF, folded on the
# rotation about the beam, z -> -z, K+ <-> K- and the mirror plane, identical kaons
# relabelled to the phi's pairing), learns the reconstructed proposal density with
# gates at every kaon's cuts, and its samples carry the analytic weight.
# Resumable: rerun the same command after an interruption.
#
#   bash experiments/closure_r0/run.sh                  # the committed run's settings
#   TOYS=40 N_REF=2000000 bash experiments/closure_r0/run.sh
#
# Sizes: T and N as the J/psi -> gamma K+ K- closure (experiments/closure_jpsi);
# F = 400,000 and R = 1,000,000 (half of that run's R) fit 20 toys into about an hour
# with two workers on the 2-core machine.
N_FLOW=${N_FLOW:-400000}
N_REF=${N_REF:-1000000}
EPOCHS=${EPOCHS:-20}
PATIENCE=${PATIENCE:-5}
source "$(dirname "$0")/../closure_common.sh"
export OMP_NUM_THREADS=1
run_closure models/r0.yaml experiments/results/closure_r0
