"""Statistics over seeds: per-arm (method × learning rate) summaries, ratios to (a) taken per seed, curves, the ideal;
confidence intervals, the paired bootstrap and time-to-target.

Intervals (all two-sided, level `stats.confidence`, 95 % by default):
  - a mean over seeds: Student's t-interval, mean ± t_{1-α/2, n-1} · s / √n (s: sample standard deviation);
  - a paired difference of two arms over the seeds both ran: the percentile bootstrap of the mean difference
    (`stats.bootstrap_resamples` resamples of the seeds with replacement, drawn by Python's
    `random.Random(stats.bootstrap_seed)`, so it is reproducible), reported with the t-interval of the same differences;
  - time-to-target: per seed, the wall time (evaluation excluded) of the first held-out evaluation whose score is at
    least the target, (a)'s mean final score at the same learning rate; a seed that never gets there is counted as
    "not reached" (never dropped), and the interval is over the seeds that got there.
"""

from __future__ import annotations

import math
import random
import statistics

from .config import METHOD_A
from .timing import TIME_PARTS


def _mean_std(values: list[float]) -> dict:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def _ratio(x, y):
    return x / y if y else None


# ---------------------------------------------------------------------------------------------------------------------
# Pure statistics
# ---------------------------------------------------------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function with `df` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on `t_cdf`; scipy's `t.ppf`)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}.")
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def t_interval(values: list[float], confidence: float = 0.95) -> dict:
    """Mean and its two-sided Student-t confidence interval over `values` (None and NaN left out)."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "method": "t"}
    mean = statistics.fmean(values)
    if n == 1:
        return {"mean": mean, "low": None, "high": None, "n": 1, "method": "t"}
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "method": "t"}


def bootstrap_ci(values: list[float], confidence: float = 0.95, resamples: int = 10000, seed: int = 0) -> dict:
    """Percentile bootstrap interval of the mean of `values` (e.g. paired per-seed differences), reproducible."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "method": "bootstrap", "resamples": resamples}
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(resamples))
    alpha = (1 - confidence) / 2

    def pick(q):  # the q-quantile of the resampled means, linear interpolation between order statistics
        pos = q * (resamples - 1)
        i = int(math.floor(pos))
        j = min(i + 1, resamples - 1)
        return means[i] + (means[j] - means[i]) * (pos - i)

    return {"mean": statistics.fmean(values), "low": pick(alpha), "high": pick(1 - alpha), "n": n,
            "method": "bootstrap", "resamples": resamples, "seed": seed}


def time_to_target(points: list[dict], target: float, key: str = "wall_s") -> float | None:
    """`key` (wall time) of the first point whose "reward" is at least `target`; None if none reaches it."""
    for p in sorted(points, key=lambda p: p["step"]):
        if p["reward"] is not None and p["reward"] >= target - 1e-12:
            return p[key]
    return None


def _arm(run: dict) -> str:
    return run.get("arm", run["method"])


