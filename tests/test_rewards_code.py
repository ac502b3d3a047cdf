"""Code reward: extraction, MBPP+ tests on real tasks, parallelism, and hostile programs in the sandbox.

Every program really runs in subprocesses through `trl_rapid.rewards.sandbox`; nothing is mocked. Hostile tests run
under each isolation level available on the machine ("namespaces" where unshare works, and "rlimits" as root).
Forging attempts against the verdict are in tests/test_sandbox_forging.py, faults and concurrency in
tests/test_sandbox_faults.py.
"""

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from trl_rapid.rewards.code import build_tests, extract_code, make_code_reward
from trl_rapid.rewards.sandbox import (
    Sandbox,
    SandboxConfig,
    find_sandbox_processes,
    run_prefix,
    wait_for_cleanup,
)

from helpers.timing import load_factor, scaled
from sandbox_modes import ROWS, IS_ROOT, MODES, lasting

# Scaled to the machine's load: a correct program must finish in time on a loaded machine too; the hostile programs
# check that the sandbox stops them at this timeout, whatever its value.
TIMEOUT_S = scaled(2.0)




@pytest.fixture(scope="module", params=MODES)
def reward(request):
    """A code reward with short limits, one per isolation level."""
    config = SandboxConfig(timeout_s=TIMEOUT_S, memory_mb=1024, workers=2, isolation=request.param)
    fn = make_code_reward(config)
    assert fn.sandbox.isolation == request.param
    return fn


def _columns(task_ids):
    rows = [ROWS[t] for t in task_ids]
    return {key: [row[key] for row in rows] for key in ("test_list", "test", "test_imports")}


def _fenced(code: str) -> str:
    return f"Here is my solution:\n```python\n{code}\n```\nIt squares the side."


GOOD_17 = _fenced("def square_perimeter(a):\n    return 4 * a")


def _assert_caller_healthy(reward):
    """The calling process still works: a normal completion is still scored, quickly and correctly."""
    start = time.monotonic()
    assert reward([GOOD_17], **_columns([17])) == [1.0]
    assert time.monotonic() - start < scaled(5)
    assert not lasting(lambda: find_sandbox_processes(run_prefix()))


def _assert_no_sandbox_uid_processes(sandbox: Sandbox):
    if not IS_ROOT:
        return
    uids = set(sandbox.uids)
    assert len(uids) == 2 * sandbox.config.workers
    owned = [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) in uids]
    assert owned == [], f"processes left under the sandbox uids: {owned}"


def _uid_of(pid: str):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Extraction and test assembly
# ---------------------------------------------------------------------------------------------------------------------


def test_extract_code_prefers_last_defining_python_block():
    text = "Try:\n```python\nprint('scratch')\n```\nFinal:\n```python\ndef f(x):\n    return x\n```\n```text\nout\n```"
    assert extract_code(text) == "def f(x):\n    return x"


def test_extract_code_unterminated_fence_raw_text_and_mbpp_markers():
    assert extract_code("```py\ndef g():\n    return 1\n") == "def g():\n    return 1"
    assert extract_code("def h():\n    return 2\n") == "def h():\n    return 2"
    assert extract_code("[BEGIN]\ndef k(): return 3\n[DONE] extra words") == "def k(): return 3"
    assert extract_code("```bash\nrm -rf /\n```") == ""  # only non-Python blocks: nothing to run


def test_build_tests_modes():
    row = ROWS[139]
    base = build_tests(row["test_list"], row["test"], row["test_imports"], mode="base")
    plus = build_tests(row["test_list"], row["test"], row["test_imports"], mode="plus")
    both = build_tests(row["test_list"], row["test"], row["test_imports"], mode="all")
    assert base.startswith("import math\n") and "math.isclose" in base and "inputs = " not in base
    assert plus.startswith("import math\n") and "inputs = " in plus and "math.isclose" not in plus
    assert "math.isclose" in both and "inputs = " in both
    assert build_tests(tests="x = 1\nassert x == 1") == "x = 1\nassert x == 1\n"  # a script runs as it is
    only_asserts = build_tests(tests="import math\nassert f(1) == 2\nassert f(2) == 3")  # ... unless only asserts
    assert "def _trl_base_1():\n    assert f(2) == 3\n" in only_asserts and only_asserts.startswith("import math\n")
    listed = build_tests(tests=["assert 1 == 1"])  # a list of asserts: each one runs, whatever the others do
    assert "def _trl_base_0():\n    assert 1 == 1\n" in listed and "_trl_run_all([_trl_base_0]" in listed
    assert build_tests() is None
    with pytest.raises(ValueError, match="test_mode"):
        build_tests(["assert True"], mode="bogus")


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"SandboxConfig\.timeout_s"):
        SandboxConfig(timeout_s=0)
    with pytest.raises(ValueError, match=r"SandboxConfig\.isolation"):
        SandboxConfig(isolation="docker")
    with pytest.raises(ValueError, match=r"SandboxConfig\.python"):
        SandboxConfig(python="/nonexistent/python")
    with pytest.raises(ValueError, match="test_mode"):
        make_code_reward(SandboxConfig(isolation="rlimits"), test_mode="some")


