"""Benchmark configuration: `configs/bench/*.yaml` over the defaults, checked, and the run plan derived from it."""

from __future__ import annotations

import math
import os
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml

METHOD_A = "grpo_on_policy"


DEFAULTS: dict[str, Any] = {
    "name": "benchmark",
    "model": {"kind": "tiny", "path": None, "seed": 0},
    "task": {"name": "repeat_digit", "num_train_prompts": 4000, "num_eval_prompts": 100, "train_seed": 0,
             "eval_seed": 1},
    "budget": {"total_completions": None},
    "seeds": [0, 1, 2],
    "methods": {"grpo_on_policy": True, "grpo_off_policy_h": [8], "rapid_h": [1, 2, 4, 8]},
    "eval": {"every_steps": None, "points": 8, "max_new_tokens": None, "batch_size": 64},
    "ideal": {"enabled": True, "generation_batch_sizes": None},
    "isolation": "forkserver",
    # Runs at a time, each in its own fresh process; null = one per usable CPU core on CPU (training.use_cpu, or no
    # CUDA), 1 on an accelerator (parallel runs on one GPU would time each other).
    "workers": None,
    # Intra-op threads per run; null = 1 on CPU, so that parallel runs do not fight for cores and a run's numbers do
    # not depend on how many workers ran beside it.
    "torch_threads": None,
    # What the times are measured in: "process" = CPU seconds of the run's process (time.process_time), "wall" =
    # wall seconds; null = process on CPU (several runs share the cores: their wall times swing with the load, their
    # CPU times much less), wall on an accelerator (CPU time does not count GPU work). The environment variable
    # TRL_RAPID_BENCH_CLOCK, when set, wins.
    "clock": None,
    # A sweep over learning rates: every method × seed runs at each; null = training.learning_rate alone.
    "learning_rates": None,
    # power: of the minimum detectable difference printed beside every comparison (stats.py).
    "stats": {"confidence": 0.95, "power": 0.8, "bootstrap_resamples": 10000, "bootstrap_seed": 0},
    "training": {},
    "grpo": {},
    "rapid": {},
}


