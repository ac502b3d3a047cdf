"""Worker side: one training run, or one ideal measurement, in its own process."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .models import _load_tokenizer
from .tasks import load_task
from .timing import _bench_callback, _cuda_memory, _now, _rss_mib, _timed_class, set_clock


def _base_args(cfg: dict, seed: int, output_dir: str) -> dict:
    args = dict(cfg["training"])
    args.update(output_dir=output_dir, seed=seed, max_steps=cfg["plan"]["optimizer_steps"], save_strategy="no",
                report_to="none")
    args.setdefault("disable_tqdm", True)
    args.setdefault("logging_steps", max(1, cfg["plan"]["eval_every_steps"]))
    return args


def _make_config(cfg: dict, method: dict, seed: int, output_dir: str, **extra):
    from trl import GRPOConfig

    from ..config import RapidConfig

    args = _base_args(cfg, seed, output_dir)
    if method.get("learning_rate") is not None:  # the arm's point of the learning-rate sweep
        args["learning_rate"] = method["learning_rate"]
    ga = args.get("gradient_accumulation_steps", 1)
    if method["trainer"] == "rapid":
        args.update(cfg["rapid"])
        args.update(optimizer_steps_per_generation=method["h"])
        args.update(method.get("args") or {}, **extra)  # a variant's own RapidConfig arguments win
        return RapidConfig(**args)
    args.update(cfg["grpo"])
    args.update(steps_per_generation=method["h"] * ga)
    args.update(method.get("args") or {}, **extra)
    return GRPOConfig(**args)


def check_method_configs(cfg: dict, **extra) -> None:
    """Build every arm's trainer config once, before any run starts: a bad variant argument fails here, by name."""
    for method in cfg["plan"]["methods"]:
        for lr in cfg["plan"]["learning_rates"]:
            try:
                _make_config(cfg, dict(method, learning_rate=lr), seed=cfg["seeds"][0], output_dir="unused", **extra)
            except (TypeError, ValueError) as err:
                raise ValueError(f"Method {method['name']!r} (learning rate {lr:g}) does not build its trainer "
                                 f"config: {err}. Fix its entry in methods (or training:/rapid:/grpo:).") from err


def _effective(config) -> dict:
    keys = ("per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation",
            "generation_batch_size", "num_generations", "max_steps", "learning_rate", "loss_type", "scale_rewards",
            "beta", "epsilon", "temperature", "max_completion_length", "use_vllm", "vllm_mode", "bf16", "seed",
            "eta", "optimizer_steps_per_generation", "behaviour_logprobs")
    return {k: getattr(config, k) for k in keys if hasattr(config, k)}

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
    set_clock(cfg.get("clock") or "wall")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _random_stream_offset(k: int):
    """TrainerCallback of an A/A arm: at on_train_begin (after transformers seeded every generator from args.seed in
    the trainer's __init__, before the first generation) draw k numbers from torch's global generator (and CUDA's),
    Python's `random` and numpy's global generator. Sampled completions then differ from the method's own run with the
    same seed, while the prompt order does not: TRL's RepeatSampler draws it from its own generator, seeded by
    args.seed. With vLLM the engine samples with its own seeded generator, which this does not reach."""
    import random

    import numpy as np
    import torch
    from transformers import TrainerCallback

    class RandomStreamOffset(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            torch.rand(k)
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.rand(k, device="cuda")
            for _ in range(k):
                random.random()
            np.random.random(k)

    return RandomStreamOffset()


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

    from ..evaluation import greedy_mean_reward
    from ..trainer import RapidTrainer

    start_rss, _ = _rss_mib()
    train, held_out, reward_funcs, eval_funcs = load_task(cfg["task"])
    tokenizer = _load_tokenizer(model_info)
    run_name = method.get("arm", method["name"]).replace("@", "-")
    config = _make_config(cfg, method, seed, str(Path(workdir) / f"{run_name}-seed{seed}"))
    trainer_cls = _timed_class(RapidTrainer if method["trainer"] == "rapid" else GRPOTrainer)
    trainer = trainer_cls(model=model_info["path"], reward_funcs=reward_funcs, args=config, train_dataset=train,
                          processing_class=tokenizer)
    trainer._bench_reset()
    _quiet(trainer)
    if method.get("random_stream_offset"):  # an A/A arm: the same method on a shifted random stream
        trainer.add_callback(_random_stream_offset(int(method["random_stream_offset"])))

    plan = cfg["plan"]
    eval_state = {"time": 0.0, "points": [], "t0": None}

    def evaluate(step: int):
        start = _now()
        model = trainer.accelerator.unwrap_model(trainer.model)
        reward = greedy_mean_reward(model, tokenizer, held_out, eval_funcs, plan["eval_max_new_tokens"],
                                    batch_size=cfg["eval"].get("batch_size", 64))
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
        "arm": method.get("arm", method["name"]),
        "learning_rate": config.learning_rate,
        "label": method["label"],
        "trainer": method["trainer"],
        "h": method["h"],
        "n_inference": method["h"] * plan["n_step"],
        "seed": seed,
        "random_stream_offset": method.get("random_stream_offset", 0),
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
        "diagnostics": _diagnostics(history),
        "torch_threads": torch.get_num_threads(),
        "clock": cfg.get("clock") or "wall",
        "prompt_order_sha1": hashlib.sha1("\n".join(trainer.bench_prompts).encode()).hexdigest(),
        "first_prompts": trainer.bench_prompts[:4],
        "completions_sha1": trainer.bench_completions.hexdigest(),
        "config": _effective(config),
    }


DIAGNOSTICS = ("rapid/ess", "rapid/truncated_frac", "rapid/staleness", "rapid/weight_mean", "rapid/weight_max",
               "clip_ratio/region_mean", "rapid/h", "rapid/wasted_completions")
_LARGEST = ("rapid/weight_max", "rapid/wasted_completions")  # a maximum, or a running total: the run's largest value


def _diagnostics(history: list[dict]) -> dict:
    """Per run: the mean over logging steps of RAPID's weight diagnostics (the largest value for weight_max and the
    running total of wasted completions), adaptive H's `rapid/h` and, for TRL GRPO, its PPO clip ratio; missing keys
    are left out."""
    out = {}
    for key in DIAGNOSTICS:
        values = [h[key] for h in history if key in h and h[key] is not None]
        if values:
            out[key] = max(values) if key in _LARGEST else sum(values) / len(values)
    return out


def run_ideal_generation(cfg: dict, model_info: dict, seed: int, workdir: str) -> dict:
    """Generation alone: all completions with the trainers' engine at the fastest generation batch size."""
    _worker_setup(cfg)
    from trl import GRPOTrainer
    from trl.trainer.utils import RepeatSampler

    plan = cfg["plan"]
    train, _, reward_funcs, _ = load_task(cfg["task"])
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

    train, _, reward_funcs, _ = load_task(cfg["task"])
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
    fn = {"method": run_method, "ideal_generation": run_ideal_generation, "ideal_training": run_ideal_training,
          "check_configs": check_method_configs}[kind]
    return fn(*args)
