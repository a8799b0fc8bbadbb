#!/usr/bin/env bash
# End-to-end demo on shipped defaults (run by `make demo`, which puts the
# project's virtual environment first on PATH). Writes everything into
# demo_out/ (override with DEMO_OUT=...). About 3-5 minutes on 2 CPU cores
# (198 s measured, after the set-up).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
mkdir -p "$OUT"
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start )) s] $*"; }

step "1. conventional MC of J/psi -> gamma K+ K-: flat phase space through the BESIII-like detector"
fastsim generate --n 200000 --out "$OUT/mc.parquet" --detector default --seed 1

step "2. the seed's benchmark R0 in its own reaction, psi(2S) -> phi f_J -> K+ K- K+ K-: fit fractions (seed Table 1)"
pwa fractions --model models/r0.yaml --n-mc 200000

step "2b. psi(2S) -> K+ K- K+ K-: conventional MC, toy data through the detector, and a fit"
fastsim generate --model models/r0.yaml --n 100000 --out "$OUT/mc_r0.parquet" --detector default --seed 11
pwa generate --model models/r0.yaml --n 3000 --out "$OUT/data_r0.parquet" --seed 12
pwa fit --model models/r0.yaml --data "$OUT/data_r0.parquet" --mc "$OUT/mc_r0.parquet" --out "$OUT/fit_r0" \
    --starts 1
pwa fit --model models/r0.yaml --data "$OUT/data_r0.parquet" --mc flow --n-mc 100000 --out "$OUT/fit_r0_flow" \
    --starts 1 --seed 13   # the shipped psi(2S) -> K+ K- K+ K- flow (weighted samples)

step "3. J/psi -> gamma K+ K-: toy data of its R0 through the detector"
pwa generate --model models/jpsi_gamma_kk.yaml --n 5000 --out "$OUT/data.parquet" --seed 2

step "4. the shipped flow against held-out conventional MC"
fastsim validate --model models/flow_besiii_like.pt --reference "$OUT/mc.parquet" --out "$OUT/flow_validation" \
    --n-model 100000 --no-record

step "5. fit with conventional MC"
pwa fit --model models/jpsi_gamma_kk.yaml --data "$OUT/data.parquet" --mc "$OUT/mc.parquet" --out "$OUT/fit_conventional"

step "6. fit with flow MC (the shipped flow), DCTR-reweighted to the conventional MC"
pwa fit --model models/jpsi_gamma_kk.yaml --data "$OUT/data.parquet" --mc flow --n-mc 200000 \
    --reweight "$OUT/mc.parquet" --out "$OUT/fit_flow" --seed 3

step "7. a short closure test (2 toys; each trains its own flow on its affordable MC)"
pwa closure --model models/jpsi_gamma_kk.yaml --toys 2 --n-data 2000 --n-train 20000 --n-flow 100000 \
    --n-reference 200000 --flow-epochs 4 --workers 2 --out "$OUT/closure" --seed 4 > "$OUT/closure.log"
tail -n 3 "$OUT/closure.log"

step "done: results in $OUT/"
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
conv = json.load(open(f"{out}/fit_conventional/result.json"))
flow = json.load(open(f"{out}/fit_flow/result.json"))
print(f"{'fraction (%)':<12} {'conventional MC':>18} {'flow MC':>18}")
for name in conv["fractions"]:
    a, b = conv["fractions"][name], flow["fractions"][name]
    print(f"{name:<12} {100*a['value']:>9.2f} ± {100*a['error']:<6.2f} {100*b['value']:>9.2f} ± {100*b['error']:<6.2f}")
a, b = conv["sum_of_fractions"], flow["sum_of_fractions"]
print(f"{'SF':<12} {100*a['value']:>9.2f} ± {100*a['error']:<6.2f} {100*b['value']:>9.2f} ± {100*b['error']:<6.2f}")
print(f"closure report: {out}/closure/report.md")
PY
