#!/usr/bin/env bash
# GPU benchmarks in one script, 6-7 minutes on one H100 (each part has its own timeout,
# so a slow part cannot starve the others; worst case 10 minutes). Needs the
# project importable (pip install -e . or PYTHONPATH=.), a CUDA build of JAX and of torch,
# and for the comparison ampform + tensorwaves (extra `bench`).
#
#   bash experiments/bench/gpu.sh                 # results into experiments/results/
#   RES=/some/dir bash experiments/bench/gpu.sh   # results elsewhere
#
# Writes, each with the card's name inside:
#   gpu_card.txt                   nvidia-smi name, memory, driver
#   bench_likelihood_gpu.json      STREAM-like bandwidth, NLL/gradient/Hessian (fixed and
#                                  floating lineshapes), bytes moved, the FALLS configuration
#   bench_vs_tensorwaves_gpu.json  ours vs tensorwaves at 20,000 data / 400,000 MC: value,
#                                  gradient and full fits, lineshapes fixed and floating
#   flow_benchmark_gpu.json        shipped flow: sampling and float64 log-density rates on the GPU
#   flow_train_gpu.log             `fastsim train --device cuda` on 1,000,000 events (2 epochs)
set -uo pipefail
cd "$(dirname "$0")/../.."
RES=${RES:-experiments/results}
mkdir -p "$RES"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
unset JAX_PLATFORMS XLA_FLAGS
PY=${PYTHON:-python3}
T0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }

stamp "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$RES/gpu_card.txt"
$PY - <<'PY' || exit 1
import sys
import jax, torch
d = jax.devices()[0]
print("jax", jax.__version__, d, getattr(d, "device_kind", ""), "| torch", torch.__version__,
      "cuda" if torch.cuda.is_available() else "NO CUDA")
if d.platform != "gpu" or not torch.cuda.is_available():
    sys.exit("JAX or torch does not see a GPU")
PY

stamp "1. likelihood, bandwidth, FALLS"
timeout 100 $PY experiments/bench/bench_likelihood.py --quick --floating-hessian \
    --out "$RES/bench_likelihood_gpu.json" || echo "bench_likelihood failed or timed out"

stamp "2. against tensorwaves (value, gradient, fits; fixed and floating)"
if $PY -c "import ampform, tensorwaves" 2>/dev/null; then
  # two processes, so that a slow floating case cannot take the fixed one with it; they
  # share the generated events (--events-cache). On the H100 (2026-11-27) the set-up before
  # the first timing (tensorwaves model, accept-reject data through its intensity, its
  # helicity variables) took ~160 s; both write their value/gradient timings before the fits.
  EV=$(mktemp -d)/events_20000_400000.npz
  timeout 200 $PY experiments/bench/bench_vs_tensorwaves.py --n-data 20000 --n-mc 400000 \
      --cases fixed --tw-fit fixed --repeats 5 --tw-repeats 3 --events-cache "$EV" \
      --out "$RES/bench_vs_tensorwaves_gpu.json" || echo "tensorwaves comparison (fixed) failed or timed out"
  timeout 170 $PY experiments/bench/bench_vs_tensorwaves.py --n-data 20000 --n-mc 400000 \
      --cases floating --fit-floating --tw-fit floating --repeats 5 --tw-repeats 2 --events-cache "$EV" \
      --out "$RES/bench_vs_tensorwaves_gpu.json" || echo "tensorwaves comparison (floating) failed or timed out"
else
  echo "ampform/tensorwaves not installed: comparison skipped"
fi

stamp "3. flow sampling and training on the GPU"
timeout 45 $PY - "$RES/flow_benchmark_gpu.json" <<'PY' || echo "flow sampling benchmark failed or timed out"
import json, sys, time
import numpy as np, torch
from fastsim.checkpoint import load_simulator
sim = load_simulator("models/flow_besiii_like.pt", device="cuda")
res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
for n in (1_000_000, 4_000_000):
    sim.sample_hv(10_000, seed=0)
    torch.cuda.synchronize(); t = time.perf_counter()
    hv = sim.sample_hv(n, seed=1, chunk_size=1_000_000)
    res[f"sample_hv_per_s_{n}"] = n / (time.perf_counter() - t)
t = time.perf_counter(); lp = sim.log_prob(hv[:1_000_000]); res["log_prob_float64_per_s"] = 1e6 / (time.perf_counter() - t)
res["log_prob_finite_fraction"] = float(np.isfinite(lp).mean())
print(json.dumps(res, indent=1)); open(sys.argv[1], "w").write(json.dumps(res, indent=1) + "\n")
PY
W=$(mktemp -d)
timeout 30 $PY -m cli.fastsim_app generate --n 1000000 --seed 1 --out "$W/train.parquet" >/dev/null \
  && timeout 60 $PY -m cli.fastsim_app train --mc "$W/train.parquet" --out "$W/flow.pt" --kind flow \
       --device cuda --epochs 2 --batch-size 8192 --lr 3e-3 --seed 0 \
       --hp n_layers=6 --hp hidden=64 --hp n_blocks=1 --hp n_bins=16 2>&1 | tail -5 | tee "$RES/flow_train_gpu.log" \
  || echo "flow training failed or timed out"
stamp "done; card: $(cat "$RES/gpu_card.txt" 2>/dev/null)"
