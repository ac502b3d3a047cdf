"""The Markdown table (table.md) of a benchmark result."""

from __future__ import annotations


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
    lines += format_accuracy(result)
    return "\n".join(lines) + "\n"


def _ci(ci: dict | None, digits: int = 3) -> str:
    if not ci or ci.get("mean") is None:
        return "–"
    if ci.get("low") is None:
        return f"{ci['mean']:.{digits}f} (n = {ci['n']})"
    return f"{ci['mean']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


DIAGNOSTIC_COLUMNS = (("rapid/ess", "ESS / G"), ("rapid/truncated_frac", "truncated frac"),
                      ("rapid/staleness", "staleness"), ("rapid/weight_max", "weight max"),
                      ("clip_ratio/region_mean", "PPO clip frac"), ("rapid/h", "mean H (adaptive)"),
                      ("rapid/wasted_completions", "wasted completions"))


def format_accuracy(result: dict) -> list[str]:
    """Per learning rate: final held-out score, time-to-target, RAPID − (b) at equal H, and the weight diagnostics."""
    summary = result["summary"]
    if not any(e.get("time_to_target") for e in summary.values()):
        return []
    stats_cfg = result["config"].get("stats") or {}
    level = round(100 * stats_cfg.get("confidence", 0.95))
    lrs = []
    for e in summary.values():
        if e["learning_rate"] not in lrs:
            lrs.append(e["learning_rate"])
    lines = [
        "",
        "## Held-out score, time-to-target and RAPID − (b)",
        "",
        f"Mean over seeds with a {level} % Student-t interval [low, high] (n = seeds). Time-to-target: wall time "
        "(evaluation excluded) of the first held-out evaluation at or above the target, (a)'s mean final score at the "
        "same learning rate; 'reached' counts the seeds that got there, the interval is over those seeds. "
        "RAPID − (b): "
        "the per-seed difference of final scores to TRL's big-batch mode at the same H and learning rate ((a) for "
        f"H = 1), mean with a {level} % percentile-bootstrap interval ({stats_cfg.get('bootstrap_resamples', 10000)} "
        f"resamples of the seeds, seed {stats_cfg.get('bootstrap_seed', 0)}) and the t-interval of the same "
        "differences.",
    ]
    for lr in lrs:
        entries = [e for e in summary.values() if e["learning_rate"] == lr]
        target = next((e["time_to_target"]["target"] for e in entries if e.get("time_to_target")), None)
        lines += [
            "",
            f"### Learning rate {lr:g}" + (f" (target {target:.3f})" if target is not None else ""),
            "",
            "| method | H | initial | final score | time-to-target s | reached | completions to target | "
            "RAPID − (b), bootstrap | RAPID − (b), t | total s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in entries:
            ttt = e.get("time_to_target") or {}
            vs = e.get("vs_b") or {}
            lines.append(
                f"| {e['label']} | {e['h']} | {_fmt(e['initial_reward'], 3)} | {_ci(e['final_reward_ci'])} | "
                f"{_ci(ttt.get('wall_s'), 1)} | {ttt.get('reached', '–')}/{ttt.get('runs', '–')} | "
                f"{_ci(ttt.get('completions'), 0)} | {_ci(vs.get('bootstrap'))} | {_ci(vs.get('t'))} | "
                f"{_ci(e['total_s_ci'], 1)} |"
            )
        shown = [(k, n) for k, n in DIAGNOSTIC_COLUMNS if any(k in e.get("diagnostics", {}) for e in entries)]
        if shown:
            lines += [
                "",
                "Weight diagnostics (mean over logging steps per run, then over seeds; weight max: the largest raw "
                "π_θ/µ a run logged; PPO clip frac: TRL GRPO's clipped share):",
                "",
                "| method | H | " + " | ".join(n for _, n in shown) + " |",
                "|---|---:|" + "---:|" * len(shown),
            ]
            for e in entries:
                d = e.get("diagnostics", {})
                lines.append(f"| {e['label']} | {e['h']} | " + " | ".join(_ci(d.get(k)) for k, _ in shown) + " |")
    return lines
