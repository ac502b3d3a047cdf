#!/usr/bin/env bash
# The demo task (configs/demo.yaml: repeat_digit, scale_rewards none, H = 4, lr 1e-3), 3 seeds × {rows, groups} ×
# {paper, self_normalized} as run for docs/benchmark/layout/README.md; summaries in this folder. From the repo root:
#   bash docs/benchmark/layout/demo/run.sh
set -euo pipefail
for seed in 0 1 2; do
  for v in "rows paper" "rows self_normalized" "groups paper"; do
    set -- $v
    out=outputs/demo_layout/$1-$2-$seed
    OMP_NUM_THREADS=1 python -m trl_rapid.cli --config configs/demo.yaml --micro_batch_layout "$1" --baseline "$2" \
      --seed "$seed" --output_dir "$out" --model_name_or_path outputs/demo_layout/tiny-model
  done
done
