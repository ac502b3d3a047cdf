"""scripts/benchmark.py (trl_rapid.benchmark): a minuscule end-to-end run of every method, the configs, the builders."""

import json
from pathlib import Path

import pytest

from trl_rapid import benchmark as B

ROOT = Path(__file__).resolve().parent.parent
CPU_CONFIG = ROOT / "configs" / "bench" / "cpu_demo.yaml"
GPU_CONFIG = ROOT / "configs" / "bench" / "gpu_qwen05b.yaml"

# 1 seed, every method, one outer step of the largest H: N_step = 8 completions, 64 completions per run.
TINY_BUDGET = {
    "seeds": [0],
    "budget": {"total_completions": 64},
    "task": {"num_train_prompts": 64, "num_eval_prompts": 8},
    "eval": {"every_steps": 8},
    "training": {"num_generations": 4, "per_device_train_batch_size": 8, "logging_steps": 4},
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Run the CPU benchmark config, every method + the ideal, with the minuscule budget, in this process."""
    from trl_rapid.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("bench-root")
    model_dir = build_tiny_model(root / "tiny-model")
    overrides = {**TINY_BUDGET, "model": {"path": str(model_dir)}, "isolation": "inprocess"}
    cfg = B.load_config(CPU_CONFIG, overrides)
    out = root / "out"
    result = B.run_benchmark(cfg, out, command="pytest tests/test_benchmark.py", root=root, log=lambda *a: None)
    return result, out


@pytest.mark.slow  # the benchmark, every method (the `bench` fixture)
def test_outputs_written(bench):
    result, out = bench
    for name in ("results.json", "table.md", "time_breakdown.png", "reward_vs_time.png"):
        assert (out / name).stat().st_size > 0, name
    for png in ("time_breakdown.png", "reward_vs_time.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) >= {"command", "machine", "model", "config", "runs", "ideal", "summary", "checks",
                          "timing_definitions", "load_average"}
    assert saved["command"] == "pytest tests/test_benchmark.py"
    assert {"cpu_count", "cpus_usable", "torch", "trl", "transformers"} <= set(saved["machine"])
    table = (out / "table.md").read_text()
    for method in result["config"]["plan"]["methods"]:
        assert method["label"] in table


@pytest.mark.slow  # the benchmark, every method (the `bench` fixture)
def test_every_method_ran_once_with_the_same_budget(bench):
    result, _ = bench
    plan = result["config"]["plan"]
    names = [m["name"] for m in plan["methods"]]
    assert names == ["grpo_on_policy", "grpo_off_policy_H8", "rapid_H1", "rapid_H2", "rapid_H4", "rapid_H8"]
    assert [r["method"] for r in result["runs"]] == names
    for run, method in zip(result["runs"], plan["methods"], strict=True):
        counts = run["counts"]
        assert counts["completions"] == 64, run["method"]
        assert counts["optimizer_steps"] == 8
        assert counts["generation_calls"] == 64 // method["n_inference"]
        assert counts["completion_tokens"] > 0
        assert run["config"]["steps_per_generation"] == method["h"]  # gradient_accumulation_steps = 1
    assert result["checks"] == {"same_completions": True, "same_optimizer_steps": True, "same_prompt_order": True}
    assert result["runs"][0]["config"]["scale_rewards"] == "group"  # TRL's GRPO default, kept for (a), (b)
    assert result["runs"][2]["config"]["eta"] == 2.0


@pytest.mark.slow  # the benchmark, every method (the `bench` fixture)
def test_time_parts_add_up(bench):
    result, _ = bench
    for run in result["runs"]:
        t = run["times"]
        assert t["total"] > 0 and t["generation"] > 0 and t["training"] > 0
        assert t["generation"] + t["training"] + t["other"] == pytest.approx(t["total"], abs=1e-9)
        assert t["other"] > -0.05 * t["total"]  # generation and training are disjoint parts of the train() wall
        assert t["sampling"] <= t["generation"]
        assert 0 <= t["setup"] <= t["other"] + 0.05 * t["total"]
        assert run["throughput"]["completions_per_s"] == pytest.approx(64 / t["total"])
        assert run["memory"]["peak_rss_mib"] >= run["memory"]["start_rss_mib"] > 0


@pytest.mark.slow  # the benchmark, every method (the `bench` fixture)
def test_ratios_come_from_the_recorded_times(bench):
    result, _ = bench
    runs = {r["method"]: r for r in result["runs"]}
    ref = runs["grpo_on_policy"]
    ideal = result["ideal"]["per_seed"]["0"]
    assert ideal["total"] == pytest.approx(ideal["generation"] + ideal["training"])
    for name, entry in result["summary"].items():
        run = runs[name]
        ratios = entry["ratio_to_a"]
        for part in ("total", "generation", "training", "other"):
            assert ratios[f"{part}_time"]["mean"] == pytest.approx(run["times"][part] / ref["times"][part])
        if ref["eval"]["final_reward"]:
            assert ratios["final_reward"]["mean"] == pytest.approx(
                run["eval"]["final_reward"] / ref["eval"]["final_reward"])
        assert entry["overhead_over_ideal"]["mean"] == pytest.approx(run["times"]["total"] / ideal["total"] - 1)
        assert entry["total_s"] == {"mean": pytest.approx(run["times"]["total"]), "std": 0.0, "n": 1}
    assert result["summary"]["grpo_on_policy"]["ratio_to_a"]["total_time"]["mean"] == 1.0


@pytest.mark.slow  # the benchmark, every method (the `bench` fixture)
def test_evaluation_along_the_way(bench):
    result, _ = bench
    for run in result["runs"]:
        points = run["eval"]["points"]
        assert [p["step"] for p in points] == [0, 8]
        assert [p["completions"] for p in points] == [0, 64]
        assert points[0]["wall_s"] == 0.0 and 0 < points[-1]["wall_s"] <= run["times"]["total"] + 1e-6
        assert all(0.0 <= p["reward"] <= 1.0 for p in points)
        assert run["eval"]["final_reward"] == points[-1]["reward"]


@pytest.mark.slow  # the benchmark, every method (the `bench` fixture)
def test_ideal_measurements(bench):
    result, _ = bench
    kinds = {r["kind"]: r for r in result["ideal"]["runs"]}
    gen, train = kinds["ideal_generation"], kinds["ideal_training"]
    assert gen["completions"] == 64 and gen["batch_size"] in (8, 16, 32, 64) and gen["time"] > 0
    assert set(gen["probe_s_per_completion"]) == {"8", "16", "32", "64"}
    assert train["optimizer_steps"] == 8 and train["completions"] == 64 and train["time"] > 0


def test_configs_parse():
    cpu = B.load_config(CPU_CONFIG)
    assert cpu["model"]["kind"] == "tiny" and len(cpu["seeds"]) >= 3
    assert [m["h"] for m in cpu["plan"]["methods"]] == [1, 8, 1, 2, 4, 8]
    total = cpu["budget"]["total_completions"]
    assert {m["generation_calls"] * m["n_inference"] for m in cpu["plan"]["methods"]} == {total}

    gpu = B.load_config(GPU_CONFIG)
    assert gpu["model"]["kind"] == "qwen2.5-0.5b-shaped"
    assert gpu["training"]["use_vllm"] is True and gpu["training"]["vllm_mode"] == "colocate"
    assert gpu["plan"]["n_step"] == 32 and gpu["isolation"] == "spawn"
    assert "UNTESTED" in GPU_CONFIG.read_text()
    # Every method's TRL config builds from it (vLLM itself is only needed when a trainer starts; bf16 needs a GPU).
    gpu["training"]["bf16"] = False
    for method in gpu["plan"]["methods"]:
        config = B._make_config(gpu, method, seed=0, output_dir="unused")
        assert config.use_vllm and config.steps_per_generation == method["h"] * 4


def test_budget_must_fill_whole_outer_steps():
    with pytest.raises(ValueError, match="multiple of N_step"):
        B.load_config(CPU_CONFIG, {"budget": {"total_completions": 32 * 8 + 32}})
    with pytest.raises(ValueError, match="eval.every_steps"):
        B.load_config(CPU_CONFIG, {"eval": {"every_steps": 12}})
    with pytest.raises(ValueError, match="reference"):
        B.load_config(CPU_CONFIG, {"methods": {"grpo_on_policy": False}})


def test_qwen_shaped_model_is_random_and_says_so(tmp_path):
    from transformers import AutoConfig

    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=96)
    cfg = B.load_config(GPU_CONFIG, {"model": {"path": str(tmp_path / "m"), "dimensions": small,
                                               "tokenizer_from": str(tmp_path / "no-such-tokenizer")}})
    info = B.prepare_model(cfg, tmp_path)
    assert info["note"] == B.RANDOM_WEIGHTS_NOTE == "random weights, timing only"
    config = AutoConfig.from_pretrained(info["path"])
    assert config.model_type == "qwen2" and config.vocab_size == 96 and config.tie_word_embeddings
    tokenizer = B._load_tokenizer(info)
    assert len(tokenizer) == 96 and tokenizer("483>")["input_ids"] == [6, 10, 5, 44]
    assert tokenizer.decode([95]) == "<f95>"  # every id the model can sample decodes
    assert json.loads((Path(info["path"]) / "bench_model.json").read_text())["note"] == B.RANDOM_WEIGHTS_NOTE
    # Full size: the architecture constants match Qwen2.5-0.5B.
    assert (B.QWEN25_05B["hidden_size"], B.QWEN25_05B["num_hidden_layers"], B.QWEN25_05B["vocab_size"]) == (
        896, 24, 151936)


@pytest.mark.slow  # the benchmark, every method (the `bench` fixture)
def test_random_weights_note_reaches_the_table(bench):
    result, _ = bench
    fake = {**result, "model": {**result["model"], "kind": "qwen2.5-0.5b-shaped", "note": B.RANDOM_WEIGHTS_NOTE}}
    assert "random weights, timing only" in B.format_table(fake)


@pytest.mark.slow  # benchmark worker processes
def test_runs_in_fresh_processes(tmp_path, tiny_model_dir):
    """The default isolation: each run in a child forked from a server that preloaded torch/TRL."""
    overrides = {**TINY_BUDGET, "budget": {"total_completions": 16}, "eval": {"every_steps": 2},
                 "methods": {"grpo_off_policy_h": [], "rapid_h": [2]}, "ideal": {"enabled": False},
                 "model": {"path": tiny_model_dir}, "isolation": "forkserver"}
    cfg = B.load_config(CPU_CONFIG, overrides)
    result = B.run_benchmark(cfg, tmp_path / "out", command="test", root=tmp_path, log=lambda *a: None)
    assert [r["method"] for r in result["runs"]] == ["grpo_on_policy", "rapid_H2"]
    assert [r["counts"]["completions"] for r in result["runs"]] == [16, 16]
    assert [r["torch_threads"] for r in result["runs"]] == [1, 1]  # cpu_demo.yaml's torch_threads
    assert result["ideal"]["per_seed"] == {} and "over ideal" in (tmp_path / "out" / "table.md").read_text()


@pytest.mark.slow  # the benchmark, every method (the `bench` fixture)
def test_aa_arm_changes_the_completions_but_not_the_prompts(bench, tmp_path, tiny_model_dir):
    """An A/A arm of (a), random_stream_offset 1: other sampled completions, the same prompts in the same order; and
    (a) itself is deterministic per seed (the same completions as in the `bench` run), so the difference is the
    offset's."""
    overrides = {**TINY_BUDGET, "methods": {"grpo_off_policy_h": [], "rapid_h": [], "aa_arms": ["grpo_on_policy"]},
                 "ideal": {"enabled": False}, "model": {"path": tiny_model_dir}, "isolation": "inprocess"}
    cfg = B.load_config(CPU_CONFIG, overrides)
    result = B.run_benchmark(cfg, tmp_path / "out", command="test", root=tmp_path, log=lambda *a: None)
    a, aa = result["runs"]
    assert (a["method"], aa["method"], aa["random_stream_offset"]) == ("grpo_on_policy", "grpo_on_policy_aa1", 1)
    assert aa["prompt_order_sha1"] == a["prompt_order_sha1"] and aa["first_prompts"] == a["first_prompts"]
    assert aa["completions_sha1"] != a["completions_sha1"]
    same_a = next(r for r in bench[0]["runs"] if r["method"] == "grpo_on_policy")
    assert a["completions_sha1"] == same_a["completions_sha1"]
    assert a["eval"]["final_reward"] == same_a["eval"]["final_reward"]
    assert aa["config"] == a["config"]
    assert result["checks"]["same_prompt_order"] is True
    table = (tmp_path / "out" / "table.md").read_text()
    assert "A/A check, grpo_on_policy_aa1 − grpo_on_policy" in table  # one seed: "no interval", said so


@pytest.mark.slow  # benchmark worker processes
def test_parallel_workers_give_the_same_runs_and_resume_reuses_finished_ones(tmp_path, tiny_model_dir):
    """2 seeds × 2 methods, one at a time and two at a time: every run's outcome is the same per seed (fresh process,
    one torch thread each), the partial file gets every run as it finishes, and a resumed sweep runs nothing again."""
    overrides = {**TINY_BUDGET, "seeds": [0, 1], "budget": {"total_completions": 32}, "eval": {"every_steps": 2},
                 "methods": {"grpo_off_policy_h": [], "rapid_h": [2]}, "ideal": {"enabled": False},
                 "model": {"path": tiny_model_dir}, "isolation": "forkserver"}
    results, lines = {}, {}
    for workers in (1, 2):
        cfg = B.load_config(CPU_CONFIG, dict(overrides, workers=workers))
        assert (cfg["workers"], cfg["torch_threads"], cfg["clock"]) == (workers, 1, "process")  # CPU defaults
        log = []
        results[workers] = B.run_benchmark(cfg, tmp_path / f"w{workers}", command="test", root=tmp_path,
                                           log=log.append)
        lines[workers] = log
        assert not (tmp_path / f"w{workers}" / "runs.partial.jsonl").exists()  # results.json holds them now
    assert results[2]["workers"] == 2 and results[2]["clock"] == "process" and results[2]["runs_per_hour"] > 0

    def outcome(result):
        return {(r["arm"], r["seed"]): (r["eval"]["final_reward"], r["completions_sha1"], r["prompt_order_sha1"])
                for r in result["runs"]}

    assert outcome(results[1]) == outcome(results[2]) and len(outcome(results[1])) == 4
    assert sum(line.startswith("[bench] seed") for line in lines[2]) == 4  # one line per run, as it finished
    assert any("2 at a time" in line for line in lines[2])

    # Resume: a sweep interrupted after 3 runs left them in runs.partial.jsonl; the resumed sweep runs only the 4th.
    cfg = B.load_config(CPU_CONFIG, dict(overrides, workers=2))
    out = tmp_path / "resumed"
    out.mkdir()
    key = B.runs.sweep_key(cfg)
    finished = [dict(r, sweep_key=key) for r in results[2]["runs"][:3]]
    stranger = dict(results[2]["runs"][3], sweep_key="another configuration")
    (out / "runs.partial.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*finished, stranger]) + '{"cut')
    log = []
    resumed = B.run_benchmark(cfg, out, command="test", root=tmp_path, log=log.append, resume=True)
    assert any("3 finished runs reused" in line and "1 from another configuration ignored" in line for line in log)
    assert sum(line.startswith("[bench] seed") for line in log) == 1
    assert outcome(resumed) == outcome(results[1])


def test_workers_and_clock_settings():
    cfg = B.load_config(CPU_CONFIG)
    assert cfg["workers"] == B.config.usable_cores() and cfg["torch_threads"] == 1 and cfg["clock"] == "process"
    assert B.load_config(CPU_CONFIG, {"isolation": "inprocess"})["workers"] == 1
    assert B.load_config(CPU_CONFIG, {"clock": "wall"})["clock"] == "wall"
    with pytest.raises(ValueError, match="workers: 1"):
        B.load_config(CPU_CONFIG, {"isolation": "inprocess", "workers": 2})
    with pytest.raises(ValueError, match="workers must be"):
        B.load_config(CPU_CONFIG, {"workers": 0})
    with pytest.raises(ValueError, match="clock"):
        B.load_config(CPU_CONFIG, {"clock": "cpu"})
    gpu = B.load_config(GPU_CONFIG)  # no use_cpu: CUDA decides; none here, so the CPU defaults
    assert gpu["clock"] in ("process", "wall")
    assert B.overrides_from_args(B.parse_args(["--config", "x", "--workers", "3", "--clock", "wall"])) == {
        "workers": 3, "clock": "wall"}
