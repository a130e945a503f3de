#!/usr/bin/env bash
# Reproduce benchmarks/export/ (issue 23): M²IV trained on the sandbox with `m2iv demo`'s recipe, then
#   merged into the weights and evaluated as a plain model with no vectors (m2iv merge + eval --method zero-shot),
#   exported as a llama.cpp control vector (--approximate), imported back and evaluated (m2iv export / import),
# and the exactness / fidelity figures (fidelity.py). Every step resumes. Usage: bash benchmarks/export/run.sh [step ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
M2IV=${M2IV:-.venv/bin/m2iv}
PY=${PY:-.venv/bin/python}
TASKS=${TASKS:-sandbox-colour-nonce,sandbox-shape-nonce,sandbox-colour-french}
W=runs/export
OUT=benchmarks/export
steps=${*:-"hooked merged gguf fidelity"}
# A task's M²IV vectors: $W/vectors-TASK if placed there (e.g. a copy of `m2iv bench library`'s), else the ones the
# hooked step trained.
vectors() { if [ -e $W/vectors-$1 ]; then echo $W/vectors-$1; else ls -d $W/work/$1/m2iv-16shot/vectors-* | grep -v '\.train$' | head -1; fi; }
for step in $steps; do
  case $step in
    hooked) $M2IV bench compare sandbox --task $TASKS --method m2iv --shots 16 --steps 60 --train-queries 96 \
              --train-batch-size 16 --n-test 100 --batch-size 8 --work $W/work --out $OUT/demo_hooked.json ;;
    merged) for t in ${TASKS//,/ }; do
              [ -f $W/merged-$t/m2iv_merge.json ] || $M2IV merge sandbox --vectors "$(vectors $t)" --out $W/merged-$t
              $M2IV eval $W/merged-$t --task $t --method zero-shot --n-test 100 --batch-size 8 --out $W/eval-merged-$t
            done ;;
    gguf) for t in ${TASKS//,/ }; do
            $M2IV export --vectors "$(vectors $t)" --format gguf-control-vector --approximate --force --out $W/$t.gguf
            [ -f $W/imported-$t/m2iv_config.json ] || $M2IV import sandbox $W/$t.gguf --out $W/imported-$t
            $M2IV eval sandbox --task $t --method vectors --vectors $W/imported-$t --n-test 100 --batch-size 8 \
              --out $W/eval-gguf-$t
          done ;;
    fidelity) $PY $OUT/fidelity.py --work $W --tasks $TASKS --out $OUT/export.json ${FIDELITY_ARGS:-} ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
