"""Benchmark TRL GRPO (on-policy and with a large generation batch) against RAPID at several H, at equal sample budget.

    python scripts/benchmark.py --config configs/bench/cpu_demo.yaml --output_dir docs/benchmark

Writes results.json, table.md, time_breakdown.png and reward_vs_time.png to --output_dir. See trl_rapid/benchmark/
for what is measured and how, and docs/benchmark/README.md for how to read the results.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from trl_rapid.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
