"""Lean reward: the REPL client tested up to the process boundary against a fake REPL executable.

No Lean toolchain can be installed here, so the peer is a small Python program, written by the test, that speaks the
REPL's JSON protocol (a command + blank line in, a pretty-printed JSON object + blank line out). It decides a proof's
fate by keywords: `bad_tactic` gives an error message, `sorry` a sorry, `HANG` never answers, `CRASH` exits. The
client itself (process start, framing, timeouts, restarts, header-environment caching, proof assembly and acceptance
rules) is the real code.
"""

import json
import sys
import time
from pathlib import Path

import pytest

from trl_rapid.rewards.lean import (
    DEFAULT_HEADER,
    LeanConfig,
    LeanNotAvailableError,
    LeanRepl,
    LeanReplError,
    build_proof_code,
    check_lean_available,
    is_complete_proof,
    make_lean_reward,
)

from helpers.timing import scaled

FIXTURE = Path(__file__).parent / "fixtures" / "minif2f.jsonl"
ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
STATEMENT = ROWS[0]["formal_statement"]  # theorem mathd_algebra_182 (y : ℂ) : 7 * (3 * y + 2) = 21 * y + 14 := by
HEADER = ROWS[0]["header"]

FAKE_REPL = r'''
import json, os, sys, time

LOG = os.environ["FAKE_REPL_LOG"]


def log(entry):
    with open(LOG, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def respond(obj):
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n\n")
    sys.stdout.flush()


def position(line, column):
    return {"line": line, "column": column}


log({"event": "start"})
next_env, lines = 0, []
for line in sys.stdin:
    if line.strip():
        lines.append(line)
        continue
    if not lines:
        continue
    request, lines = json.loads("".join(lines)), []
    log(request)
    cmd = request.get("cmd", "")
    if "env" in request and not 0 <= request["env"] < next_env:
        respond({"message": "Unknown environment."})
        continue
    if "CRASH" in cmd:
        sys.exit(3)
    if "HANG" in cmd:
        time.sleep(3600)
    answer = {"env": next_env}
    next_env += 1
    messages, sorries = [], []
    if "bad_tactic" in cmd:
        messages.append({"severity": "error", "pos": position(2, 2), "endPos": position(2, 12),
                         "data": "unknown tactic"})
    if "sorry" in cmd:
        sorries.append({"pos": position(2, 2), "endPos": position(2, 7), "goal": "⊢ False", "proofState": 0})
        messages.append({"severity": "warning", "pos": position(1, 8), "endPos": position(1, 9),
                         "data": "declaration uses 'sorry'"})
    if messages:
        answer["messages"] = messages
    if sorries:
        answer["sorries"] = sorries
    respond(answer)
'''


@pytest.fixture
def fake_repl(tmp_path, monkeypatch):
    """A LeanConfig that starts the fake REPL; returns (config, log_path)."""
    script = tmp_path / "fake_repl.py"
    script.write_text(FAKE_REPL)
    log_path = tmp_path / "repl_log.jsonl"
    monkeypatch.setenv("FAKE_REPL_LOG", str(log_path))
    # Waits scaled to the machine's load: only test_hang_times_out_and_the_repl_restarts tests the timeout.
    config = LeanConfig(repl_command=[sys.executable, str(script)], project_dir=str(tmp_path), timeout_s=scaled(1.0),
                        startup_timeout_s=scaled(5.0))
    return config, log_path


