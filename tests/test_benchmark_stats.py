"""The benchmark's statistics (intervals, paired bootstrap, time-to-target), its learning-rate sweep and method
variants, and the configs that use them; no training here."""

import statistics
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from trl_rapid import benchmark as B
from trl_rapid.benchmark import stats as S

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "configs" / "bench"


# ---------------------------------------------------------------------------------------------------------------------
# Pure statistics
# ---------------------------------------------------------------------------------------------------------------------
def test_no_hand_written_statistical_tables_are_left():
    """Quantiles come from scipy.stats; the old bisection on a hand-written incomplete beta is gone."""
    assert not hasattr(S, "t_quantile") and not hasattr(S, "_incomplete_beta")


def test_welch_interval_against_scipy_and_by_hand():
    a, b = [0.61, 0.65, 0.58, 0.70, 0.66], [0.55, 0.60, 0.52]
    w = S.welch_interval(a, b)
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert w["mean"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert (w["low"], w["high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert w["df"] == pytest.approx(ref.df) and (w["n_a"], w["n_b"]) == (5, 3)
    # By hand: SE² = s_a²/n_a + s_b²/n_b; ν = SE⁴ / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1)).
    va, vb = statistics.variance(a) / 5, statistics.variance(b) / 3
    se = (va + vb) ** 0.5
    nu = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 2)
    assert w["se"] == pytest.approx(se) and w["df"] == pytest.approx(nu)
    assert w["high"] - w["mean"] == pytest.approx(scipy_stats.t.ppf(0.975, nu) * se)
    # Equal variances and sizes: ν = 2n − 2, the pooled test's; the interval of [1..5] − [0..4] is 1 ± t_{.975,8}·1.
    eq = S.welch_interval([1, 2, 3, 4, 5], [0, 1, 2, 3, 4])
    assert eq["df"] == pytest.approx(8) and eq["low"] == pytest.approx(1 - 2.306004, abs=1e-5)
    assert S.welch_interval([0.5], [0.4, 0.6])["low"] is None  # one seed in an arm: no interval
    flat = S.welch_interval([0.5, 0.5], [0.25, 0.25])
    assert flat["low"] == flat["high"] == 0.25 and flat["mdd"] == 0.0


def test_minimum_detectable_difference_formula_and_monotone_in_n():
    w = S.welch_interval([0.61, 0.65, 0.58, 0.70, 0.66], [0.55, 0.60, 0.52, 0.57])
    t = scipy_stats.t
    assert w["mdd"] == pytest.approx((t.ppf(0.975, w["df"]) + t.ppf(0.8, w["df"])) * w["se"])
    assert w["mdd"] > w["high"] - w["mean"]  # detecting with 80 % power needs more than the interval's half-width
    # The same per-arm spread (s = 0.05) with more seeds per arm: the MDD falls, roughly as 1/√n.
    mdds = []
    for n in (2, 3, 5, 10, 20, 50):
        se = 0.05 * (2 / n) ** 0.5
        mdds.append(S.minimum_detectable_difference(se, 2 * n - 2))
    assert all(x > y for x, y in zip(mdds, mdds[1:]))
    assert mdds[-1] == pytest.approx((1.96 + 0.8416) * 0.05 * (2 / 50) ** 0.5, rel=0.03)  # near the normal formula
    assert S.minimum_detectable_difference(0.01, 8, power=0.9) > S.minimum_detectable_difference(0.01, 8)


def test_compare_samples_unpaired_first_paired_second():
    a = {0: 0.6, 1: 0.7, 2: 0.5, 3: 0.65}
    b = {0: 0.5, 1: 0.5, 2: 0.5}
    c = S.compare_samples(a, b, resamples=2000)
    assert (c["welch"]["n_a"], c["welch"]["n_b"]) == (4, 3)  # every seed each arm ran
    assert c["paired"]["seeds"] == [0, 1, 2] and c["paired"]["per_seed"] == pytest.approx([0.1, 0.2, 0.0])
    assert S.covers_zero(c["welch"]) is True and S.covers_zero({"low": 0.1, "high": 0.2}) is False
    assert S.covers_zero({"low": None}) is None


def test_t_interval_on_known_data():
    ci = S.t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # mean 3, s = sqrt(2.5), half-width t_{0.975,4} · s / sqrt(5) = 2.7764 · 1.5811 / 2.2361 = 1.9632
    assert ci["mean"] == 3.0 and ci["n"] == 5 and ci["method"] == "t"
    assert ci["low"] == pytest.approx(3 - 1.9632, abs=1e-3) and ci["high"] == pytest.approx(3 + 1.9632, abs=1e-3)
    wider = S.t_interval([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.99)
    assert wider["low"] < ci["low"] and wider["high"] > ci["high"]
    assert S.t_interval([0.7])["low"] is None  # one seed: no interval, said so rather than invented
    assert S.t_interval([None, float("nan")])["n"] == 0


def test_bootstrap_is_reproducible_and_covers_the_true_difference():
    diffs = [0.1 + e for e in (-0.04, -0.02, 0.0, 0.02, 0.04)]  # true mean difference 0.1
    a = S.bootstrap_ci(diffs, resamples=4000, seed=7)
    assert a == S.bootstrap_ci(diffs, resamples=4000, seed=7)  # same seed, same interval
    assert a != S.bootstrap_ci(diffs, resamples=4000, seed=8)
    assert a["low"] < 0.1 < a["high"] and a["low"] > 0  # covers the truth, excludes "no difference"
    assert a["mean"] == pytest.approx(0.1) and a["resamples"] == 4000
    # The bootstrap's percentile interval of a mean sits inside the data's range and near the t-interval.
    t = S.t_interval(diffs)
    assert min(diffs) <= a["low"] and a["high"] <= max(diffs)
    assert t["low"] < a["low"] and a["high"] < t["high"]  # n = 5: the t-interval is the wider, as expected
    flat = S.bootstrap_ci([0.25] * 5, resamples=100)
    assert flat["low"] == flat["high"] == 0.25


CURVE = [{"step": 0, "wall_s": 0.0, "completions": 0, "reward": 0.2},
         {"step": 32, "wall_s": 4.0, "completions": 1024, "reward": 0.55},
         {"step": 64, "wall_s": 8.5, "completions": 2048, "reward": 0.5},
         {"step": 96, "wall_s": 12.0, "completions": 3072, "reward": 0.7}]


def test_time_to_target_on_a_hand_made_curve():
    assert S.time_to_target(CURVE, 0.5) == 4.0  # the first evaluation at or above the target, not a later one
    assert S.time_to_target(CURVE, 0.55) == 4.0  # "at" counts
    assert S.time_to_target(CURVE, 0.6) == 12.0
    assert S.time_to_target(CURVE, 0.6, key="completions") == 3072
    assert S.time_to_target(CURVE, 0.1) == 0.0  # already there before training
    assert S.time_to_target(CURVE, 0.71) is None  # never reached
    assert S.time_to_target(list(reversed(CURVE)), 0.6) == 12.0  # order of the points does not matter


# ---------------------------------------------------------------------------------------------------------------------
# Summaries over hand-made runs: per learning rate, never-reached seeds reported, paired differences
# ---------------------------------------------------------------------------------------------------------------------
def _run(cfg, arm, seed, rewards, total=10.0, diagnostics=None):
    method = next(m for m in cfg["plan"]["methods"] if m["name"] == arm["method"])
    points = [{"step": 32 * i, "completions": 1024 * i, "wall_s": total * i / (len(rewards) - 1), "reward": r}
              for i, r in enumerate(rewards)]
    times = {"total": total, "generation": total / 2, "training": total / 2 - 1, "other": 1.0, "sampling": 1.0,
             "optimizer": 0.5, "setup": 0.5, "eval": 1.0}
    return {"method": method["name"], "arm": arm["name"], "learning_rate": arm["learning_rate"],
            "label": method["label"], "trainer": method["trainer"], "h": method["h"], "seed": seed, "times": times,
            "counts": {"completions": 4096, "generation_calls": 4, "optimizer_steps": 128},
            "throughput": {"completions_per_s": 1.0, "completion_tokens_per_s": 1.0, "tokens_per_s": 1.0},
            "memory": {"peak_rss_mib": 100.0, "cuda": None},
            "eval": {"points": points, "final_reward": rewards[-1], "initial_reward": rewards[0]},
            "diagnostics": diagnostics or {}, "config": {"scale_rewards": "group"}}


def _plan(lrs=(1e-4, 4e-4)):
    return B.load_config(BENCH / "cpu_headroom.yaml", {
        "seeds": [0, 1, 2], "learning_rates": list(lrs), "budget": {"total_completions": 4096},
        "methods": {"grpo_off_policy_h": [8], "rapid_h": [8], "rapid_variants": []}})


def test_summary_per_learning_rate_with_targets_and_paired_differences():
    cfg = _plan()
    arms = {a["name"]: a for a in cfg["plan"]["arms"]}
    assert list(arms) == [f"{m}@lr={lr}" for lr in ("0.0001", "0.0004")
                          for m in ("grpo_on_policy", "grpo_off_policy_H8", "rapid_H8")]
    curves = {  # (a) ends at 0.6 on average at lr 1e-4; RAPID gets there; (b) never does on seed 2
        "grpo_on_policy": [[0.2, 0.5, 0.6], [0.2, 0.6, 0.5], [0.2, 0.4, 0.7]],
        "grpo_off_policy_H8": [[0.2, 0.6, 0.6], [0.2, 0.5, 0.6], [0.2, 0.3, 0.4]],
        "rapid_H8": [[0.2, 0.7, 0.8], [0.2, 0.6, 0.7], [0.2, 0.6, 0.6]],
    }
    runs = []
    for name, arm in arms.items():
        for seed in range(3):
            rewards = curves[arm["method"]][seed]
            if arm["learning_rate"] == 4e-4:
                rewards = [r / 2 for r in rewards]
            diag = {"rapid/ess": 0.9 - seed * 0.1} if arm["method"] == "rapid_H8" else None
            runs.append(_run(cfg, arm, seed, rewards, diagnostics=diag))
    summary = S.summarize(runs, {}, cfg)
    assert list(summary) == list(arms)
    a, b, c = (summary[f"{m}@lr=0.0001"] for m in ("grpo_on_policy", "grpo_off_policy_H8", "rapid_H8"))
    assert a["time_to_target"]["target"] == pytest.approx(0.6)
    assert summary["rapid_H8@lr=0.0004"]["time_to_target"]["target"] == pytest.approx(0.3)  # per learning rate
    # (b): seeds 0, 1 reach 0.6 at their 2nd / 3rd evaluation (5 s, 10 s); seed 2 never does, and is reported so.
    assert b["time_to_target"]["per_seed"] == {"0": 5.0, "1": 10.0, "2": None}
    assert (b["time_to_target"]["reached"], b["time_to_target"]["runs"]) == (2, 3)
    assert b["time_to_target"]["wall_s"]["mean"] == 7.5 and b["time_to_target"]["wall_s"]["n"] == 2
    assert c["time_to_target"]["per_seed"] == {"0": 5.0, "1": 5.0, "2": 5.0}
    assert c["final_reward_ci"]["mean"] == pytest.approx(0.7)
    assert c["final_reward_ci"]["low"] < 0.7 < c["final_reward_ci"]["high"]
    # RAPID − (b) at H = 8, same learning rate, paired by seed: 0.2, 0.1, 0.2.
    vs = c["vs_b"]
    assert vs["against"] == "grpo_off_policy_H8@lr=0.0001" and vs["seeds"] == [0, 1, 2]
    assert vs["welch"]["mean"] == pytest.approx(0.7 - statistics.fmean([0.6, 0.6, 0.4]))
    assert vs["welch"]["n_a"] == vs["welch"]["n_b"] == 3 and vs["welch"]["mdd"] > 0
    assert vs["per_seed"] == pytest.approx([0.2, 0.1, 0.2])
    assert vs["bootstrap"]["low"] >= 0.1 - 1e-12 and vs["bootstrap"]["high"] <= 0.2 + 1e-12
    assert vs["t"]["mean"] == pytest.approx(statistics.fmean([0.2, 0.1, 0.2]))
    assert "vs_b" not in b and "vs_b" not in a
    assert c["diagnostics"]["rapid/ess"]["mean"] == pytest.approx(0.8)
    assert a["diagnostics"] == {}
    # Ratios to (a) are taken against (a) at the same learning rate.
    assert summary["rapid_H8@lr=0.0004"]["ratio_to_a"]["final_reward"]["mean"] == pytest.approx(
        statistics.fmean([0.4 / 0.3, 0.35 / 0.25, 0.3 / 0.35]))
    table = B.format_table({"config": cfg, "summary": summary, "ideal": {"per_seed": {}},
                            "model": {"kind": "warm_start", "weights": "SFT", "note": None},
                            "machine": {"cpus_usable": 2, "cpu_model": "x", "cuda": None, "torch": "t",
                                        "transformers": "t", "trl": "t"},
                            "load_average": {"before": [0], "after": [0]}, "command": "test", "runs": runs,
                            "checks": {"same_completions": True, "same_optimizer_steps": True,
                                       "same_prompt_order": True}})
    assert "### Learning rate 0.0001 (target 0.600)" in table and "### Learning rate 0.0004" in table
    assert "| 2/3 |" in table and "ESS / G" in table


# ---------------------------------------------------------------------------------------------------------------------
# Configuration: sweeps, variants, the committed configs
# ---------------------------------------------------------------------------------------------------------------------
def test_variants_carry_their_own_trainer_arguments():
    cfg = B.load_config(BENCH / "cpu_headroom.yaml", {"methods": {"rapid_variants": [
        {"name": "rapid_H8_eta3", "h": 8, "args": {"eta": 3.0}},
        {"name": "grpo_H8_eps", "h": 8, "trainer": "grpo", "args": {"epsilon": 0.1}},
    ]}})
    methods = {m["name"]: m for m in cfg["plan"]["methods"]}
    v = methods["rapid_H8_eta3"]
    assert v["args"] == {"eta": 3.0} and v["n_inference"] == 8 * 32
    config = B._make_config(cfg, dict(v, learning_rate=4e-4), seed=0, output_dir="unused")
    assert config.eta == 3.0 and config.optimizer_steps_per_generation == 8 and config.learning_rate == 4e-4
    assert B._make_config(cfg, methods["rapid_H8"], seed=0, output_dir="unused").eta == 2.0  # the shared rapid:
    assert B._make_config(cfg, methods["grpo_H8_eps"], seed=0, output_dir="unused").epsilon == 0.1
    # A variant may override H itself (issue 9's adaptive H will): its args win over `h`.
    over = dict(v, args={"optimizer_steps_per_generation": 4})
    assert B._make_config(cfg, over, seed=0, output_dir="unused").optimizer_steps_per_generation == 4


def test_the_issue_9_variants_in_the_config_build():
    """The variants cpu_headroom.yaml runs (baseline forms, adaptive H) build their trainer configs."""
    from trl_rapid.benchmark.workers import check_method_configs

    cfg = B.load_config(BENCH / "cpu_headroom.yaml")
    variants = cfg["methods"]["rapid_variants"]
    assert {v["args"].get("baseline") for v in variants} >= {"self_normalized", "leave_one_out"}
    check_method_configs(cfg)
    auto = next(m for m in cfg["plan"]["methods"] if m["name"] == "rapid_auto")
    config = B._make_config(cfg, auto, seed=0, output_dir="unused")
    assert config.optimizer_steps_per_generation == "auto" and config.generation_batch_size == auto["n_inference"]


def test_a_bad_variant_fails_before_any_run_naming_it(tmp_path):
    from trl_rapid.benchmark.workers import check_method_configs

    cfg = B.load_config(BENCH / "cpu_headroom.yaml", {"methods": {"rapid_variants": [
        {"name": "rapid_typo", "h": 8, "args": {"no_such_field": 1}}]}})
    with pytest.raises(ValueError, match="rapid_typo"):
        check_method_configs(cfg)
    root = Path(tmp_path)
    with pytest.raises(ValueError, match="rapid_typo"):  # before any work: the warm start is not even built
        B.run_benchmark(dict(cfg, isolation="inprocess"), root / "out", command="test", root=root, log=lambda *a: None)
    assert not (root / "outputs").exists()
    for bad, match in [({"name": "x", "h": 0}, "h must be an integer"), ({"h": 8}, "name"),
                       ({"name": "x", "h": 8, "argz": {}}, "unknown keys"),
                       ({"name": "rapid_H8", "h": 8}, "unique"),
                       ({"name": "x", "h": 8, "trainer": "ppo"}, "trainer")]:
        with pytest.raises(ValueError, match=match):
            B.load_config(BENCH / "cpu_headroom.yaml", {"methods": {"rapid_variants": [bad]}})
    with pytest.raises(ValueError, match="task.num_digits: 8"):
        B.load_config(BENCH / "cpu_headroom.yaml", {"task": {"num_digits": 12}})
    for bad in ([], ["fast"], [1e-4, 1e-4], [-1.0]):
        with pytest.raises(ValueError, match="learning_rates"):
            B.load_config(BENCH / "cpu_headroom.yaml", {"learning_rates": bad})


def test_headroom_config_plans_the_comparison():
    cfg = B.load_config(BENCH / "cpu_headroom.yaml")
    plan = cfg["plan"]
    assert cfg["model"]["kind"] == "warm_start" and cfg["task"]["name"] == "sort_digits"
    lrs = plan["learning_rates"]
    assert len(cfg["seeds"]) >= 5 and len(lrs) == 2 and lrs[1] == pytest.approx(4 * lrs[0])  # the recipe's and 4×
    assert cfg["training"]["learning_rate"] == lrs[0]
    hs = {(m["trainer"], m["h"]) for m in plan["methods"]}
    assert {("grpo", h) for h in (1, 2, 4, 8, 16)} | {("rapid", h) for h in (2, 4, 8, 16)} <= hs
    assert len(plan["arms"]) == 2 * len(plan["methods"])
    total = cfg["budget"]["total_completions"]
    assert {m["generation_calls"] * m["n_inference"] for m in plan["methods"]} == {total}  # equal budgets
    assert plan["eval_every_steps"] % 16 == 0
    assert cfg["task"]["num_digits"] == cfg["model"]["recipe"]["num_digits"]


@pytest.mark.parametrize("name", ["gpu_qwen05b.yaml", "gpu_qwen05b_hf.yaml", "gpu_headroom.yaml"])
def test_gpu_configs_load_and_every_arm_builds(name):
    from trl_rapid.benchmark.workers import check_method_configs

    cfg = B.load_config(BENCH / name)
    assert cfg["isolation"] == "spawn" and cfg["training"]["bf16"] is True
    check_method_configs(cfg, bf16=False)  # bf16 itself needs the GPU; every other argument is checked here
    assert "UNTESTED" in (BENCH / name).read_text()  # says so until it has run on a GPU


def test_dry_run_prints_the_plan(capsys):
    assert B.main(["--config", str(BENCH / "cpu_headroom.yaml"), "--seeds", "0", "--dry_run"]) is None
    out = capsys.readouterr().out
    assert "28 arms × 1 seeds = 28 runs" in out and '"learning_rates"' in out


@pytest.mark.slow  # a benchmark sweep, end to end
def test_a_sweep_with_a_variant_runs_end_to_end(tmp_path, tiny_model_dir):
    """Two learning rates × ((a) + a RAPID variant with its own argument), minuscule budget, in this process."""
    overrides = {"seeds": [0], "budget": {"total_completions": 16}, "eval": {"every_steps": 2},
                 "task": {"num_train_prompts": 32, "num_eval_prompts": 4}, "learning_rates": [1e-3, 4e-3],
                 "training": {"num_generations": 4, "per_device_train_batch_size": 8, "logging_steps": 1},
                 "methods": {"grpo_off_policy_h": [], "rapid_h": [],
                             "rapid_variants": [{"name": "rapid_H2_eta3", "h": 2, "args": {"eta": 3.0}}]},
                 "ideal": {"enabled": False}, "model": {"path": tiny_model_dir}, "isolation": "inprocess"}
    cfg = B.load_config(ROOT / "configs" / "bench" / "cpu_demo.yaml", overrides)
    result = B.run_benchmark(cfg, tmp_path / "out", command="test", root=tmp_path, log=lambda *a: None)
    assert [(r["arm"], r["learning_rate"]) for r in result["runs"]] == [
        ("grpo_on_policy@lr=0.001", 1e-3), ("rapid_H2_eta3@lr=0.001", 1e-3),
        ("grpo_on_policy@lr=0.004", 4e-3), ("rapid_H2_eta3@lr=0.004", 4e-3)]
    variant = [r for r in result["runs"] if r["method"] == "rapid_H2_eta3"]
    assert all(r["config"]["eta"] == 3.0 and r["config"]["optimizer_steps_per_generation"] == 2 for r in variant)
    assert all("rapid/ess" in r["diagnostics"] for r in variant)
    assert set(result["summary"]) == {r["arm"] for r in result["runs"]}
    assert (tmp_path / "out" / "accuracy_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "### Learning rate 0.004" in (tmp_path / "out" / "table.md").read_text()


# ---------------------------------------------------------------------------------------------------------------------
# The A/A arm: planned from config, compared with the method it repeats, its check printed in the report
# ---------------------------------------------------------------------------------------------------------------------
def test_aa_arms_repeat_any_method_with_a_shifted_random_stream():
    cfg = B.load_config(BENCH / "cpu_headroom.yaml", {"methods": {"aa_arms": [
        "grpo_on_policy", {"of": "grpo_off_policy_H8", "random_stream_offset": 3},
        {"of": "rapid_h8_self_normalized", "name": "sn_aa"}]}})
    methods = {m["name"]: m for m in cfg["plan"]["methods"]}
    aa = methods["grpo_on_policy_aa1"]
    assert (aa["aa_of"], aa["random_stream_offset"], aa["trainer"], aa["h"]) == ("grpo_on_policy", 1, "grpo", 1)
    b = methods["grpo_off_policy_H8_aa3"]
    assert (b["trainer"], b["h"], b["random_stream_offset"]) == ("grpo", 8, 3)
    sn = methods["sn_aa"]
    assert sn["args"] == {"baseline": "self_normalized"} and sn["trainer"] == "rapid"
    # The same trainer config as the method it repeats: only the random stream differs.
    for name, of in (("sn_aa", "rapid_h8_self_normalized"), ("grpo_off_policy_H8_aa3", "grpo_off_policy_H8")):
        assert B._make_config(cfg, methods[name], 0, "x").to_dict() == B._make_config(cfg, methods[of], 0, "x").to_dict()
    for bad, match in [({"of": "nope"}, "must name a planned method"), ({"of": "grpo_on_policy",
                        "random_stream_offset": 0}, "integer >= 1"), ({"of": "grpo_on_policy", "k": 1}, "unknown")]:
        with pytest.raises(ValueError, match=match):
            B.load_config(BENCH / "cpu_headroom.yaml", {"methods": {"aa_arms": [bad]}})


def _aa_result(aa_rewards):
    cfg = B.load_config(BENCH / "cpu_headroom.yaml", {
        "seeds": [0, 1, 2], "learning_rates": [1e-4], "budget": {"total_completions": 4096},
        "methods": {"grpo_off_policy_h": [8], "rapid_h": [8], "rapid_variants": [], "aa_arms": ["grpo_on_policy"]}})
    finals = {"grpo_on_policy": [0.60, 0.55, 0.65], "grpo_off_policy_H8": [0.62, 0.6, 0.58],
              "rapid_H8": [0.7, 0.66, 0.72], "grpo_on_policy_aa1": aa_rewards}
    runs = [_run(cfg, arm, seed, [0.2, 0.4, finals[arm["method"]][seed]])
            for arm in cfg["plan"]["arms"] for seed in range(3)]
    summary = S.summarize(runs, {}, cfg)
    result = {"config": cfg, "summary": summary, "ideal": {"per_seed": {}}, "runs": runs,
              "comparisons": S.compare_arms(runs, cfg),
              "model": {"kind": "warm_start", "weights": "SFT", "note": None},
              "machine": {"cpus_usable": 2, "cpu_model": "x", "cuda": None, "torch": "t", "transformers": "t",
                          "trl": "t"}, "load_average": {"before": [0], "after": [0]}, "command": "test",
              "checks": {"same_completions": True, "same_optimizer_steps": True, "same_prompt_order": True}}
    return result, B.format_table(result)


def test_report_states_the_aa_check_and_every_comparison():
    result, table = _aa_result([0.58, 0.62, 0.61])
    kinds = {(c["kind"], c["a"].split("@")[0], c["b"].split("@")[0]) for c in result["comparisons"]}
    assert kinds == {("aa", "grpo_on_policy_aa1", "grpo_on_policy"), ("vs_a", "grpo_off_policy_H8", "grpo_on_policy"),
                     ("vs_a", "rapid_H8", "grpo_on_policy"), ("vs_b", "rapid_H8", "grpo_off_policy_H8")}
    aa = next(c for c in result["comparisons"] if c["kind"] == "aa")
    assert aa["welch"]["mean"] == pytest.approx(statistics.fmean([0.58, 0.62, 0.61]) - 0.6)
    assert "A/A check, grpo_on_policy_aa1 − grpo_on_policy at lr 0.0001: +0.003 [" in table
    assert "covers 0" in table and "WARNING" not in table
    assert "| rapid_H8 − grpo_off_policy_H8 | (b), same H | 0.0001 | +0.093 [" in table and "| 3 / 3 |" in table
    assert "MDD" in table
    # The A/A arm is not taken for (b): RAPID H = 8 is still compared with TRL's (b) at H = 8.
    assert result["summary"]["rapid_H8"]["vs_b"]["against"] == "grpo_off_policy_H8"  # one learning rate: arm = method
    _, broken = _aa_result([0.8, 0.82, 0.85])  # the same method "differs from itself": the intervals lie
    assert "does NOT cover 0" in broken and "verdicts below are not to be believed" in broken
    assert broken.index("WARNING") < broken.index("## Held-out score")
    result["comparisons"] = [c for c in result["comparisons"] if c["kind"] != "aa"]
    assert "No A/A arm" in B.format_table(result)
