"""What is timed inside a trainer, and how: a mixin over any GRPOTrainer subclass and a callback (worker side)."""

from __future__ import annotations

import hashlib
import json
import os
import time

TIME_PARTS = ("generation", "training", "other")


def _sync():
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


# The benchmark's `clock` (config.py): "process" times every part in CPU seconds of the run's process
# (time.process_time), "wall" in wall seconds. On a machine shared with other jobs (or with the benchmark's own
# parallel runs), wall time swings with their load, CPU time much less. Set per worker process by `set_clock`.
CLOCKS = {"process": time.process_time, "wall": time.perf_counter}
_CLOCK = CLOCKS.get(os.environ.get("TRL_RAPID_BENCH_CLOCK") or "wall", time.perf_counter)


def set_clock(name: str) -> None:
    global _CLOCK
    _CLOCK = CLOCKS[name]


def _now() -> float:
    _sync()
    return _CLOCK()


class _TimedMixin:
    """Times generation and training inside any GRPOTrainer subclass without changing what it computes. Overrides TRL
    1.16.0's `GRPOTrainer._generate` and `_generate_and_score_completions` (each calls the parent unchanged)."""

    def _bench_reset(self):
        self.bench = {"generation": 0.0, "sampling": 0.0, "train_step": 0.0, "optimizer": 0.0,
                      "train_begin": None,
                      "generation_calls": 0, "completions": 0, "completion_tokens": 0, "prompt_tokens": 0}
        self.bench_prompts: list[str] = []
        self.bench_completions = hashlib.sha1()  # of every sampled completion's token ids, in order
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
        self.bench_completions.update(out["completion_ids"].detach().cpu().numpy().tobytes())
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
