"""pass@k evaluation: sample n completions per prompt, score them with a reward function, report unbiased pass@k.

pass@k is estimated per task with the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models
Trained on Code": with n samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k), computed as the product
1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the huge binomials. The total is the mean over tasks.

A completion counts as correct when its reward is >= `success_threshold` (1.0 by default: the rewards in
`trl_rapid.rewards` are 1.0 for a correct answer); `None` rewards count as incorrect.

Library use: `evaluate(model_or_path, tokenizer, dataset, reward_func, n=8, k=(1, 8), ...)`.
Command line:

    python -m trl_rapid.evaluation --model DIR --task math --dataset math500 --output results.json
    python -m trl_rapid.evaluation --model DIR --task code --dataset path/to/mbppplus.jsonl --split test --output r.json
    python -m trl_rapid.evaluation --model DIR --task gsm8k --max_new_tokens 512 --output r.json

`--task` is a paper task (math, gsm8k, mbppplus, minif2f) or its reward (math, code, lean), evaluated on the task's
held-out set or on `--dataset`: a loader key (math, math500, gsm8k, mbppplus), a Hub dataset name or a local
JSONL/Parquet file. Flags use TRL's underscore style (`--max_new_tokens`); the older dashed spellings still work.
Any task of the registry (trl_rapid/tasks.py) is evaluated on its own held-out set with its own scorer:

    python -m trl_rapid.evaluation --model DIR --task sort_digits --n 1 --k 1 --temperature 0 --output r.json
    python -m trl_rapid.evaluation --model DIR --task my_package.my_module:make_task --task_args '{"n": 50}' ...
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

TASK_ID_COLUMNS = ("task_id", "unique_id", "name", "id")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task with `n` samples of which `c` are correct (requires 1 <= k <= n)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError("pass_at_k expects integers n, c, k")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k={k} must be between 1 and the number of samples n={n}")
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def _is_conversational(prompt) -> bool:
    return isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m for m in prompt)


def _render_prompts(prompts: list, tokenizer) -> list[str]:
    texts = []
    for prompt in prompts:
        if _is_conversational(prompt):
            if getattr(tokenizer, "chat_template", None) is None:
                raise ValueError(
                    "evaluate: the dataset's prompts are conversational but the tokenizer has no chat_template; load "
                    "the dataset with conversational=False or use a tokenizer with a chat template."
                )
            texts.append(tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))
        else:
            texts.append(str(prompt))
    return texts


def _generate_transformers(model, tokenizer, texts, n, temperature, top_p, max_new_tokens, batch_size, seed):
    import torch

    torch.manual_seed(seed)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    outputs: list[list[str]] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            gen_kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
            if temperature > 0:
                gen_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, num_return_sequences=n)
                per_prompt = n
            else:  # greedy: one decode per prompt, repeated n times
                gen_kwargs.update(do_sample=False, num_return_sequences=1)
                per_prompt = 1
            with torch.no_grad():
                seqs = model.generate(**enc, **gen_kwargs)
            new_tokens = seqs[:, enc["input_ids"].shape[1] :]
            decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for i in range(len(chunk)):
                group = decoded[i * per_prompt : (i + 1) * per_prompt]
                outputs.append(group if per_prompt == n else group * n)
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return outputs


def _generate_vllm(model_path, texts, n, temperature, top_p, max_new_tokens, seed, llm=None):
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise ImportError(
            "evaluate(backend='vllm') needs the vllm package (pip install 'trl-rapid[vllm]' on a GPU machine); "
            "use backend='transformers' otherwise."
        ) from exc
    if llm is None:
        if not isinstance(model_path, str):
            raise ValueError("evaluate(backend='vllm') needs a model path (str) or an `llm=vllm.LLM(...)` instance")
        llm = LLM(model=model_path, seed=seed)
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_new_tokens, seed=seed)
    results = llm.generate(texts, params)
    return [[out.text for out in result.outputs] for result in results]


def evaluate(
    model_path_or_model,
    tokenizer,
    dataset,
    reward_func: Callable[..., list],
    n: int = 8,
    k: Sequence[int] = (1, 8),
    temperature: float = 0.9,
    top_p: float = 1.0,
    max_new_tokens: int = 2048,
    backend: str = "transformers",
    batch_size: int = 8,
    output_path: str | os.PathLike | None = None,
    success_threshold: float = 1.0,
    seed: int = 0,
    save_completions: bool = False,
    llm=None,
) -> dict:
    """Sample `n` completions per prompt, score them, and return (and optionally write) per-task and total pass@k.

    Args:
        model_path_or_model: a model directory/Hub id, or a loaded `transformers` causal LM (transformers backend).
        tokenizer: the tokenizer, or None to load it from `model_path_or_model`.
        dataset: a `datasets.Dataset` (or list of dicts) with a `prompt` column plus the reward's columns.
        reward_func: a TRL-style reward function (`prompts=`, `completions=`, `completion_ids=`, columns as kwargs).
        n: samples per prompt; k: the pass@k values to report (each must be <= n).
        temperature: sampling temperature (0 = greedy, all n samples identical); top_p: nucleus sampling.
        backend: "transformers" (`model.generate`) or "vllm" (`vllm.LLM`, `SamplingParams(n=...)`).
        batch_size: prompts per `generate` call (transformers backend; each yields n sequences).
        output_path: where to write the JSON report (parent directories are created).
        success_threshold: reward at or above which a completion is correct.
        save_completions: include the completions in the per-task records.
        llm: an existing `vllm.LLM` to reuse (vllm backend).

    Returns:
        `{"config": {...}, "total": {"num_tasks", "num_samples", "num_correct", "pass@1", ...}, "tasks": [{"task_id",
        "num_samples", "num_correct", "pass@1", ..., "rewards"}, ...]}`.
    """
    ks = sorted(set(int(x) for x in k))
    if n < 1:
        raise ValueError(f"evaluate: n={n} must be >= 1")
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise ValueError(f"evaluate: every k in {list(k)} must satisfy 1 <= k <= n={n}; raise n or drop the large k")
    if backend not in ("transformers", "vllm"):
        raise ValueError(f"evaluate: backend={backend!r} is invalid: choose 'transformers' or 'vllm'")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size={batch_size} must be >= 1")
    rows = [dict(row) for row in dataset]
    if not rows:
        raise ValueError("evaluate: the dataset is empty")
    if "prompt" not in rows[0]:
        raise ValueError(f"evaluate: the dataset needs a 'prompt' column; it has {sorted(rows[0])}")

    model_name = model_path_or_model if isinstance(model_path_or_model, str) else type(model_path_or_model).__name__
    if tokenizer is None:
        if not isinstance(model_path_or_model, str):
            raise ValueError("evaluate: pass a tokenizer when passing a loaded model")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path_or_model)
    prompts = [row["prompt"] for row in rows]
    texts = _render_prompts(prompts, tokenizer)

    started = time.time()
    if backend == "vllm":
        samples = _generate_vllm(model_path_or_model, texts, n, temperature, top_p, max_new_tokens, seed, llm)
    else:
        model = model_path_or_model
        if isinstance(model, str):
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model)
        samples = _generate_transformers(
            model, tokenizer, texts, n, temperature, top_p, max_new_tokens, batch_size, seed
        )
    generation_s = time.time() - started

    # Score everything in one reward call, with every column repeated per sample as TRL's GRPOTrainer does.
    flat_prompts, flat_completions, columns = [], [], {key: [] for key in rows[0] if key != "prompt"}
    for row, prompt, completions in zip(rows, prompts, samples, strict=True):
        for completion in completions:
            flat_prompts.append(prompt)
            flat_completions.append(
                [{"role": "assistant", "content": completion}] if _is_conversational(prompt) else completion
            )
            for key in columns:
                columns[key].append(row[key])
    completion_ids = [tokenizer(c if isinstance(c, str) else c[0]["content"], add_special_tokens=False)["input_ids"]
                      for c in flat_completions]
    started = time.time()
    rewards = reward_func(prompts=flat_prompts, completions=flat_completions, completion_ids=completion_ids, **columns)
    scoring_s = time.time() - started
    if len(rewards) != len(flat_completions):
        raise ValueError(f"evaluate: the reward function returned {len(rewards)} rewards for {len(flat_completions)}")

    id_column = next((c for c in TASK_ID_COLUMNS if c in rows[0]), None)
    tasks = []
    for i, row in enumerate(rows):
        task_rewards = [None if r is None or (isinstance(r, float) and math.isnan(r)) else float(r)
                        for r in rewards[i * n : (i + 1) * n]]
        correct = sum(r is not None and r >= success_threshold for r in task_rewards)
        record = {"task_id": row[id_column] if id_column else i, "num_samples": n, "num_correct": int(correct)}
        record.update({f"pass@{kk}": pass_at_k(n, int(correct), kk) for kk in ks})
        record["rewards"] = task_rewards
        if save_completions:
            record["completions"] = samples[i]
        tasks.append(record)

    total = {
        "num_tasks": len(tasks),
        "num_samples": len(tasks) * n,
        "num_correct": sum(t["num_correct"] for t in tasks),
    }
    total.update({f"pass@{kk}": float(np.mean([t[f"pass@{kk}"] for t in tasks])) for kk in ks})
    report = {
        "config": {
            "model": model_name,
            "reward_func": getattr(reward_func, "__name__", type(reward_func).__name__),
            "n": n,
            "k": ks,
            "temperature": temperature,
            "top_p": top_p,
            "max_new_tokens": max_new_tokens,
            "backend": backend,
            "success_threshold": success_threshold,
            "seed": seed,
            "generation_seconds": round(generation_s, 3),
            "scoring_seconds": round(scoring_s, 3),
        },
        "total": total,
        "tasks": tasks,
    }
    if output_path is not None:
        path = Path(output_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report


# ---------------------------------------------------------------------------------------------------------------------
# Greedy held-out score (the training script's before / after check, the benchmark's evaluations)
# ---------------------------------------------------------------------------------------------------------------------
def greedy_rewards(model, tokenizer, dataset, reward_funcs, max_new_tokens: int, batch_size: int = 64) -> list:
    """Reward of each greedy completion on `dataset` (plain-text or chat prompts): the sum of the finite rewards, or
    None when no reward function returned a finite value for it (unscorable, as in training).

    Leaves the model in the train/eval mode it was in."""
    import torch

    was_training = model.training
    model.eval()
    prompts = list(dataset["prompt"])
    chat = isinstance(prompts[0], list)  # tokenised as TRL does: chat template, or plain text with special tokens
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts] if chat \
        else prompts
    completions = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              padding_side="left", add_special_tokens=not chat).to(model.device)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            completions += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    columns = {k: list(dataset[k]) for k in dataset.column_names if k != "prompt"}
    totals = [None] * len(prompts)
    for func in reward_funcs:
        for i, r in enumerate(func(prompts=prompts, completions=completions, **columns)):
            if r is not None and math.isfinite(r):
                totals[i] = (totals[i] or 0.0) + r
    return totals


def greedy_mean_reward(model, tokenizer, dataset, reward_funcs, max_new_tokens: int, batch_size: int = 64):
    """Mean reward of the scorable greedy completions on `dataset` (see greedy_rewards); None when none is scorable."""
    scored = [r for r in greedy_rewards(model, tokenizer, dataset, reward_funcs, max_new_tokens, batch_size)
              if r is not None]
    return sum(scored) / len(scored) if scored else None


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------

def _paper_task(task: str):
    """The paper task (trl_rapid/tasks.py's PAPER) that `--task` names: by its name, or by its reward ('math',
    'code', 'lean': the first task that reward scores); None for any other registry task."""
    from .tasks import PAPER

    if task in PAPER:
        return PAPER[task]
    return next((paper for paper in PAPER.values() if paper.reward == task), None)


def _load_eval_dataset(task: str, dataset: str | None, split: str | None, limit: int | None, conversational: bool):
    """The held-out set of paper task `task`, or `dataset` (a loader key, a Hub name or a local file) scored by the
    same reward."""
    from .data import HUB_NAMES, LOADERS, is_local
    from .tasks import REWARD_OF_LOADER

    paper = _paper_task(task)
    kind, path = paper.eval_loader, None
    if dataset in LOADERS:
        kind = dataset
    elif dataset in HUB_NAMES:
        kind, path = HUB_NAMES[dataset], dataset
    elif dataset is not None:
        path = dataset
        if not is_local(dataset):
            raise SystemExit(f"--dataset {dataset!r}: not a known dataset ({sorted(LOADERS)}), Hub name "
                             f"({sorted(HUB_NAMES)}) or existing local file")
    if REWARD_OF_LOADER[kind] != paper.reward:
        raise SystemExit(f"--dataset {dataset!r} is a {REWARD_OF_LOADER[kind]} dataset but --task is {task!r}")
    kwargs = {"split": split or "test", "conversational": conversational, "limit": limit}
    if path is not None:
        kwargs["name_or_path"] = path
    return LOADERS[kind](**kwargs)


def _paper_reward(task: str, args, dataset: str | None) -> Callable:
    """The paper task's reward, built as the training script builds it (trl_rapid/task_args.py's settings)."""
    from .task_args import TaskArguments
    from .tasks import build_reward

    options = TaskArguments(task=task, dataset_name=dataset, code_timeout_s=args.code_timeout_s,
                            code_workers=args.code_workers)
    return build_reward(_paper_task(task).reward, options)


def build_parser() -> argparse.ArgumentParser:
    from .flags import add_flag

    p = argparse.ArgumentParser(prog="python -m trl_rapid.evaluation", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory or Hub id")
    p.add_argument("--task", required=True,
                   help="a paper task (math, gsm8k, mbppplus, minif2f) or its reward (math, code, lean), on its "
                        "held-out set or on --dataset; or any other task of the registry (trl_rapid/tasks.py): a "
                        "built-in name such as sort_digits, or your own 'package.module:function'; its held-out set "
                        "and scorer(s) are used")
    p.add_argument("--task_args", default=None, help="JSON object of the task builder's arguments (registry tasks)")
    p.add_argument("--dataset", default=None,
                   help="math500 | math | gsm8k | mbppplus, a Hub dataset name, or a local .jsonl/.parquet file "
                        "(default: the task's held-out set: math500 for math, mbppplus for code)")
    p.add_argument("--split", default=None, help="dataset split (default: test)")
    p.add_argument("--output", required=True, help="path of the JSON report")
    p.add_argument("--n", type=int, default=8, help="samples per prompt")
    p.add_argument("--k", type=int, nargs="+", default=[1, 8], help="pass@k values to report")
    p.add_argument("--temperature", type=float, default=0.9)
    add_flag(p, "--top_p", deprecated=("--top-p",), type=float, default=1.0)
    add_flag(p, "--max_new_tokens", deprecated=("--max-new-tokens",), type=int, default=2048)
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    add_flag(p, "--batch_size", deprecated=("--batch-size",), type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N tasks")
    p.add_argument("--conversational", action="store_true", help="format prompts as chat messages")
    p.add_argument("--seed", type=int, default=0)
    add_flag(p, "--save_completions", deprecated=("--save-completions",), action="store_true")
    add_flag(p, "--code_timeout_s", deprecated=("--code-timeout",), type=float, default=10.0,
             help="seconds per program (code task)")
    add_flag(p, "--code_workers", deprecated=("--code-workers",), type=int, default=None,
             help="programs run in parallel (code task; default: min(8, CPU count))")
    return p


def sum_of(funcs: Sequence[Callable]) -> Callable:
    """One TRL-style reward function: the sum of `funcs`' finite rewards per completion (None where none is finite)."""
    if len(funcs) == 1:
        return funcs[0]

    def summed(**kwargs):
        totals = None
        for func in funcs:
            scores = func(**kwargs)
            totals = totals or [None] * len(scores)
            for i, r in enumerate(scores):
                if r is not None and math.isfinite(r):
                    totals[i] = (totals[i] or 0.0) + r
        return totals

    summed.__name__ = "+".join(getattr(f, "__name__", "reward") for f in funcs)
    return summed


