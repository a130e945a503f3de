#!/usr/bin/env bash
# Reproduce every committed benchmark on the sandbox LVLM (2-core CPU; see benchmarks/README.md for times).
# Cells are shared through runs/bench/shared (the demo's zero-shot, ICL and M²IV runs are the suite's and the
# comparison's), and every step resumes if interrupted. Usage: bash benchmarks/run_all.sh [step ...]
# (compare-long, LIVE and MimIC at 300 steps, sweep, compare-v1, compare-v2, many-shot-v2, compare-26 and sweep-v1 are
# not in the default list: run them by name after `compare` (compare-v1 after sweep); they merge their runs into the
# committed tables with `m2iv bench merge`.)
set -euo pipefail
cd "$(dirname "$0")/.."
M2IV=${M2IV:-.venv/bin/m2iv}
SUITE=sandbox-colour-nonce,sandbox-shape-nonce,sandbox-colour-french,sandbox-shape-adjective,sandbox-colour-number
DEMO=sandbox-colour-nonce,sandbox-shape-nonce,sandbox-colour-french
W=runs/bench/shared
RECIPE="--shots 16 --n-test 100 --steps 60 --train-batch-size 16 --train-queries 96"
steps=${*:-"build demo suite curve compare efficiency serving many-shot library report"}
for step in $steps; do
  case $step in
    build) $M2IV sandbox build ;;
    demo) mkdir -p benchmarks/demo
          { time $M2IV demo --task $DEMO --work $W --out benchmarks/demo; } 2>&1 | grep -v "it/s" \
            | tee benchmarks/demo/demo_log.txt ;;
    suite) $M2IV bench suite sandbox --task ${SUITE_TASKS:-$SUITE} $RECIPE --work $W --out benchmarks/sandbox_suite.json ;;
    curve) $M2IV bench icl-curve sandbox --task $SUITE --shots 0,1,2,4,8,16,32 --n-test 50 \
             --out benchmarks/sandbox_icl/curves.json ;;
    compare) $M2IV bench compare sandbox --task ${COMPARE_TASKS:-$SUITE} --budget cpu $RECIPE --work $W \
             --out benchmarks/compare/sandbox.json ;;
    compare-long) $M2IV bench compare sandbox --task sandbox-colour-nonce --method live,mimic --budget cpu --shots 16 \
             --n-test 100 --steps 300 --train-batch-size 16 --train-queries 96 --work runs/bench/steps300 \
             --out benchmarks/compare/steps300.json ;;
    efficiency) for cfg in "1 1" "4 1" "1 8"; do set -- $cfg
                  $M2IV bench efficiency sandbox --task sandbox-colour-nonce --vectors-from $W --n-test 48 --new-tokens $1 \
                    --batch-size $2 --out benchmarks/efficiency/sandbox-${1}tok-batch$2.json
                done ;;
    serving) # issue 26: TTFT / TPOT / e2e per request, ICL at 4 / 16 / the most that fit, break-even query counts,
             # and each trained method's training step against a plain forward+backward and a fine-tune step
             $M2IV bench efficiency sandbox --task sandbox-colour-nonce --vectors-from $W --n-test ${SERVING_N:-16} \
               --new-tokens 4 --batch-size 1 --icl-shots 4,max --training-step --train-batch-size 16 \
               --out benchmarks/efficiency/sandbox-serving.json ;;
    compare-26) # issue 26: LoRA, Cartridge (original rates, as every row of the first table) and Parallel-ICL with
             # clustered and random chunks, on the five v1 tasks, merged into the comparison table
             $M2IV bench compare sandbox --task ${COMPARE_TASKS:-$SUITE} --method parallel-icl,lora,cartridge \
               --budget cpu $RECIPE --work $W --out runs/v26/v1-new.json
             $M2IV bench merge benchmarks/compare/sandbox.json runs/v26/v1-new.json --out benchmarks/compare/sandbox.json
             for t in vqa caption colour-caps pair-nonce; do  # suite v2 and the many-shot task (16 shots fit its window)
               $M2IV bench compare sandbox --task sandbox-$t --method parallel-icl,lora,cartridge --budget cpu $RECIPE \
                 --work runs/bench/v26 --out runs/v26/$t-new.json
               if [ -f benchmarks/compare/sandbox-$t.json ]; then old=benchmarks/compare/sandbox-$t.json; else old=; fi
               $M2IV bench merge $old runs/v26/$t-new.json --out benchmarks/compare/sandbox-$t.json
             done ;;
    sweep-v1) # issue 26: each trained baseline's rate swept per v1 task other than colour-nonce (its grid of 3 rates,
             # 24 validation queries); a row already at 1.00 with its colour-nonce rate is not swept (colour-french:
             # LoRA, Cartridge, LIVE, HiFICL), as a rate cannot raise it
             for t in shape-nonce shape-adjective colour-number colour-french; do
               for m in ${SWEEP_METHODS:-lora cartridge hificl live mimic i2cl}; do
                 case $t:$m in colour-french:lora|colour-french:cartridge|colour-french:live|colour-french:hificl) continue ;; esac
                 $M2IV bench compare sandbox --task sandbox-$t --method $m --budget cpu $RECIPE --lr-sweep default \
                   --work runs/bench/v14 --out runs/v26/sweep/$t-$m.json
               done
             done
             $M2IV bench merge benchmarks/compare/sandbox.json runs/v26/sweep/*.json --out benchmarks/compare/sandbox.json ;;
    sweep) for m in live mimic i2cl; do  # issue 14: each baseline's rate on colour-nonce (3 rates, 24 val queries)
             $M2IV bench compare sandbox --task sandbox-colour-nonce --method $m --budget cpu $RECIPE --lr-sweep default \
               --work runs/bench/v14 --out runs/v14/sweep_$m.json
           done
           $M2IV bench compare sandbox --task sandbox-colour-nonce --method hificl --budget cpu $RECIPE --work runs/bench/v14 \
             --out runs/v14/hificl60.json
           $M2IV bench merge runs/v14/sweep_{live,mimic,i2cl}.json runs/v14/hificl60.json \
             --out benchmarks/compare/sweep_colour_nonce.json ;;
    compare-v2) V2="bench compare sandbox --budget cpu $RECIPE --work runs/bench/v2"  # issue 14, suite v2
           # sandbox-vqa at the originals' rates; sandbox-caption: M²IV swept, each baseline at its colour-nonce rate
           $M2IV $V2 --task sandbox-vqa --method zero-shot,icl,m2iv,live,mimic,i2cl,hificl,tv,icv --out runs/v14/vqa-all.json
           $M2IV $V2 --task sandbox-vqa --method fv,mtv --out runs/v14/vqa-fv-mtv.json
           $M2IV bench merge runs/v14/vqa-all.json runs/v14/vqa-fv-mtv.json --out benchmarks/compare/sandbox-vqa.json
           $M2IV $V2 --task sandbox-caption --method zero-shot,icl,m2iv --lr-sweep default --out runs/v14/cap-base.json
           for mr in live:0.1 mimic:0.05 hificl:0.005 i2cl:0.1 i2cl:0.01; do
             $M2IV $V2 --task sandbox-caption --method ${mr%:*} --lr-sweep ${mr#*:} --out runs/v14/cap-${mr/:/-}.json
           done
           $M2IV $V2 --task sandbox-caption --method tv,icv --out runs/v14/cap-tv-icv.json
           $M2IV $V2 --task sandbox-caption --method fv,mtv --out runs/v14/cap-fv-mtv.json
           $M2IV bench merge runs/v14/cap-base.json runs/v14/cap-{live-0.1,mimic-0.05,hificl-0.005,i2cl-0.1,i2cl-0.01}.json \
             runs/v14/cap-{tv-icv,fv-mtv}.json --out benchmarks/compare/sandbox-caption.json
           C="$V2 --task sandbox-colour-caps"  # every method; the trained baselines at their colour-nonce rates
           $M2IV $C --method zero-shot,icl,m2iv,tv,icv --out runs/v14/caps-base.json
           for mr in live:0.1 mimic:0.05 i2cl:0.1; do
             $M2IV $C --method ${mr%:*} --lr-sweep ${mr#*:} --out runs/v14/caps-${mr/:/-}.json
           done
           $M2IV $C --method hificl --out runs/v14/caps-hificl.json
           $M2IV $C --method fv,mtv --out runs/v14/caps-fv-mtv.json
           $M2IV bench merge runs/v14/caps-{base,live-0.1,mimic-0.05,i2cl-0.1,hificl,fv-mtv}.json \
             --out benchmarks/compare/sandbox-colour-caps.json ;;
    compare-v1) for mr in live:0.1 mimic:0.05 i2cl:0.1; do  # issue 14: the rate each chose on colour-nonce
             $M2IV bench compare sandbox --task ${SUITE#*,} --method ${mr%:*} --budget cpu $RECIPE --lr-sweep ${mr#*:} \
               --work runs/bench/v14 --out runs/v14/v1-${mr%:*}.json
           done  # HiFICL at its original rate, as its colour-nonce row (runs/v14/hificl60.json, step sweep)
           $M2IV bench compare sandbox --task ${SUITE#*,} --method hificl --budget cpu $RECIPE --work runs/bench/v14 \
             --out runs/v14/v1-hificl.json
           $M2IV bench merge benchmarks/compare/sandbox.json runs/v14/sweep_{live,mimic,i2cl}.json runs/v14/hificl60.json \
             runs/v14/v1-{live,mimic,i2cl,hificl}.json --out benchmarks/compare/sandbox.json ;;
    many-shot-v2) MS="bench many-shot sandbox --task sandbox-pair-nonce --window 512 --n-test 100 --train-queries 96 \
             --work runs/bench/many-shot-v2"
           $M2IV $MS --icl-shots 0,4,8,16,32,64 --m2iv-shots 16,32,64,128 --steps 60 --out benchmarks/many_shot/pair_nonce.json
           $M2IV $MS --icl-shots 0,4,8,16,32,64 --m2iv-shots 128 --ensemble mixture --steps 60 \
             --out benchmarks/many_shot/pair_nonce_mixture.json
           E180="16-product 32-product 128-product 32-mixture 64-mixture 128-mixture"  # 64-product: not run
           for e in $E180; do
             $M2IV $MS --icl-shots 16 --m2iv-shots ${e%-*} --ensemble ${e#*-} --steps 180 --out runs/v14/ms180-$e.json
           done
           $M2IV bench merge $(for e in $E180; do echo runs/v14/ms180-$e.json; done) \
             --out benchmarks/many_shot/pair_nonce_180steps.json --plot "M²IV at 180 steps vs ICL in a 512-token window" ;;
    many-shot) $M2IV bench many-shot sandbox --task sandbox-colour-nonce,sandbox-shape-nonce --window 512 \
             --icl-shots 0,4,8,16,32,64 --m2iv-shots 16,32,64,128 --n-test 100 \
             --out benchmarks/many_shot/sandbox.json ;;
    library) $M2IV bench library sandbox --work $W --out benchmarks/library/sandbox.json \
               --publish benchmarks/library/vlibrary ;;
    report) $M2IV report benchmarks/sandbox_suite.json benchmarks/compare/sandbox.json benchmarks/many_shot/sandbox.json \
              benchmarks/efficiency/sandbox-1tok-batch1.json benchmarks/efficiency/sandbox-1tok-batch8.json \
              benchmarks/efficiency/sandbox-serving.json \
              --out benchmarks/report --title "m2iv on the sandbox LVLM" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
