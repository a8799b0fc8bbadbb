#!/usr/bin/env bash
# Full R0 closure test (issue 6): K toys, each with N data events, a conventional
# MC budget of T events on which a fresh flow is trained, F flow events and a
# large conventional reference of R events. Resumable: rerun the same command
# after an interruption and finished toys are kept. The per-toy flow trains up to
# EPOCHS epochs with early stopping (PATIENCE) in the phase-space m coordinate, on
# folded coordinates (the detector symmetries; pwa closure --flow-fold, the default).
# The flows carry acceptance gates at the detector card's cuts (fastsim.acceptance;
# pwa closure --flow-gates, the default; the run without them is in results/closure_jpsi_plain,
# the run with gates but without the tracking turn-on in results/closure_jpsi_gates_step).
# BOOTSTRAP replica flows (default 1) add the bootstrap-bias-corrected flow (flow_bc).
#
#   bash experiments/closure_jpsi/run.sh            # defaults below
#   TOYS=10 WORKERS=2 bash experiments/closure_jpsi/run.sh
N_FLOW=${N_FLOW:-500000}
N_REF=${N_REF:-2000000}
EPOCHS=${EPOCHS:-40}
PATIENCE=${PATIENCE:-8}
source "$(dirname "$0")/../closure_common.sh"
run_closure models/jpsi_gamma_kk.yaml experiments/results/closure_jpsi \
    --flow-batch-size "${BATCH:-2048}" --flow-lr "${LR:-2e-3}" --flow-bootstrap "${BOOTSTRAP:-1}"