def _registry_task(args):
    """(held-out dataset, scorer) of a registry task: its eval_dataset and eval_funcs."""
    from .tasks import build_task

    task = build_task(args.task, **json.loads(args.task_args or "{}"))
    if task.eval_dataset is None:
        raise SystemExit(f"--task {args.task!r} built no held-out set: give it held-out prompts in --task_args "
                         "(e.g. num_eval_prompts)")
    dataset = task.eval_dataset
    if args.limit is not None:
        dataset = dataset.select(range(min(args.limit, len(dataset))))
    return dataset, sum_of(task.eval_funcs)


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if _paper_task(args.task) is not None:
        dataset = _load_eval_dataset(args.task, args.dataset, args.split, args.limit, args.conversational)
        reward = _paper_reward(args.task, args, args.dataset)
    else:
        dataset, reward = _registry_task(args)
    report = evaluate(
        args.model,
        None,
        dataset,
        reward,
        n=args.n,
        k=args.k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        backend=args.backend,
        batch_size=args.batch_size,
        output_path=args.output,
        seed=args.seed,
        save_completions=args.save_completions,
    )
    summary = ", ".join(f"{key}={value:.4f}" for key, value in report["total"].items() if key.startswith("pass@"))
    print(f"{report['total']['num_tasks']} tasks: {summary} -> {args.output}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
