"""The Markdown table (table.md) of a benchmark result."""

from __future__ import annotations

from .stats import aa_verdict, compare_arms
from .tasks import task_label


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
        f"Model `{model['kind']}` ({model['weights']}), task `{task_label(cfg['task'])}`, "
        f"{cfg['budget']['total_completions']} completions per run, N_step = {plan['n_step']} completions per "
        f"optimizer step ({plan['optimizer_steps']} optimizer steps per run), G = {plan['num_generations']}, "
        f"seeds {cfg['seeds']}, engine: {'vLLM (colocate)' if cfg['training'].get('use_vllm') else 'transformers'}.",
        f"Machine: {machine['cpus_usable']} CPUs ({machine['cpu_model']}), GPU: {machine['cuda'] or 'none'}, "
        f"torch threads per run: {threads}; torch {machine['torch']}, transformers {machine['transformers']}, "
        f"trl {machine['trl']}. Load average before / after: {result['load_average']['before']} / "
        f"{result['load_average']['after']}.",
        f"Command: `{result['command']}`",
        "",
        *aa_lines(_comparisons(result), round(100 * (cfg.get("stats") or {}).get("confidence", 0.95))),
        "",
        ("CPU seconds of each run's process (clock: process)" if result.get("clock") == "process" else
         "Wall seconds") + f", {result.get('workers', 1)} run(s) at a time; mean ± std over seeds. Ratios to (a) are "
        "taken per seed (same seed, same prompts), then averaged.",
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
        f"Held-out reward: greedy decoding of {cfg['task'].get('num_eval_prompts', 'the task’s held-out')} prompts "
        f"(the built-in tasks draw them with another seed than the train prompts), {plan['eval_max_new_tokens']} new "
        "tokens, before training "
        f"({_fmt(first['initial_reward'], 3)}) and every {plan['eval_every_steps']} optimizer steps; evaluation time "
        "is excluded from every time above.",
        f"Checks: same number of completions in every run: {'yes' if checks['same_completions'] else 'NO'}; same "
        f"optimizer steps: {'yes' if checks['same_optimizer_steps'] else 'NO'}; same prompt order across methods for "
        f"each seed: {'yes' if checks['same_prompt_order'] else 'NO'}.",
    ]
    lines += format_accuracy(result)
    lines += format_comparisons(result)
    return "\n".join(lines) + "\n"