# ---------------------------------------------------------------------------------------------------------------------
# Real MBPP+ tasks
# ---------------------------------------------------------------------------------------------------------------------


def test_reference_solutions_pass_base_and_plus_tests(reward):
    ids = sorted(ROWS)
    completions = [_fenced(ROWS[t]["code"]) for t in ids]
    assert reward(completions, **_columns(ids)) == [1.0] * len(ids)


def test_wrong_solutions_score_zero(reward):
    completions = [
        _fenced("def square_perimeter(a):\n    return 3 * a"),  # wrong formula
        _fenced("def square_nums(nums):\n    return nums"),  # wrong result
        _fenced("def heap_queue_largest(nums, n):\n    return sorted(nums)[:n]"),  # smallest instead of largest
        "I am not sure how to solve this.",  # no code at all
        _fenced("def differ_At_One_Bit_Pos(a, b) return True"),  # syntax error
    ]
    assert reward(completions, **_columns([17, 8, 4, 6, 6])) == [0.0] * 5


def test_plus_tests_catch_what_base_tests_miss():
    # Passes the four base asserts of task 3, but calls 1 prime: the plus inputs include 1 (not prime).
    naive = _fenced(
        "def is_not_prime(n):\n    for i in range(2, int(n ** 0.5) + 1):\n        if n % i == 0:\n"
        "            return True\n    return False"
    )
    config = SandboxConfig(timeout_s=TIMEOUT_S, workers=1)
    cols = _columns([3])
    assert make_code_reward(config, test_mode="base")([naive], **cols) == [1.0]
    assert make_code_reward(config, test_mode="plus")([naive], **cols) == [0.0]
    assert make_code_reward(config, test_mode="all")([naive], **cols) == [0.0]


def test_conversational_completions_and_rows_without_tests(reward):
    completions = [[{"role": "assistant", "content": GOOD_17}], GOOD_17]
    cols = _columns([17])
    assert reward(completions, test_list=cols["test_list"] + [[]], test=cols["test"] + [""],
                  test_imports=[[], []]) == [1.0, None]


def test_generic_tests_column_and_log_extra():
    logged = {}
    fn = make_code_reward(SandboxConfig(timeout_s=TIMEOUT_S, workers=1))
    rewards = fn(
        ["```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```"],
        tests=["assert add(2, 3) == 5", "assert add(2, 3) == 5"],
        log_extra=lambda column, values: logged.__setitem__(column, values),
    )
    assert rewards == [1.0, 0.0]
    assert logged == {"code_status": ["passed", "failed"]}


def test_completions_run_in_parallel_and_keep_order():
    dilation = load_factor()  # on a loaded machine the whole test runs slower: sleeps, timeout and bound alike
    fn = make_code_reward(SandboxConfig(timeout_s=5 * dilation, workers=4))
    slow_ok = f"```python\nimport time\ntime.sleep({dilation})\ndef f():\n    return 1\n```"
    slow_bad = f"```python\nimport time\ntime.sleep({dilation})\ndef f():\n    return 2\n```"
    start = time.monotonic()
    rewards = fn([slow_ok, slow_bad, slow_bad, slow_ok], tests=["assert f() == 1"] * 4)
    elapsed = time.monotonic() - start
    assert rewards == [1.0, 0.0, 0.0, 1.0]
    assert elapsed < 3.0 * dilation, f"4 programs sleeping {dilation:.1f}s on 4 workers took {elapsed:.1f}s: not parallel"


def test_environment_is_minimal_and_scratch_is_private(reward, monkeypatch):
    monkeypatch.setenv("TRL_RAPID_TEST_SECRET", "hunter2")
    before = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(run_prefix())}
    program = _fenced(
        "import os, tempfile\n"
        "assert 'TRL_RAPID_TEST_SECRET' not in os.environ\n"
        "assert set(os.environ) <= {'PATH', 'LANG', 'LC_ALL', 'HOME', 'TMPDIR', 'OMP_NUM_THREADS',\n"
        "    'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'TRL_RAPID_SANDBOX', 'LC_CTYPE'}\n"
        "assert os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd()\n"
        "open('notes.txt', 'w').write('scratch')\n"
        "with tempfile.NamedTemporaryFile(dir=None) as fh:\n    fh.write(b'x')\n"
        "def square_perimeter(a):\n    return 4 * a"
    )
    assert reward([program], **_columns([17])) == [1.0]

    def new_run_dirs():
        wait_for_cleanup()  # run directories are deleted on a background thread
        return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(run_prefix())} - before

    assert not lasting(new_run_dirs), "the run's scratch directory was not deleted"