def summarize(runs: list[dict], ideals: dict, cfg: dict) -> dict:
    """Per arm (method × learning rate): mean ± std over seeds of times, throughput, memory, rewards; ratios to (a)
    at the same learning rate and overhead over the ideal, both per seed (paired) and then averaged; the intervals,
    time-to-target, the paired difference to (b) at the same H, and the `rapid/` diagnostics."""
    plan = cfg["plan"]
    arms = plan.get("arms") or [{"name": m["name"], "method": m["name"], "learning_rate": None}
                                for m in plan["methods"]]
    methods = {m["name"]: m for m in plan["methods"]}
    stats_cfg = {"confidence": 0.95, "bootstrap_resamples": 10000, "bootstrap_seed": 0, **(cfg.get("stats") or {})}
    level = stats_cfg["confidence"]
    ref_arm = {a["learning_rate"]: a["name"] for a in arms if a["method"] == METHOD_A}
    summary = {}
    for arm in arms:
        method = methods[arm["method"]]
        mine = [r for r in runs if _arm(r) == arm["name"]]
        if not mine:
            continue
        ref = {r["seed"]: r for r in runs if _arm(r) == ref_arm.get(arm["learning_rate"])}
        label = method["label"] if len(ref_arm) <= 1 and len({a["learning_rate"] for a in arms}) <= 1 \
            else f"{method['label']}, lr {arm['learning_rate']:g}"
        entry = {"label": label, "trainer": method["trainer"], "h": method["h"],
                 "n_inference": method["n_inference"], "seeds": [r["seed"] for r in mine], "method": method["name"],
                 "learning_rate": arm["learning_rate"], "args": method.get("args") or {}}
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
        entry["curve"] = _mean_curve(mine, level)
        entry["final_reward_ci"] = t_interval([r["eval"]["final_reward"] for r in mine], level)
        entry["total_s_ci"] = t_interval([r["times"]["total"] for r in mine], level)
        entry["diagnostics"] = {key: t_interval([r.get("diagnostics", {}).get(key) for r in mine], level)
                                for key in sorted({k for r in mine for k in r.get("diagnostics", {})})}
        if ref:
            target = statistics.fmean(r["eval"]["final_reward"] for r in ref.values())
            per_seed = {r["seed"]: time_to_target(r["eval"]["points"], target) for r in mine}
            reached = [v for v in per_seed.values() if v is not None]
            entry["time_to_target"] = {
                "target": target, "target_is": "mean final held-out score of (a) at this learning rate",
                "per_seed": {str(s): v for s, v in per_seed.items()}, "reached": len(reached), "runs": len(per_seed),
                "wall_s": t_interval(reached, level),
                "completions": t_interval([time_to_target(r["eval"]["points"], target, key="completions")
                                           for r in mine], level),
            }
        summary[arm["name"]] = entry
    _paired_differences(summary, runs, arms, methods, stats_cfg)
    return summary


def _paired_differences(summary: dict, runs: list[dict], arms: list[dict], methods: dict, stats_cfg: dict):
    """Each RAPID arm against TRL's big-batch mode (b) at the same H and learning rate ((a) when H = 1): the per-seed
    difference of final held-out scores, with its bootstrap and t intervals."""
    by_key = {}
    for arm in arms:
        m = methods[arm["method"]]
        if m["trainer"] == "grpo" and not m.get("args"):
            by_key[(m["h"], arm["learning_rate"])] = arm["name"]
    for arm in arms:
        m = methods[arm["method"]]
        other = by_key.get((m["h"], arm["learning_rate"]))
        if m["trainer"] != "rapid" or other is None or arm["name"] not in summary:
            continue
        mine = {r["seed"]: r["eval"]["final_reward"] for r in runs if _arm(r) == arm["name"]}
        theirs = {r["seed"]: r["eval"]["final_reward"] for r in runs if _arm(r) == other}
        seeds = sorted(set(mine) & set(theirs))
        diffs = [mine[s] - theirs[s] for s in seeds]
        summary[arm["name"]]["vs_b"] = {
            "against": other, "seeds": seeds, "per_seed": diffs,
            "bootstrap": bootstrap_ci(diffs, stats_cfg["confidence"], stats_cfg["bootstrap_resamples"],
                                      stats_cfg["bootstrap_seed"]),
            "t": t_interval(diffs, stats_cfg["confidence"]),
        }


def _mean_curve(runs: list[dict], confidence: float = 0.95) -> list[dict]:
    by_step: dict[int, list[dict]] = {}
    for r in runs:
        for p in r["eval"]["points"]:
            by_step.setdefault(p["step"], []).append(p)
    curve = []
    for step in sorted(by_step):
        points = by_step[step]
        curve.append({"step": step, "completions": points[0]["completions"],
                      "wall_s": _mean_std([p["wall_s"] for p in points]),
                      "reward": _mean_std([p["reward"] for p in points]),
                      "reward_ci": t_interval([p["reward"] for p in points], confidence)})
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
