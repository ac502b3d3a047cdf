"""Statistics over seeds: per-arm (method × learning rate) summaries, ratios to (a) taken per seed, curves, the ideal;
confidence intervals, comparisons of two arms, and time-to-target. Every quantile comes from `scipy.stats`.

Intervals (all two-sided, level `stats.confidence`, 95 % by default):
  - one arm's mean over seeds: Student's t-interval, mean ± t_{1-α/2, n-1} · s / √n (s: sample standard deviation);
  - a comparison of two arms (the primary view): the difference of their means, unpaired, with Welch's interval
    d ± t_{1-α/2, ν} · SE, SE = √(s_A²/n_A + s_B²/n_B), ν the Welch–Satterthwaite degrees of freedom; the two arms may
    have run different numbers of seeds. With it, the minimum detectable difference (MDD) at the seeds run, see
    `minimum_detectable_difference`;
  - the same comparison paired by seed (a secondary view: same seed, same prompt order): the t-interval and the
    percentile bootstrap (`scipy.stats.bootstrap`, `stats.bootstrap_resamples` resamples, seeded by
    `stats.bootstrap_seed`) of the per-seed differences;
  - time-to-target: per seed, the time (evaluation excluded; in the `clock`'s seconds) of the first held-out
    evaluation whose score is at least the target, (a)'s mean final score at the same learning rate; a seed that
    never gets there is counted as "not reached" (never dropped), and the interval is over the seeds that got there.

An A/A arm (`methods.aa_arms`, config.py) runs a method again with a shifted random stream: its comparison to the
method must cover 0 (at 95 %, it fails by chance one time in twenty); `aa_check` says whether it does.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
from scipy import stats as sps

from .config import METHOD_A
from .timing import TIME_PARTS


def _clean(values) -> list[float]:
    return [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _mean_std(values: list[float]) -> dict:
    values = _clean(values)
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def _ratio(x, y):
    return x / y if y else None


# ---------------------------------------------------------------------------------------------------------------------
# Pure statistics
# ---------------------------------------------------------------------------------------------------------------------
def t_interval(values: list[float], confidence: float = 0.95) -> dict:
    """Mean and its two-sided Student-t confidence interval over `values` (None and NaN left out)."""
    values = _clean(values)
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "method": "t"}
    mean = statistics.fmean(values)
    if n == 1:
        return {"mean": mean, "low": None, "high": None, "n": 1, "method": "t"}
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "method": "t"}


def minimum_detectable_difference(se: float, df: float, confidence: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference that a two-sided Welch test at level α = 1 − `confidence` detects with probability
    `power`, given the standard error of the difference: MDD = (t_{1-α/2, ν} + t_{power, ν}) · SE (the usual normal-
    approximation power formula with Student-t quantiles at the Welch degrees of freedom ν). With per-arm standard
    deviation s and n seeds in each arm, SE = s·√(2/n): the MDD shrinks as 1/√n (and a little faster at small n,
    as the quantiles fall with ν)."""
    if se is None or df is None or not df > 0:
        return None
    return float((sps.t.ppf(0.5 + confidence / 2, df) + sps.t.ppf(power, df)) * se)


