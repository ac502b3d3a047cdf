"""Before/after ratios from two benchmark results.json files (same config), per seed, then mean ± std and median."""
import json, statistics, sys
from pathlib import Path

def load(path):
    r = json.loads(Path(path).read_text())
    runs = {(x["method"], x["seed"]): x for x in r["runs"]}
    ideal = {int(k): v for k, v in r["ideal"]["per_seed"].items()}
    return r, runs, ideal

def ratios(path):
    r, runs, ideal = load(path)
    seeds = sorted({s for _, s in runs})
    out = {k: [] for k in ("rapid_over_b", "rapid_over_ideal", "rapid_train_over_a", "b_over_ideal", "rapid_over_a", "b_over_a",
                           "b_train_over_a")}
    parts = {}
    for s in seeds:
        a, b, c = runs[("grpo_on_policy", s)], runs[("grpo_off_policy_H8", s)], runs[("rapid_H8", s)]
        out["rapid_over_b"].append(c["times"]["total"] / b["times"]["total"])
        out["rapid_over_ideal"].append(c["times"]["total"] / ideal[s]["total"])
        out["b_over_ideal"].append(b["times"]["total"] / ideal[s]["total"])
        out["rapid_train_over_a"].append(c["times"]["training"] / a["times"]["training"])
        out["b_train_over_a"].append(b["times"]["training"] / a["times"]["training"])
        out["rapid_over_a"].append(c["times"]["total"] / a["times"]["total"])
        out["b_over_a"].append(b["times"]["total"] / a["times"]["total"])
        for name, run in (("a", a), ("b", b), ("rapid", c)):
            t = run["times"]
            row = {"total": t["total"], "sampling": t["sampling"], "scoring_mu": t["generation"] - t["sampling"],
                   "training": t["training"], "other": t["other"]}
            for k, v in row.items():
                parts.setdefault(name, {}).setdefault(k, []).append(v)
        for k in ("generation", "training", "total"):
            parts.setdefault("ideal", {}).setdefault(k, []).append(ideal[s][k])
    def stat(v):
        return {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                "median": statistics.median(v), "per_seed": v}
    return {"command": r["command"], "load_average": r.get("load_average"), "seeds": seeds,
            "ratios": {k: stat(v) for k, v in out.items()},
            "parts_s": {m: {k: stat(v) for k, v in d.items()} for m, d in parts.items()}}

def fmt(s, digits=3):
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} (median {s['median']:.{digits}f})"

result = {}
lines = []
for tag in sys.argv[2:]:
    base = Path(sys.argv[1]) / tag
    result[tag] = {"before": ratios(base / "before" / "results.json"), "after": ratios(base / "after" / "results.json")}
    clock = "CPU seconds of each run's process (TRL_RAPID_BENCH_CLOCK=process)" if "cpuclock" in tag else "wall seconds"
    lines += [f"### `{tag}`", "", f"Clock: {clock}. Seeds {result[tag]['after']['seeds']}.", "", "| ratio (per seed, then mean ± std) | target | before (HEAD) | after |", "|---|---:|---:|---:|"]
    names = [("rapid_over_b", "RAPID H=8 / (b) TRL big batch H=8, total time", "≤ 0.85"),
             ("rapid_over_ideal", "RAPID H=8 / ideal", "≤ 1.15"),
             ("rapid_train_over_a", "RAPID H=8 training time / (a) on-policy's", "≤ 1.05"),
             ("b_over_ideal", "(b) / ideal (reference)", ""),
             ("b_train_over_a", "(b) training time / (a)'s (reference: same shapes, no RAPID code)", ""),
             ("rapid_over_a", "RAPID H=8 / (a) on-policy, total time", "")]
    for key, label, target in names:
        lines.append(f"| {label} | {target} | {fmt(result[tag]['before']['ratios'][key])} | {fmt(result[tag]['after']['ratios'][key])} |")
    lines += ["", "| seconds (mean ± std over seeds) | before (HEAD) | after |", "|---|---:|---:|"]
    for m in ("a", "b", "rapid"):
        for k in ("total", "sampling", "scoring_mu", "training", "other"):
            bb, aa = result[tag]["before"]["parts_s"][m][k], result[tag]["after"]["parts_s"][m][k]
            label = {"a": "(a) on-policy", "b": "(b) TRL H=8", "rapid": "RAPID H=8"}[m]
            lines.append(f"| {label}: {k.replace('_mu', ' + µ')} | {bb['mean']:.2f} ± {bb['std']:.2f} | {aa['mean']:.2f} ± {aa['std']:.2f} |")
    for k in ("generation", "training", "total"):
        bb, aa = result[tag]["before"]["parts_s"]["ideal"][k], result[tag]["after"]["parts_s"]["ideal"][k]
        lines.append(f"| ideal: {k} | {bb['mean']:.2f} ± {bb['std']:.2f} | {aa['mean']:.2f} ± {aa['std']:.2f} |")
    lines.append("")
Path(sys.argv[1], "summary.json").write_text(json.dumps(result, indent=2))
Path(sys.argv[1], "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
