# Sourced by experiments/closure_*/run.sh: the sizes every closure run shares, each
# overridable from the environment (TOYS, N_DATA, N_TRAIN, N_FLOW, N_REF, EPOCHS,
# PATIENCE, WORKERS, SEED, OUT), and the one `pwa closure` call. The caller sets its
# own defaults for N_FLOW, N_REF, EPOCHS and PATIENCE first. Resumable: rerun the
# same command after an interruption and the finished toys are kept.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# run_closure CARD DEFAULT_OUT [more `pwa closure` options]; the log goes to OUT.log
run_closure() {
    local card=$1 out=${OUT:-$2}
    shift 2
    mkdir -p "$(dirname "$out")"
    nice pwa closure --model "$card" --toys "${TOYS:-20}" --n-data "${N_DATA:-20000}" \
        --n-train "${N_TRAIN:-50000}" --n-flow "$N_FLOW" --n-reference "$N_REF" \
        --flow-epochs "$EPOCHS" --flow-patience "$PATIENCE" --workers "${WORKERS:-2}" \
        --seed "${SEED:-2026}" --out "$out" "$@" 2>&1 | tee -a "$out.log"
}
