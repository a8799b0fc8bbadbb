#!/usr/bin/env bash
# GPU benchmarks, < 5 minutes on one modern card. Needs `pip install -e .` and
# jax[cuda12] (plus ampform/tensorwaves for the comparison part).
# Writes JSON (with the card's name) to experiments/results/:
#   bench_likelihood_gpu.json     - STREAM bandwidth, NLL/gradient/Hessian, bytes moved, FALLS config
#   bench_vs_tensorwaves_gpu.json - ours vs tensorwaves at 20,000 data / 400,000 MC (NLL, gradient, our fits)
# Usage: bash experiments/bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RES=experiments/results
mkdir -p "$RES"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
unset JAX_PLATFORMS XLA_FLAGS

python - <<'PY'
import jax, sys
d = jax.devices()[0]
print("device:", d, getattr(d, "device_kind", ""), "platform:", d.platform)
if d.platform != "gpu":
    sys.exit("no GPU visible to JAX: install jax[cuda12]")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$RES/gpu_card.txt" || true

# 1. likelihood + bandwidth + FALLS (about 1-2 minutes)
timeout 200 python experiments/bench/bench_likelihood.py --quick --out "$RES/bench_likelihood_gpu.json"

# 2. against tensorwaves on the same card (NLL, gradient, our fits; the tensorwaves fits
#    are left out to stay within 5 minutes). Skipped if ampform/tensorwaves are missing.
if python -c "import ampform, tensorwaves" 2>/dev/null; then
  timeout 240 python experiments/bench/bench_vs_tensorwaves.py --n-data 20000 --n-mc 400000 \
    --cases fixed --repeats 5 --tw-repeats 3 --out "$RES/bench_vs_tensorwaves_gpu.json" || echo "tensorwaves part failed or timed out"
else
  echo "ampform/tensorwaves not installed: comparison skipped"
fi
echo "card: $(cat "$RES/gpu_card.txt" 2>/dev/null)"