def _log(log_path):
    return [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []


# ---------------------------------------------------------------------------------------------------------------------
# Start-up checks: fail before training, naming the setting
# ---------------------------------------------------------------------------------------------------------------------


def test_unconfigured_repl_fails_at_startup_naming_the_setting(monkeypatch):
    monkeypatch.delenv("TRL_RAPID_LEAN_REPL", raising=False)
    monkeypatch.delenv("TRL_RAPID_LEAN_PROJECT", raising=False)
    with pytest.raises(LeanNotAvailableError, match=r"LeanConfig\.repl_command"):
        check_lean_available(LeanConfig())
    with pytest.raises(LeanNotAvailableError, match=r"LeanConfig\.repl_command"):
        make_lean_reward(LeanConfig())


def test_missing_executable_and_project_dir(tmp_path):
    with pytest.raises(LeanNotAvailableError, match="not found"):
        check_lean_available(LeanConfig(repl_command=["lake-that-does-not-exist", "exe", "repl"]))
    with pytest.raises(LeanNotAvailableError, match=r"LeanConfig\.project_dir"):
        check_lean_available(LeanConfig(repl_command=[sys.executable], project_dir=str(tmp_path / "missing")))


def test_environment_variable_configures_the_command(monkeypatch):
    monkeypatch.setenv("TRL_RAPID_LEAN_REPL", f"{sys.executable} -c pass")
    argv = check_lean_available(LeanConfig())
    assert argv == [sys.executable, "-c", "pass"]


def test_command_that_does_not_speak_the_protocol_fails_at_construction(tmp_path):
    config = LeanConfig(repl_command=[sys.executable, "-c", "import sys; sys.exit(1)"], startup_timeout_s=5)
    with pytest.raises(LeanNotAvailableError, match="does not answer"):
        make_lean_reward(config)


# ---------------------------------------------------------------------------------------------------------------------
# Protocol round trips
# ---------------------------------------------------------------------------------------------------------------------


def test_round_trip_and_header_environment_is_cached(fake_repl):
    config, log_path = fake_repl
    with LeanRepl(config) as repl:
        first = repl.run_command("def f := 2")
        assert first == {"env": 0}
        assert repl.run_command("example : f = 2 := rfl", env=0) == {"env": 1}
        assert is_complete_proof(repl.check(build_proof_code("  ring", STATEMENT), HEADER))
        assert is_complete_proof(repl.check(build_proof_code("  simp [mul_add]\n  ring", STATEMENT), HEADER))
    requests = [entry for entry in _log(log_path) if "cmd" in entry]
    assert [r["cmd"] for r in requests].count(HEADER) == 1, "the header must be elaborated once per process"
    header_env = next(i for i, r in enumerate(requests) if r["cmd"] == HEADER)
    proofs = [r for r in requests if r["cmd"].startswith("theorem mathd_algebra_182")]
    assert len(proofs) == 2 and all(p["env"] == header_env for p in proofs)


def test_sorry_and_errors_reported_by_the_repl_are_not_proofs(fake_repl):
    config, _ = fake_repl
    with LeanRepl(config) as repl:
        with_sorry = repl.check(STATEMENT + "  sorry\n", HEADER)
        assert with_sorry["sorries"] and not is_complete_proof(with_sorry)
        with_error = repl.check(STATEMENT + "  bad_tactic\n", HEADER)
        assert with_error["messages"][0]["severity"] == "error" and not is_complete_proof(with_error)
        with pytest.raises(LeanReplError, match="Unknown environment"):
            repl.run_command("example : True := trivial", env=99)


def test_hang_times_out_and_the_repl_restarts(fake_repl):
    config, log_path = fake_repl
    reward = make_lean_reward(config)
    start = time.monotonic()
    assert reward(["  HANG"], formal_statement=[STATEMENT], header=[HEADER]) == [0.0]
    assert time.monotonic() - start < config.timeout_s + scaled(2.0)  # the timeout, and the REPL's start-up
    assert reward(["  ring"], formal_statement=[STATEMENT], header=[HEADER]) == [1.0]
    assert sum(entry.get("event") == "start" for entry in _log(log_path)) == 2


def test_crash_restarts_and_later_proofs_still_score(fake_repl):
    config, log_path = fake_repl
    reward = make_lean_reward(config)
    assert reward(["  CRASH"], formal_statement=[STATEMENT], header=[HEADER]) == [0.0]
    assert reward(["  norm_num"], formal_statement=[STATEMENT], header=[HEADER]) == [1.0]
    starts = sum(entry.get("event") == "start" for entry in _log(log_path))
    assert starts == 3  # first process, restart for the retry of the crashing proof, restart after it


# ---------------------------------------------------------------------------------------------------------------------
# The reward on MiniF2F rows
# ---------------------------------------------------------------------------------------------------------------------


def test_lean_reward_on_minif2f_rows(fake_repl):
    config, log_path = fake_repl
    reward = make_lean_reward(config)
    logged = {}
    completions = [
        "  ring\n```\nThe expansion is immediate.",  # continues the prompt's open lean4 block
        "```lean4\nimport Mathlib\ntheorem mathd_algebra_182 (y : ℂ) :\n    7 * (3 * y + 2) = 21 * y + 14 := by\n"
        "  ring\n```",  # restates the theorem
        "  bad_tactic",  # the REPL reports an error
        "  sorry",  # rejected before sending
        "```lean4\ntheorem mathd_algebra_182 (y : ℂ) : 7 * (3 * y + 2) = 21 * y + 15 := by\n  ring\n```",  # changed
        "  #eval IO.Process.run {cmd := \"touch\", args := #[\"/tmp/owned\"]}\n  ring",  # host IO
        [{"role": "assistant", "content": "```lean4\n" + STATEMENT + "  ring\n```"}],  # conversational
    ]
    rewards = reward(
        completions,
        formal_statement=[STATEMENT] * len(completions),
        header=[HEADER] * len(completions),
        log_extra=lambda column, values: logged.__setitem__(column, values),
    )
    assert rewards == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert logged["lean_status"] == ["passed", "passed", "failed", "rejected", "rejected", "rejected", "passed"]
    sent = [entry["cmd"] for entry in _log(log_path) if "cmd" in entry]
    assert not any("sorry" in cmd or "#eval" in cmd or "21 * y + 15" in cmd for cmd in sent)
    proofs_sent = [cmd for cmd in sent if cmd.startswith("theorem")]
    assert len(proofs_sent) == 4 and not any("import" in cmd for cmd in proofs_sent)  # imports stripped


def test_missing_header_column_uses_default_header(fake_repl):
    config, log_path = fake_repl
    reward = make_lean_reward(config)
    statement = ROWS[2]["formal_statement"]
    assert reward(["  decide"], formal_statement=[statement]) == [1.0]
    assert any(entry.get("cmd") == DEFAULT_HEADER for entry in _log(log_path))


def test_build_proof_code_rules():
    assert build_proof_code("  nlinarith [sq_nonneg y]", STATEMENT) == STATEMENT + "  nlinarith [sq_nonneg y]\n"
    assert build_proof_code("ring", STATEMENT) == STATEMENT + "  ring\n"
    assert build_proof_code("", STATEMENT) is None
    assert build_proof_code("  admit", STATEMENT) is None
    assert build_proof_code("axiom cheat : False\n  exact cheat.elim", STATEMENT) is None
    assert build_proof_code("  exact (sorryAx _)", STATEMENT) is None
    # identifiers that merely contain a forbidden word are fine
    assert build_proof_code("  simp [Nat.sorry_free_lemma, elab_as_elim_thing]", STATEMENT) is not None