def welch_interval(a: list[float], b: list[float], confidence: float = 0.95, power: float = 0.8) -> dict:
    """Difference of means mean(a) − mean(b) of two unpaired samples, Welch's two-sided interval, its degrees of
    freedom ν (Welch–Satterthwaite), the standard error and the minimum detectable difference at these sample sizes.
    Agrees with `scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval(confidence)`. Fewer than 2 values in
    an arm: no interval (low/high None). Both arms constant: a zero-width interval at the difference, MDD 0."""
    a, b = _clean(a), _clean(b)
    out = {"mean": None, "low": None, "high": None, "n_a": len(a), "n_b": len(b), "df": None, "se": None,
           "mdd": None, "power": power, "method": "welch"}
    if not a or not b:
        return out
    out["mean"] = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return dict(out, low=out["mean"], high=out["mean"], se=0.0, mdd=0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return dict(out, low=out["mean"] - half, high=out["mean"] + half, df=df, se=se,
                mdd=minimum_detectable_difference(se, df, confidence, power))


def bootstrap_ci(values: list[float], confidence: float = 0.95, resamples: int = 10000, seed: int = 0) -> dict:
    """Percentile bootstrap interval of the mean of `values` (e.g. paired per-seed differences), by
    `scipy.stats.bootstrap` with a seeded generator, so it is reproducible."""
    values = _clean(values)
    n = len(values)
    out = {"mean": statistics.fmean(values) if values else None, "low": None, "high": None, "n": n,
           "method": "bootstrap", "resamples": resamples, "seed": seed}
    if n < 2:
        return out
    if len(set(values)) == 1:  # every resample has the same mean
        return dict(out, low=values[0], high=values[0])
    res = sps.bootstrap((np.asarray(values),), np.mean, confidence_level=confidence, n_resamples=resamples,
                        method="percentile", rng=np.random.default_rng(seed))
    return dict(out, low=float(res.confidence_interval.low), high=float(res.confidence_interval.high))


def compare_samples(a: dict, b: dict, confidence: float = 0.95, power: float = 0.8, resamples: int = 10000,
                    seed: int = 0) -> dict:
    """Arm A against arm B from {seed: value} maps: the unpaired Welch comparison over every seed each ran (primary),
    and, over the seeds both ran, the per-seed differences with their t and bootstrap intervals (secondary)."""
    a = {s: v for s, v in a.items() if _clean([v])}
    b = {s: v for s, v in b.items() if _clean([v])}
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    return {
        "welch": welch_interval(list(a.values()), list(b.values()), confidence, power),
        "paired": {"seeds": seeds, "per_seed": diffs, "t": t_interval(diffs, confidence),
                   "bootstrap": bootstrap_ci(diffs, confidence, resamples, seed)},
    }


def covers_zero(ci: dict) -> bool | None:
    """Whether an interval contains 0; None when there is no interval (too few seeds)."""
    if ci.get("low") is None:
        return None
    return ci["low"] <= 0 <= ci["high"]


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
    time-to-target, the comparison to (b) at the same H (`vs_b`, see `compare_arms`), and the `rapid/` diagnostics."""
    plan = cfg["plan"]
    arms = plan.get("arms") or [{"name": m["name"], "method": m["name"], "learning_rate": None}
                                for m in plan["methods"]]
    methods = {m["name"]: m for m in plan["methods"]}
    stats_cfg = stats_settings(cfg)
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
                 "learning_rate": arm["learning_rate"], "args": method.get("args") or {},
                 "aa_of": method.get("aa_of"), "random_stream_offset": method.get("random_stream_offset", 0)}
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


def stats_settings(cfg: dict) -> dict:
    return {"confidence": 0.95, "power": 0.8, "bootstrap_resamples": 10000, "bootstrap_seed": 0,
            **(cfg.get("stats") or {})}


def _finals(runs: list[dict], arm: str) -> dict:
    return {r["seed"]: r["eval"]["final_reward"] for r in runs if _arm(r) == arm}


def compare_arms(runs: list[dict], cfg: dict) -> list[dict]:
    """Every comparison the benchmark reports, of final held-out scores, per learning rate: each arm against (a)
    (`kind: vs_a`), each RAPID arm against TRL's big-batch mode (b) at the same H (`vs_b`; (a) when H = 1), and each
    A/A arm against the method it repeats (`aa`). Each has `welch` (primary) and `paired` (secondary), see
    `compare_samples`."""
    plan = cfg["plan"]
    methods = {m["name"]: m for m in plan["methods"]}
    st = stats_settings(cfg)
    arms = plan.get("arms") or [{"name": m["name"], "method": m["name"], "learning_rate": None}
                                for m in plan["methods"]]
    arms = [a for a in arms if _finals(runs, a["name"])]
    by_method_lr = {(a["method"], a["learning_rate"]): a["name"] for a in arms}
    b_arm = {}
    for a in arms:
        m = methods[a["method"]]
        if m["trainer"] == "grpo" and not m.get("args") and not m.get("aa_of"):
            b_arm[(m["h"], a["learning_rate"])] = a["name"]
    out = []

    def add(kind, mine, other, lr):
        if other is None or other == mine:
            return
        out.append({"kind": kind, "a": mine, "b": other, "learning_rate": lr,
                    **compare_samples(_finals(runs, mine), _finals(runs, other), st["confidence"], st["power"],
                                      st["bootstrap_resamples"], st["bootstrap_seed"])})

    for a in arms:
        m, lr = methods[a["method"]], a["learning_rate"]
        if m.get("aa_of"):
            add("aa", a["name"], by_method_lr.get((m["aa_of"], lr)), lr)
            continue
        if a["method"] != METHOD_A:
            add("vs_a", a["name"], by_method_lr.get((METHOD_A, lr)), lr)
        if m["trainer"] == "rapid":
            add("vs_b", a["name"], b_arm.get((m["h"], lr)), lr)
    return out


def aa_verdict(comparison: dict) -> dict:
    """An A/A comparison's verdict: `ok` True when its Welch interval covers 0, False when not (then no verdict of
    this benchmark is to be believed: the noise is larger than the intervals say), None when too few seeds ran."""
    ok = covers_zero(comparison["welch"])
    return {"ok": ok, "a": comparison["a"], "b": comparison["b"], "learning_rate": comparison["learning_rate"],
            "welch": comparison["welch"]}


def _paired_differences(summary: dict, runs: list[dict], arms: list[dict], methods: dict, stats_cfg: dict):
    """Each RAPID arm against TRL's big-batch mode (b) at the same H and learning rate ((a) when H = 1), kept on the
    arm's summary entry as `vs_b`: Welch's unpaired interval (primary) and the per-seed paired view."""
    cfg = {"plan": {"methods": list(methods.values()), "arms": arms}, "stats": stats_cfg}
    for c in compare_arms(runs, cfg):
        if c["kind"] == "vs_b" and c["a"] in summary:
            summary[c["a"]]["vs_b"] = {"against": c["b"], "welch": c["welch"], "seeds": c["paired"]["seeds"],
                                       "per_seed": c["paired"]["per_seed"], "t": c["paired"]["t"],
                                       "bootstrap": c["paired"]["bootstrap"]}


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
