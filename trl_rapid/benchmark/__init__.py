"""Wall-time benchmark: TRL GRPO on-policy, TRL GRPO with RAPID's large generation batch, and RAPID at several H.

    python scripts/benchmark.py --config configs/bench/cpu_demo.yaml --output_dir docs/benchmark

For one model, task and sample budget (`budget.total_completions`), every method runs with the same seeds, the same
total number of completions, the same engine and the same mini-batch `N_step`:

  (a) `grpo_on_policy`      TRL `GRPOTrainer`, `steps_per_generation = gradient_accumulation_steps` (one generation
                            call of N_step completions per optimizer step);
  (b) `grpo_off_policy_H{H}` TRL `GRPOTrainer`, `steps_per_generation = H × gradient_accumulation_steps`: one
                            generation call of N_inference = H × N_step completions, then H optimizer steps with TRL's
                            PPO-clip ratio to the stored "old" log-probs and the advantages computed at generation;
  (c) `rapid_H{H}`          `RapidTrainer` with `optimizer_steps_per_generation = H`.

plus any variant (`methods.rapid_variants`), and A/A arms (`methods.aa_arms`): a method run again on a random stream
shifted at the start of training, whose difference to the method must be noise (stats.py, report.py).

Every method takes `total_completions / N_step` optimizer steps and generates `total_completions` completions
(`total_completions / N_inference` generation calls), so they differ only in how generation and updates interleave.
TRL's `RepeatSampler` draws prompts from one seeded permutation of the train set, so the same seed gives every method
the same prompt order (checked: `prompt_order_sha1` in the JSON).

What is timed, per run (a small subclass of each trainer, see `_TimedMixin`; the product's trainers are unchanged):
  generation  time inside `_generate_and_score_completions` in training mode: sampling (`_generate`, also reported
              on its own as `sampling`), rewards, advantages, and the no-grad forward pass that recomputes the
              behaviour log-probs µ when the batch is reused for more than one optimizer step;
  training    time inside `training_step` minus generation (forward + backward of each micro-batch), plus the
              optimizer segment of the HF training loop (gradient clipping, optimizer and scheduler step, zero_grad),
              measured from the end of the last `training_step` of an optimizer step to `on_step_end`;
  other       the rest of `trainer.train()` (set-up, data loading, logging, callbacks);
  total       wall time of `trainer.train()` minus the held-out evaluations, which are timed separately.
On CUDA every boundary synchronises the device first.

Held-out evaluation: the mean reward of greedy completions (`eval.max_new_tokens` tokens) of `task.num_eval_prompts`
prompts drawn with a different seed from the train prompts, before training and every `eval.every_steps` optimizer
steps. `every_steps` is a multiple of every H, so each evaluation falls on an outer-step boundary of every method,
where all methods have generated and consumed the same number of completions. Greedy decoding draws no random numbers,
so evaluating does not change the training run.

The ideal: `ideal_generation` samples all `total_completions` completions with the trainer's own engine and sampling
settings (`GRPOTrainer._generate`: transformers `generate` or colocated vLLM) at the fastest of the methods' generation
batch sizes (probed twice each, best timing); `ideal_training` runs the optimizer steps alone: TRL's on-policy
`GRPOTrainer` with generation replaced by one cached real batch, timed like the methods' training. Each method's
overhead is its total time over `ideal_generation + ideal_training` of the same seed.

Each run (and each ideal measurement) runs in its own process (`isolation`): `forkserver` forks a fresh child from a
server that imported torch/transformers/TRL once (fast, the CPU default); `spawn` starts a new interpreter per run
(use it with CUDA/vLLM); `inprocess` runs everything in this process (debugging only: peak RSS is then cumulative).
`workers` runs go at a time (default: one per usable core on CPU, 1 on an accelerator), each with `torch_threads`
intra-op threads (default 1 on CPU), so a run's numbers do not depend on how many ran beside it; each finished run is
appended to `runs.partial.jsonl` at once, and `--resume` reuses them after an interruption. Times are in the `clock`'s
seconds: CPU seconds of the run's process on CPU by default (parallel runs and other jobs share the cores, which
swings wall time, CPU time much less), wall seconds on an accelerator.

The parts, each readable on its own:
  config.py   the YAML config over the defaults, checked; the run plan (methods, steps, evaluation schedule)
  models.py   the benchmark's model, built once on disk
  tasks.py    the tasks (train and held-out prompts, rewards)
  timing.py   what is timed inside a trainer (a mixin and a callback)
  workers.py  one run, or one ideal measurement, in a worker process
  runs.py     the driver: process isolation, every method × seed, results.json / table.md / plots
  stats.py    statistics over seeds
  report.py   the Markdown table
  plots.py    the plots
  cli.py      the command line (`python scripts/benchmark.py`, `python -m trl_rapid.benchmark`)
"""

from .config import DEFAULTS, METHOD_A, load_config, plan_methods, resolve
from .models import QWEN25_05B, RANDOM_WEIGHTS_NOTE, _load_tokenizer, build_qwen_shaped_model, prepare_model
from .report import format_table
from .runs import machine_info, run_benchmark
from .stats import summarize
from .tasks import load_task
from .timing import TIME_PARTS
from .workers import _make_config, run_ideal_generation, run_ideal_training, run_method

from .cli import main, overrides_from_args, parse_args  # noqa: E402  (cli reads this package's docstring)

__all__ = [
    "DEFAULTS", "METHOD_A", "QWEN25_05B", "RANDOM_WEIGHTS_NOTE", "TIME_PARTS", "build_qwen_shaped_model",
    "format_table", "load_config", "load_task", "machine_info", "main", "overrides_from_args", "parse_args",
    "plan_methods", "prepare_model", "resolve", "run_benchmark", "run_ideal_generation", "run_ideal_training",
    "run_method", "summarize",
]