# ---------------------------------------------------------------------------------------------------------------------
# Hostile programs: each scores 0 and leaves the calling process healthy
# ---------------------------------------------------------------------------------------------------------------------


def test_hostile_infinite_loop(reward):
    start = time.monotonic()
    assert reward([_fenced("while True:\n    pass")], **_columns([17])) == [0.0]
    assert time.monotonic() - start < TIMEOUT_S + 3
    _assert_caller_healthy(reward)


def test_hostile_fork_bomb(reward):
    bomb = _fenced("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    start = time.monotonic()
    assert reward([bomb], **_columns([17])) == [0.0]
    assert time.monotonic() - start < TIMEOUT_S + 4
    assert not lasting(lambda: find_sandbox_processes(run_prefix())), "fork-bomb processes survived the run"
    _assert_no_sandbox_uid_processes(reward.sandbox)
    _assert_caller_healthy(reward)


def test_process_limit_is_enforced(reward):
    # Fork sleeping children until the kernel refuses: RLIMIT_NPROC, not the timeout, must stop the bomb.
    program = (
        "import os, time\ncount = 0\n"
        "while count < 1000:\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
        "    count += 1\n"
        "print(count, flush=True)\n"
    )
    result = reward.sandbox.run(program, "pass\n")
    forked = int(result.stdout_tail.split()[0])
    assert result.passed and 0 < forked < reward.sandbox.config.max_processes
    assert not lasting(lambda: find_sandbox_processes(run_prefix()))  # the sleeping children were killed when the run ended
    _assert_no_sandbox_uid_processes(reward.sandbox)


def test_hostile_huge_allocation(reward):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    program = _fenced("block = bytearray(10 * 1024 ** 3)\ndef square_perimeter(a):\n    return 4 * a")
    assert reward([program], **_columns([17])) == [0.0]
    assert time.monotonic() - start < TIMEOUT_S + 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024  # KiB: caller did not grow
    _assert_caller_healthy(reward)


def test_hostile_writes_outside_scratch(reward, tmp_path):
    if reward.sandbox.isolation == "rlimits" and not IS_ROOT:
        pytest.skip("not enforceable: without namespaces a non-root trainer's sandbox runs as the same user")
    victim = tmp_path / "trainer_files"
    victim.mkdir()
    (victim / "sentinel.txt").write_text("precious")
    escape = Path(tempfile.gettempdir()) / f"trl_rapid_escape_{uuid.uuid4().hex}"
    program = _fenced(
        "import os, shutil\n"
        f"victim, escape = {str(victim)!r}, {str(escape)!r}\n"
        "attempts = [\n"
        "    lambda: open(os.path.join(victim, 'sentinel.txt'), 'w').write('pwned'),\n"
        "    lambda: os.remove(os.path.join(victim, 'sentinel.txt')),\n"
        "    lambda: open(os.path.join(victim, 'new.txt'), 'w').write('x'),\n"
        "    lambda: shutil.rmtree(victim),\n"
        "    lambda: open(escape, 'w').write('escaped'),\n"
        "]\n"
        "for attempt in attempts:\n"
        "    try:\n        attempt()\n    except OSError:\n        pass"
    )
    try:
        assert reward([program], **_columns([17])) == [0.0]
        assert (victim / "sentinel.txt").read_text() == "precious"
        assert sorted(p.name for p in victim.iterdir()) == ["sentinel.txt"]
        if reward.sandbox.isolation == "namespaces":
            assert not escape.exists(), "a write to /tmp escaped the namespace's private /tmp"
        # In "rlimits" mode /tmp is world-writable and the write may land there (documented limitation).
    finally:
        escape.unlink(missing_ok=True)
    _assert_caller_healthy(reward)


def test_namespaces_keep_a_virtualenv_under_tmp_visible_and_read_only(tmp_path):
    # The namespace sandbox covers /tmp with its scratch directory; an interpreter living in a virtualenv under /tmp
    # (e.g. a CI checkout there) must still start, and its tree must not be writable.
    if "namespaces" not in MODES:
        pytest.skip("namespaces unavailable here")
    if not str(tmp_path).startswith("/tmp/"):
        pytest.skip("pytest's tmp_path is not under /tmp here")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    sandbox = Sandbox(SandboxConfig(python=str(venv / "bin" / "python"), isolation="namespaces", workers=1))
    assert sandbox.isolation == "namespaces"
    assert sandbox.run("import sys\ndef prefix():\n    return sys.prefix", f"assert prefix() == {str(venv)!r}").passed
    attempt = sandbox.run(f"open({str(venv / 'planted')!r}, 'w').write('x')", "pass")
    assert not attempt.passed and "Read-only file system" in attempt.stderr_tail
    assert not (venv / "planted").exists()


def test_namespaces_filesystem_is_read_only_outside_scratch():
    if "namespaces" not in MODES:
        pytest.skip("namespaces unavailable here")
    parent = next((d for d in ("/srv", "/opt", "/mnt", "/var/lib") if os.access(d, os.W_OK)), None)
    if parent is None:
        pytest.skip("no writable directory outside /tmp to plant a world-writable victim in")
    victim = Path(parent) / f"trl-rapid-victim-{uuid.uuid4().hex}"
    victim.mkdir()
    try:
        victim.chmod(0o777)  # even a world-writable directory is protected: the mount is read-only in the sandbox
        (victim / "sentinel.txt").write_text("precious")
        (victim / "sentinel.txt").chmod(0o666)
        fn = make_code_reward(SandboxConfig(timeout_s=TIMEOUT_S, workers=1, isolation="namespaces"))
        program = (
            "import errno, os\nerrors = []\ndef observed():\n    return errors\n"
            f"for action in (lambda: open({str(victim / 'sentinel.txt')!r}, 'w').write('pwned'),\n"
            f"               lambda: os.remove({str(victim / 'sentinel.txt')!r}),\n"
            f"               lambda: open({str(victim / 'new.txt')!r}, 'w').write('x')):\n"
            "    try:\n        action()\n    except OSError as e:\n        errors.append(e.errno)\n"
            "open('/tmp/scratch_is_writable.txt', 'w').write('ok')\n"
        )
        assert fn([program], tests=["import errno\nassert observed() == [errno.EROFS] * 3"]) == [1.0]
        assert (victim / "sentinel.txt").read_text() == "precious"
        assert sorted(p.name for p in victim.iterdir()) == ["sentinel.txt"]
    finally:
        for child in victim.iterdir():
            child.unlink()
        victim.rmdir()


def test_hostile_exit_before_tests(reward):
    for exit_call in ("import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"):
        program = _fenced(f"def square_perimeter(a):\n    return 3 * a\n{exit_call}")
        assert reward([program], **_columns([17])) == [0.0], exit_call
    results = reward.sandbox.run_many([("import sys\nsys.exit(0)\n", "pass\n")])
    assert results[0].status == "solution_error" and not results[0].passed  # even though the tests are empty
    _assert_caller_healthy(reward)


def test_hostile_kill_parent(reward):
    ppid = reward.sandbox.run("import os\nprint(os.getppid(), flush=True)\n", "pass\n")
    assert ppid.passed and int(ppid.stdout_tail.split()[0]) != os.getpid(), "the program's parent is the caller"
    program = _fenced("import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(1)")
    assert reward([program], **_columns([17])) == [0.0]
    _assert_caller_healthy(reward)


def test_hostile_kill_everything(reward):
    if reward.sandbox.isolation == "rlimits" and not IS_ROOT:
        pytest.skip("not enforceable: without namespaces, kill(-1) from a same-user sandbox reaches the trainer")
    program = _fenced("import os, signal\nos.kill(-1, signal.SIGKILL)")
    assert reward([program], **_columns([17])) == [0.0]
    _assert_caller_healthy(reward)


def test_hostile_huge_output(reward):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    program = _fenced("import sys\nwhile True:\n    sys.stdout.write('x' * 1_000_000)")
    start = time.monotonic()
    results = reward.sandbox.run_many([(extract_code(program), "assert square_perimeter(1) == 4\n")])
    assert reward([program], **_columns([17])) == [0.0]
    assert not results[0].passed and len(results[0].stdout_tail) <= 4096
    assert time.monotonic() - start < 2 * TIMEOUT_S + 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 100 * 1024  # KiB
    _assert_caller_healthy(reward)


def test_network_is_unreachable_in_namespaces():
    if "namespaces" not in MODES:
        pytest.skip("namespaces unavailable here: the rlimits fallback does not block the network")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        fn = make_code_reward(SandboxConfig(timeout_s=TIMEOUT_S, workers=1, isolation="namespaces"))
        program = (
            "import socket\nreached = True\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "except OSError:\n    reached = False\n"
            "def was_reached():\n    return reached\n"
        )
        assert fn([program], tests=["assert was_reached() is False"]) == [1.0]
    finally:
        server.close()


def test_sigkill_of_caller_group_is_impossible_from_sandbox(reward):
    # The sandbox runs in its own session: killing its process group cannot reach the caller's group.
    program = _fenced("import os, signal\nos.killpg(0, signal.SIGKILL)")
    assert reward([program], **_columns([17])) == [0.0]
    _assert_caller_healthy(reward)
