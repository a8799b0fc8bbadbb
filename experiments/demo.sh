#!/usr/bin/env bash
# End-to-end demo on shipped defaults (run by `make demo`, which puts the
# project's virtual environment first on PATH). Writes into demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
mkdir -p "$OUT"

echo "== conventional MC: flat phase space through the BESIII-like detector"
fastsim generate --n 200000 --out "$OUT/mc.parquet" --detector default --seed 1
