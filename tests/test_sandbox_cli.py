"""The training script exposes the code sandbox's settings, and they reach the sandbox it builds."""


import pytest
from transformers import HfArgumentParser

from sandbox_modes import needs_rlimits
from trl_rapid.cli import RapidScriptArguments
from trl_rapid.tasks import build_reward


@needs_rlimits  # uid leases are taken only by a root trainer
def test_script_flags_reach_the_sandbox():
    (args,) = HfArgumentParser((RapidScriptArguments,)).parse_args_into_dataclasses(args=[
        "--code_isolation", "rlimits", "--code_workers", "1", "--code_timeout_s", "4", "--code_memory_mb", "1024",
        "--code_sandbox_uid_base", "62000", "--code_sandbox_uid_count", "16", "--code_scratch_root", "/tmp",
    ])
    reward = build_reward("code", args)
    config = reward.sandbox.config
    assert (config.isolation, config.workers, config.timeout_s, config.memory_mb, config.scratch_root) == (
        "rlimits", 1, 4.0, 1024, "/tmp")
    assert reward.sandbox.isolation == "rlimits"
    assert set(reward.sandbox.uids) <= set(range(62000, 62016)) and len(reward.sandbox.uids) == 2
    assert reward(["def f():\n    return 1\n"], tests=["assert f() == 1"]) == [1.0]
    reward.sandbox.close()


def test_unsafe_rlimits_flag_is_parsed():
    (args,) = HfArgumentParser((RapidScriptArguments,)).parse_args_into_dataclasses(
        args=["--code_allow_unsafe_rlimits", "true"])
    assert args.code_allow_unsafe_rlimits is True
    (args,) = HfArgumentParser((RapidScriptArguments,)).parse_args_into_dataclasses(args=[])
    assert args.code_allow_unsafe_rlimits is False


def test_hidden_paths_flag_and_a_local_dataset_reach_the_sandbox(tmp_path):
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text("{}\n")
    (args,) = HfArgumentParser((RapidScriptArguments,)).parse_args_into_dataclasses(args=[
        "--code_hidden_paths", "/opt/answers", "/srv/refs", "--dataset_name", str(dataset), "--code_workers", "1",
    ])
    assert args.code_hidden_paths == ["/opt/answers", "/srv/refs"]
    try:
        reward = build_reward("code", args)
    except Exception as exc:  # no sandbox on this machine: the flag parsing above is what this test is about
        pytest.skip(f"no code sandbox here: {exc}")
    assert reward.sandbox.config.hidden_paths == ["/opt/answers", "/srv/refs", str(dataset.resolve())]
    reward.sandbox.close()