def _merge(base: dict, update: dict) -> dict:
    out = deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None, overrides: dict | None = None) -> dict:
    """Read a `configs/bench/*.yaml` file over the defaults, apply `overrides` and derive the run plan."""
    raw = yaml.safe_load(Path(path).read_text()) if path else {}
    unknown = set(raw or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown top-level keys in {path}: {sorted(unknown)}. Known: {sorted(DEFAULTS)}.")
    base = deepcopy(DEFAULTS)
    if any("import" in ((layer or {}).get("task") or {}) for layer in (raw, overrides)):
        base["task"] = {}  # your own task (task: {import, args}): the built-in tasks' defaults do not apply
    cfg = _merge(base, raw or {})
    cfg = _merge(cfg, overrides or {})
    return resolve(cfg)


def resolve(cfg: dict) -> dict:
    """Check the budget and fill in N_step, the method list, optimizer steps and the evaluation schedule."""
    train = cfg["training"]
    group = train.get("num_generations", 8)
    per_device = train.get("per_device_train_batch_size", 8)
    ga = train.get("gradient_accumulation_steps", 1)
    n_step = per_device * ga  # one process: the benchmark measures a single trainer process
    if (per_device * ga) % group:
        raise ValueError(f"per_device_train_batch_size × gradient_accumulation_steps = {n_step} must be a multiple of "
                         f"num_generations = {group} (RapidConfig requires whole groups per optimizer step).")
    methods = plan_methods(cfg["methods"])
    hs = sorted({m["h"] for m in methods})
    total = cfg["budget"]["total_completions"]
    if total is None:
        raise ValueError("budget.total_completions is required.")
    lcm_h = math.lcm(*hs)
    if total % (n_step * lcm_h):
        raise ValueError(f"budget.total_completions = {total} must be a multiple of N_step × lcm(H) = {n_step} × "
                         f"{lcm_h} = {n_step * lcm_h}, so that every method runs whole outer steps.")
    steps = total // n_step
    every = cfg["eval"]["every_steps"]
    if every is None:
        points = max(1, int(cfg["eval"]["points"]))
        every = max(lcm_h, (steps // points) // lcm_h * lcm_h)
    if every % lcm_h:
        raise ValueError(f"eval.every_steps = {every} must be a multiple of every H (lcm = {lcm_h}), so that "
                         "evaluations fall on outer-step boundaries of all methods.")
    if cfg["isolation"] not in ("forkserver", "spawn", "inprocess"):
        raise ValueError(f"isolation must be forkserver, spawn or inprocess, got {cfg['isolation']!r}.")
    resolve_parallelism(cfg)
    if not cfg["seeds"]:
        raise ValueError("seeds must list at least one seed.")
    lrs = plan_learning_rates(cfg["learning_rates"], train)
    from .tasks import check_task

    check_task(cfg["task"])
    if cfg["model"].get("kind") == "warm_start":
        from .models import warm_start_recipe

        name = cfg["model"].get("task", "sort_digits")
        length = warm_start_recipe(cfg["model"]).num_digits  # the answer's length the warm start was trained on
        key = {"reverse_word": "num_letters"}.get(name, "num_digits")  # the task's name for it
        if cfg["task"].get("name") != name or cfg["task"].get(key, length) != length:
            raise ValueError(f"model.kind warm_start is trained on {name} with {key} {length}: set task.name: "
                             f"{name} and task.{key}: {length} (got {cfg['task'].get('name')!r}, "
                             f"{cfg['task'].get(key)}).")
    cfg["plan"] = {
        "num_generations": group,
        "n_step": n_step,
        "optimizer_steps": steps,
        "eval_every_steps": every,
        "eval_max_new_tokens": cfg["eval"]["max_new_tokens"] or train.get("max_completion_length", 256),
        "methods": [dict(m, n_inference=m["h"] * n_step, generation_calls=total // (m["h"] * n_step))
                    for m in methods],
        "learning_rates": lrs,
        # One arm per method × learning rate; with a single learning rate an arm is named as its method.
        "arms": [{"name": arm_name(m["name"], lr, len(lrs)), "method": m["name"], "learning_rate": lr}
                 for lr in lrs for m in methods],
    }
    return cfg


def on_cpu(cfg: dict) -> bool:
    use_cpu = cfg["training"].get("use_cpu")
    if use_cpu is not None:
        return bool(use_cpu)
    import torch

    return not torch.cuda.is_available()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_parallelism(cfg: dict) -> None:
    """Fill in workers, torch_threads and clock (their defaults depend on CPU or accelerator); check them."""
    cpu = on_cpu(cfg)
    workers = cfg.get("workers")
    if workers is None:
        workers = 1 if cfg["isolation"] == "inprocess" or not cpu else usable_cores()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 (or null: one per core on CPU), got {workers!r}.")
    if workers > 1 and cfg["isolation"] == "inprocess":
        raise ValueError("isolation: inprocess runs one run at a time: set workers: 1 (or isolation: forkserver).")
    cfg["workers"] = workers
    if cfg.get("torch_threads") is None and cpu:
        cfg["torch_threads"] = 1
    clock = os.environ.get("TRL_RAPID_BENCH_CLOCK") or cfg.get("clock") or ("process" if cpu else "wall")
    if clock not in ("process", "wall"):
        raise ValueError(f"clock must be 'process' (CPU seconds) or 'wall', got {clock!r}.")
    cfg["clock"] = clock


def arm_name(method: str, lr: float, num_lrs: int) -> str:
    return method if num_lrs == 1 else f"{method}@lr={lr:g}"


def plan_learning_rates(value, training: dict) -> list[float]:
    if value is None:
        return [float(training.get("learning_rate", 1e-6))]  # GRPOConfig's default when the config sets none
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"learning_rates must be a non-empty list of positive numbers (or null), got {value!r}.")
    lrs = []
    for lr in value:
        try:
            lr = float(lr)
        except (TypeError, ValueError):
            raise ValueError(f"learning_rates: {lr!r} is not a number; write e.g. [1.0e-4, 4.0e-4].") from None
        if not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"learning_rates: {lr!r} must be a positive, finite number.")
        lrs.append(lr)
    if len(set(lrs)) != len(lrs):
        raise ValueError(f"learning_rates lists a value twice: {value!r}.")
    return lrs


def plan_methods(methods_cfg: dict) -> list[dict]:
    methods = []
    if methods_cfg.get("grpo_on_policy", True):
        methods.append({"name": METHOD_A, "trainer": "grpo", "h": 1,
                        "label": "(a) TRL GRPO on-policy"})
    for h in methods_cfg.get("grpo_off_policy_h") or []:
        if int(h) < 2:
            raise ValueError("grpo_off_policy_h values must be >= 2 (H = 1 is method (a)).")
        methods.append({"name": f"grpo_off_policy_H{h}", "trainer": "grpo", "h": int(h),
                        "label": f"(b) TRL GRPO, generation batch H={h}"})
    for h in methods_cfg.get("rapid_h") or []:
        methods.append({"name": f"rapid_H{h}", "trainer": "rapid", "h": int(h), "label": f"(c) RAPID H={h}"})
    methods += [plan_variant(v, i) for i, v in enumerate(methods_cfg.get("rapid_variants") or [])]
    methods += [plan_aa_arm(v, i, methods) for i, v in enumerate(methods_cfg.get("aa_arms") or [])]
    names = [m["name"] for m in methods]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Method names must be unique; {duplicates} appear twice (rename the rapid_variants entry).")
    if not methods:
        raise ValueError("No methods selected.")
    if methods[0]["name"] != METHOD_A:
        raise ValueError("Method (a) grpo_on_policy is the reference of every ratio: keep methods.grpo_on_policy true.")
    return methods


VARIANT_KEYS = {"name", "h", "args", "label", "trainer"}


def plan_variant(variant: dict, index: int) -> dict:
    """A `methods.rapid_variants` entry: {name, h, args, label?, trainer?}. `args` are passed to RapidConfig (or, with
    `trainer: grpo`, to GRPOConfig) as they are, after the shared `training:` and `rapid:` arguments, so new trainer
    fields (e.g. issue 9's `baseline`, adaptive H) are benchmarked by config alone. `h` sets
    optimizer_steps_per_generation (steps_per_generation for grpo) unless `args` overrides it; it also sizes the
    method's generation batch in the plan (with an adaptive H, give its maximum)."""
    where = f"methods.rapid_variants[{index}]"
    if not isinstance(variant, dict):
        raise ValueError(f"{where} must be a mapping like {{name: rapid_h8_loo, h: 8, args: {{...}}}}, "
                         f"got {variant!r}.")
    unknown = set(variant) - VARIANT_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(VARIANT_KEYS)}.")
    name = variant.get("name")
    if not isinstance(name, str) or not name or "@" in name or "/" in name:
        raise ValueError(f"{where}.name must be a non-empty string without '@' or '/', got {name!r}.")
    h = variant.get("h")
    if not isinstance(h, int) or isinstance(h, bool) or h < 1:
        raise ValueError(f"{where}.h must be an integer >= 1 (the H that sizes its generation batch), got {h!r}.")
    args = variant.get("args") or {}
    if not isinstance(args, dict):
        raise ValueError(f"{where}.args must be a mapping of RapidConfig arguments, got {args!r}.")
    trainer = variant.get("trainer", "rapid")
    if trainer not in ("rapid", "grpo"):
        raise ValueError(f"{where}.trainer must be 'rapid' or 'grpo', got {trainer!r}.")
    label = variant.get("label") or f"({'c' if trainer == 'rapid' else 'b'}) {name}"
    return {"name": name, "trainer": trainer, "h": h, "label": label, "args": dict(args)}


AA_KEYS = {"of", "random_stream_offset", "name"}


def plan_aa_arm(entry, index: int, methods: list[dict]) -> dict:
    """A `methods.aa_arms` entry, {of: METHOD, random_stream_offset: k (default 1), name?}, or just the method's name:
    the same method again (same trainer, H and arguments, same seeds, same prompt order), whose random stream is
    shifted by k draws at the start of training (workers.py), so its sampled completions differ. Comparing it with
    METHOD is an A/A test: a difference that the intervals call real means the intervals are too narrow. Any planned
    method can be repeated: (a), a (b) arm, a RAPID arm or a variant."""
    where = f"methods.aa_arms[{index}]"
    if isinstance(entry, str):
        entry = {"of": entry}
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a method name or a mapping like {{of: grpo_on_policy, "
                         f"random_stream_offset: 1}}, got {entry!r}.")
    unknown = set(entry) - AA_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(AA_KEYS)}.")
    by_name = {m["name"]: m for m in methods}
    of = entry.get("of")
    if of not in by_name or by_name[of].get("aa_of"):
        raise ValueError(f"{where}.of must name a planned method (not an A/A arm), got {of!r}; planned: "
                         f"{[m['name'] for m in methods if not m.get('aa_of')]}.")
    k = entry.get("random_stream_offset", 1)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{where}.random_stream_offset must be an integer >= 1, got {k!r}.")
    name = entry.get("name") or f"{of}_aa{k}"
    if not isinstance(name, str) or "@" in name or "/" in name:
        raise ValueError(f"{where}.name must be a string without '@' or '/', got {name!r}.")
    base = by_name[of]
    return dict(base, name=name, label=f"A/A: {base['label']} again, random stream +{k}", aa_of=of,
                random_stream_offset=k, args=dict(base.get("args") or {}))
