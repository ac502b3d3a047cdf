"""`trl-rapid` / `python -m trl_rapid` / `scripts/rapid.py`: the TRL-style training script for RAPID and its baselines.

    accelerate launch scripts/rapid.py --config configs/demo.yaml
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/rapid.py --config configs/math/rapid_h8.yaml
    trl-rapid --config configs/demo.yaml --max_steps 50        # same job; command-line flags override the YAML

Arguments are TRL's (`TrlParser` over the script arguments below, `RapidConfig` and `ModelConfig`). With
`trainer: grpo` the same script runs TRL's `GRPOTrainer` from a `GRPOConfig` (the GRPO, PG and DAPO baselines), so
comparisons share one code path.

Tasks (`--task`; dataset and reward; the registry in trl_rapid/tasks.py, shared with the benchmark and the evaluation):

    repeat_digit  the embedded demo task, built locally (trl_rapid/tiny.py)
    sort_digits   the headroom task, built locally (trl_rapid/headroom.py): sort 8 digits, from a cached SFT warm start
    math          MATH train (trl_rapid.data.load_math), held out on MATH-500; math_reward
    gsm8k         GSM8K train, held out on GSM8K test; math_reward
    mbppplus      MBPP+ train split (264 of 378), held out on its 114-task test split; sandboxed code reward
    minif2f       MiniF2F valid, held out on MiniF2F test; Lean 4 REPL reward (needs a configured Lean toolchain)
    pkg.mod:fn    your own task: fn(**task_args) returns a trl_rapid.tasks.Task (train prompts, rewards, held-out set)

Every reward is built before any dataset or model is loaded, so a missing Lean toolchain or a broken code sandbox
stops the script at start-up, never in the middle of a run.

The script's parts, each readable alone:

    arguments.py  the command line: TRL's parser over the script's arguments, the trainer's config and ModelConfig
    train.py      the run: task and rewards, model, trainer, held-out scores around `train`, summary
    counting.py   what the summary counts inside training (generation calls, unscorable completions)
    summary.py    summary.json and reward_curve.png
"""

from .arguments import RapidScriptArguments, parse_args
from .train import main, run

__all__ = ["RapidScriptArguments", "main", "parse_args", "run"]
