#!/usr/bin/env bash
# Reproduce every committed benchmark on the sandbox LVLM (2-core CPU; see benchmarks/README.md for times).
# Each step resumes from runs/bench/ if interrupted. Usage: bash benchmarks/run_all.sh [step ...]
set -euo pipefail
cd "$(dirname "$0")/.."
M2IV=${M2IV:-.venv/bin/m2iv}
SUITE=sandbox-colour-nonce,sandbox-shape-nonce,sandbox-colour-french,sandbox-shape-adjective,sandbox-colour-number
steps=${*:-"build curve suite compare efficiency many-shot"}
for step in $steps; do
  case $step in
    build) $M2IV sandbox build ;;
    curve) $M2IV bench icl-curve sandbox --tasks $SUITE --shots 0,1,2,4,8,16,32 --n-test 50 \
             --out benchmarks/sandbox_icl/curves.json ;;
    suite) $M2IV bench suite sandbox --tasks $SUITE --shots 16 --n-test 100 --steps 80 --train-queries 128 \
             --out benchmarks/sandbox_suite.json ;;
    compare) $M2IV bench compare sandbox --tasks sandbox-colour-nonce --budget cpu --shots 16 --n-test 100 \
             --steps 80 --train-queries 128 --out benchmarks/compare/sandbox.json ;;
    efficiency) $M2IV bench efficiency sandbox --task sandbox-colour-nonce --vectors-from runs/bench/compare \
             --n 30 --out benchmarks/efficiency.json ;;
    many-shot) $M2IV bench many-shot sandbox --tasks sandbox-colour-nonce,sandbox-shape-nonce --window 512 \
             --icl-shots 0,4,8,16,32,64 --m2iv-shots 16,32,64,128 --n-test 100 \
             --out benchmarks/many_shot/sandbox.json ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