def _ci(ci: dict | None, digits: int = 3) -> str:
    if not ci or ci.get("mean") is None:
        return "–"
    if ci.get("low") is None:
        n = ci["n"] if "n" in ci else f"{ci['n_a']} / {ci['n_b']}"
        return f"{ci['mean']:.{digits}f} (n = {n})"
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
        f"Mean over seeds with a {level} % Student-t interval [low, high] (n = seeds). Time-to-target: time "
        "(evaluation excluded) of the first held-out evaluation at or above the target, (a)'s mean final score at the "
        "same learning rate; 'reached' counts the seeds that got there, the interval is over those seeds. "
        "RAPID − (b): "
        "the difference of mean final scores to TRL's big-batch mode at the same H and learning rate ((a) for "
        f"H = 1), with Welch's unpaired {level} % interval and the minimum detectable difference (MDD) at the seeds "
        "run; 'paired t': the t-interval of the per-seed differences (a secondary view).",
    ]
    for lr in lrs:
        entries = [e for e in summary.values() if e["learning_rate"] == lr]
        target = next((e["time_to_target"]["target"] for e in entries if e.get("time_to_target")), None)
        lines += [
            "",
            f"### Learning rate {lr:g}" + (f" (target {target:.3f})" if target is not None else ""),
            "",
            "| method | H | initial | final score | time-to-target s | reached | completions to target | "
            "RAPID − (b), Welch | MDD | RAPID − (b), paired t | total s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in entries:
            ttt = e.get("time_to_target") or {}
            vs = e.get("vs_b") or {}
            lines.append(
                f"| {e['label']} | {e['h']} | {_fmt(e['initial_reward'], 3)} | {_ci(e['final_reward_ci'])} | "
                f"{_ci(ttt.get('wall_s'), 1)} | {ttt.get('reached', '–')}/{ttt.get('runs', '–')} | "
                f"{_ci(ttt.get('completions'), 0)} | {_ci(vs.get('welch'))} | {_num((vs.get('welch') or {}).get('mdd'))} "
                f"| {_ci(vs.get('t'))} | "
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


def _num(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _diff(ci: dict | None, digits: int = 3) -> str:
    if not ci or ci.get("mean") is None:
        return "–"
    if ci.get("low") is None:
        return f"{ci['mean']:+.{digits}f} (no interval)"
    return f"{ci['mean']:+.{digits}f} [{ci['low']:+.{digits}f}, {ci['high']:+.{digits}f}]"


def _short(arm: str) -> str:
    return arm.split("@")[0]


AA_WARNING = "verdicts below are not to be believed"


def aa_lines(comparisons: list[dict], level: int = 95) -> list[str]:
    """One line per A/A comparison: its Welch interval and whether it covers 0; a warning line when one does not.
    Without an A/A arm, a line saying how to add one."""
    aa = [aa_verdict(c) for c in comparisons if c["kind"] == "aa"]
    if not aa:
        return ["No A/A arm in this benchmark: add `methods.aa_arms: [grpo_on_policy]` to check that the intervals "
                "hold (the same method on a shifted random stream must not differ from itself)."]
    lines = []
    for v in aa:
        w = v["welch"]
        covers = {True: "covers 0", False: "does NOT cover 0", None: "no interval (fewer than 2 seeds per arm)"}
        lines.append(f"A/A check, {_short(v['a'])} − {_short(v['b'])}"
                     + (f" at lr {v['learning_rate']:g}" if v["learning_rate"] is not None else "")
                     + f": {_diff(w)} ({level} % Welch), n = {w['n_a']} / {w['n_b']}, MDD {_num(w['mdd'])}: "
                     + covers[v["ok"]] + ".")
    if any(v["ok"] is False for v in aa):
        lines.append(f"**WARNING: an A/A interval excludes 0: two runs of the same method differ by more than the "
                     f"intervals allow (or this is the 1-in-{round(100 / (100 - level))} chance miss); {AA_WARNING}.**")
    return lines


def _comparisons(result: dict) -> list[dict]:
    found = result.get("comparisons")  # results.json written before comparisons were stored: compute them
    return compare_arms(result.get("runs") or [], result["config"]) if found is None else found


def format_comparisons(result: dict) -> list[str]:
    """The A/A check, then every comparison of final held-out scores: difference of means, Welch interval, n per arm,
    MDD, and the paired-by-seed t-interval as a secondary view."""
    if not result.get("runs"):
        return []
    cfg = result["config"]
    comparisons = _comparisons(result)
    stats_cfg = cfg.get("stats") or {}
    level = round(100 * stats_cfg.get("confidence", 0.95))
    power = round(100 * stats_cfg.get("power", 0.8))
    lines = ["", "## Comparisons of final held-out score", "",
             f"A − B: the difference of the arms' mean final scores over the seeds each ran, with Welch's unpaired "
             f"{level} % interval (the primary view; n per arm). MDD: the minimum detectable difference at these "
             f"seeds, the smallest true difference that a two-sided {100 - level} % Welch test detects with "
             f"{power} % power, (t_{{1-α/2,ν}} + t_{{power,ν}}) · SE. A difference smaller than the MDD can be "
             "neither shown nor ruled out with these seeds. Paired t: the t-interval of the per-seed differences "
             "(same seed, same prompt order; secondary).", "",
             "| A − B | vs | lr | difference, Welch | n A / n B | MDD | paired t |",
             "|---|---|---:|---:|---:|---:|---:|"]
    kinds = {"aa": "A/A", "vs_a": "(a)", "vs_b": "(b), same H"}
    for c in comparisons:
        w = c["welch"]
        lr = "–" if c["learning_rate"] is None else f"{c['learning_rate']:g}"
        lines.append(f"| {_short(c['a'])} − {_short(c['b'])} | {kinds[c['kind']]} | {lr} | {_diff(w)} | "
                     f"{w['n_a']} / {w['n_b']} | {_num(w['mdd'])} | {_diff(c['paired']['t'])} |")
    return lines
