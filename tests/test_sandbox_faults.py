"""Faults that must not crash scoring or leak between runs, and sandboxes of several processes on one machine.

Everything runs for real: sandboxed subprocesses, a second and third trainer process, a non-root user via setpriv.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from trl_rapid.rewards.code import make_code_reward
from trl_rapid.rewards.sandbox import (
    Sandbox,
    SandboxConfig,
    find_sandbox_processes,
    run_prefix,
    remove_tree,
    wait_for_cleanup,
)
from trl_rapid.rewards.sandbox.processes import UidLease

from helpers.timing import scaled
from sandbox_modes import IS_ROOT, MODES, REPO, lasting, needs_rlimits, reachable_by_others

# Scaled to the machine's load: a correct program must finish in time on a loaded machine too; the hostile programs
# check that the sandbox stops them at this timeout, whatever its value.
TIMEOUT_S = scaled(3.0)
GOOD = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(2, 3) == 5\n"




@pytest.fixture(scope="module", params=MODES)
def sandbox(request):
    box = Sandbox(SandboxConfig(timeout_s=TIMEOUT_S, memory_mb=1024, workers=1, isolation=request.param))
    yield box
    box.close()


def _run_dirs() -> set[str]:
    wait_for_cleanup()  # run directories are deleted on a background thread
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith(run_prefix())}


# ---------------------------------------------------------------------------------------------------------------------
# Cleanup: non-recursive, complete, never raises
# ---------------------------------------------------------------------------------------------------------------------

def _nasty_tree(depth: int) -> str:
    return NASTY_TREE.replace("range(5000)", f"range({depth})")


NASTY_TREE = textwrap.dedent('''
    import os
    top = os.getcwd()
    os.mkfifo("fifo")
    os.symlink("/", "root_link")
    os.symlink("loop", "loop")
    for name in ("new\\nline", "tab\\tand space", " ", "-rf", "*", "\\udcff\\udcfe undecodable"):
        open(name, "w").write("x")
    os.mkdir("locked")
    open("locked/inner", "w").write("x")
    os.chmod("locked/inner", 0)
    os.chmod("locked", 0)
    os.mkdir("sticky")
    os.chmod("sticky", 0o1777)
    for _ in range(5000):  # 5,000 levels: shutil.rmtree hits RecursionError, the path passes PATH_MAX
        os.mkdir("d")
        os.chdir("d")
    open("bottom", "w").write("x")
    os.chdir(top)
''')


def test_remove_tree_handles_depth_permissions_odd_names_and_links(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("precious")
    tree = tmp_path / "tree"
    tree.mkdir()
    # 1,500 levels are past the recursion limit already; the 5,000 levels run once, in the sandbox test below.
    code = _nasty_tree(1500) + f"os.symlink({str(victim)!r}, 'victim_link')\n"
    subprocess.run([sys.executable, "-c", code], cwd=tree, check=True)
    with pytest.raises(RecursionError):  # the fault: what the old cleanup did
        shutil.rmtree(tree / "d")
    assert remove_tree(tree) is True
    assert not tree.exists()
    assert (victim / "keep").read_text() == "precious"  # links were removed, not followed
    assert remove_tree(tmp_path / "missing") is True


def test_a_nasty_scratch_dir_is_removed_and_the_run_still_scores(sandbox):
    before = _run_dirs()
    # The program is correct, and leaves 5,000 nested directories (in one isolation mode: deleting them is disk-bound,
    # ~8 s here), mode-000 dirs, odd names, links and a fifo behind.
    depth = 5000 if sandbox.isolation == MODES[-1] else 50
    result = sandbox.run(_nasty_tree(depth) + GOOD, TESTS)
    assert result.passed, result
    assert not lasting(lambda: _run_dirs() - before), "the run directory was left behind"


def test_a_process_still_writing_is_stopped_before_cleanup(sandbox):
    before = _run_dirs()
    daemon = textwrap.dedent('''
        import os
        if os.fork() == 0:
            try:
                os.setsid()
            except OSError:  # refused by the candidate's seccomp filter now; the daemon keeps going without it
                pass
            if os.fork() == 0:
                i = 0
                while True:
                    try:
                        open(f"f{i % 1000}", "w").write("x" * 100)
                        os.makedirs(f"d/{i % 50}", exist_ok=True)
                    except OSError:
                        pass
                    i += 1
            os._exit(0)
    ''')
    result = sandbox.run(daemon + GOOD, TESTS)
    assert result.passed, result
    assert not lasting(lambda: _run_dirs() - before)
    assert not lasting(lambda: find_sandbox_processes(run_prefix()))
    # ... and the next program on the same slot (same uid) is unaffected.
    assert sandbox.run(GOOD, TESTS).passed


def test_immutable_flag_is_refused_inside_the_sandbox(sandbox):
    # chattr +i would make the cleanup fail; it needs CAP_LINUX_IMMUTABLE, which no sandboxed process has.
    program = textwrap.dedent('''
        import fcntl, os, struct
        open("pinned", "w").write("x")
        fd = os.open("pinned", os.O_RDONLY)
        try:
            fcntl.ioctl(fd, 0x40086602, struct.pack("l", 0x10))  # FS_IOC_SETFLAGS, FS_IMMUTABLE_FL
            outcome = "immutable"
        except OSError as exc:
            outcome = "refused"
        def result():
            return outcome
    ''')
    before = _run_dirs()
    assert sandbox.run(program, "assert result() == 'refused'\n").passed
    assert not lasting(lambda: _run_dirs() - before)


# ---------------------------------------------------------------------------------------------------------------------
# No completion can crash scoring
# ---------------------------------------------------------------------------------------------------------------------


def test_a_failure_while_scoring_one_completion_scores_it_zero(tmp_path, caplog):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    fn = make_code_reward(SandboxConfig(timeout_s=TIMEOUT_S, workers=2, scratch_root=str(scratch)))
    logged = {}
    log = lambda key, values: logged.__setitem__(key, values)  # noqa: E731
    good = f"```python\n{GOOD}```"
    # A malformed row (test_list is a number) and a completion that is not text, next to normal rows.
    rewards = fn([good, good, 12345, good], test_list=[["assert add(2, 3) == 5"], 7, ["assert add(1, 1) == 2"], []],
                 tests=[None, None, None, None], log_extra=log)
    assert rewards == [1.0, 0.0, 0.0, None]
    assert logged["code_status"] == ["passed", "error", "error", "no_tests"]
    # The sandbox itself fails (its scratch root vanished, "rlimits"; its nsjail binary vanished, "namespaces"):
    # every completion scores 0 with status "error".
    wait_for_cleanup()
    scratch.rmdir()
    if fn.sandbox.isolation == "namespaces":
        gone = tmp_path / "nsjail"
        nsjail, fn.sandbox._nsjail = fn.sandbox._nsjail, str(gone)  # a path where nsjail is gone (until below)
    with caplog.at_level("WARNING"):
        rewards = fn([good, good], tests=[TESTS, TESTS], log_extra=log)
    assert rewards == [0.0, 0.0] and logged["code_status"] == ["error", "error"]
    assert "sandbox" in caplog.text
    scratch.mkdir()
    if fn.sandbox.isolation == "namespaces":
        gone.symlink_to(nsjail)
    assert fn([good], tests=[TESTS]) == [1.0]  # and it recovers


# ---------------------------------------------------------------------------------------------------------------------
# Several trainers on one machine
# ---------------------------------------------------------------------------------------------------------------------

TRAINER = textwrap.dedent('''
    import json, sys, time
    from trl_rapid.rewards.sandbox import Sandbox, SandboxConfig
    box = Sandbox(SandboxConfig(timeout_s=10, workers=2, isolation=sys.argv[1]))
    program = "import time\\ntime.sleep(0.3)\\ndef add(a, b):\\n    return a + b\\n"
    results = box.run_many([(program, "assert add(2, 3) == 5\\n")] * 8)
    print(json.dumps({"uids": box.uids, "statuses": [r.status for r in results]}))
''')


@pytest.mark.parametrize("isolation", MODES)
def test_concurrent_trainers_never_touch_each_others_programs(isolation):
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def start():
        return subprocess.Popen([sys.executable, "-c", TRAINER, isolation], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    first = start()
    time.sleep(0.8)  # the first is scoring when the others construct, probe and sweep
    others = [start(), start()]  # these two start together
    outputs = []
    for proc in [first, *others]:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    for out in outputs:
        assert out["statuses"] == ["passed"] * 8, out
    if IS_ROOT:
        uid_sets = [set(out["uids"]) for out in outputs]
        assert all(len(u) == 4 for u in uid_sets)
        assert not (uid_sets[0] & uid_sets[1] or uid_sets[0] & uid_sets[2] or uid_sets[1] & uid_sets[2])


@pytest.mark.skipif(not IS_ROOT, reason="uids are leased only by a root trainer")
def test_uid_leases_are_exclusive_skip_real_accounts_and_are_freed():
    nobody = 65534  # a real account on this machine? then it must be skipped
    try:
        import pwd

        pwd.getpwuid(nobody)
        has_nobody = True
    except KeyError:
        has_nobody = False
    base = 65530
    first = UidLease(base, 4, span=8)
    second = UidLease(base, 2, span=8)
    assert not set(first.uids) & set(second.uids)
    assert (nobody in first.uids + second.uids) is not has_nobody
    with pytest.raises(RuntimeError, match="sandbox_uid_count"):
        UidLease(base, 4, span=8)  # the range is exhausted: a clear error, not a shared uid
    first.release()
    third = UidLease(base, 4, span=8)
    assert set(third.uids) <= set(range(base, base + 8)) - set(second.uids)
    second.release()
    third.release()


# ---------------------------------------------------------------------------------------------------------------------
# "rlimits" as root: what the sandbox uid leaves in world-writable places is removed
# ---------------------------------------------------------------------------------------------------------------------


@needs_rlimits
def test_rlimits_as_root_cleans_world_writable_dirs_and_ipc():
    box = Sandbox(SandboxConfig(timeout_s=TIMEOUT_S, workers=1, isolation="rlimits"))
    tag = f"trl-rapid-leftover-{os.getpid()}"
    program = textwrap.dedent(f'''
        import os, ctypes
        for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
            try:
                os.makedirs(os.path.join(d, "{tag}", "sub"), exist_ok=True)
                open(os.path.join(d, "{tag}.file"), "w").write("x")
            except OSError:
                pass
        libc = ctypes.CDLL(None, use_errno=True)
        shm_id = libc.shmget(0, 4096, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT: outlives the process
        def ids():
            return shm_id
    ''')
    try:
        result = box.run(program + GOOD, "assert ids() >= 0\n" + TESTS)
        assert result.passed, result
        left = [p for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock") for p in Path(d).glob(f"{tag}*")]
        assert left == []
        with open("/proc/sysvipc/shm") as fh:
            owners = {int(line.split()[7]) for line in list(fh)[1:]}
        assert not owners & set(box.uids)
    finally:
        box.close()


# ---------------------------------------------------------------------------------------------------------------------
# Unsafe isolation needs consent (run as a non-root user)
# ---------------------------------------------------------------------------------------------------------------------

AS_NOBODY = textwrap.dedent('''
    import json, sys
    from trl_rapid.rewards.sandbox import Sandbox, SandboxConfig, SandboxUnavailableError
    PY = "/usr/bin/python3"  # the virtualenv's interpreter lives under /root, which this user cannot enter
    report = {}
    try:
        SandboxConfig(isolation="rlimits", python=PY)
        report["rlimits"] = "accepted"
    except ValueError as exc:
        report["rlimits"] = str(exc)
    try:
        report["auto"] = Sandbox(SandboxConfig(timeout_s=5, workers=1, python=PY)).isolation
    except SandboxUnavailableError as exc:
        report["auto"] = "refused: " + str(exc)
    box = Sandbox(SandboxConfig(timeout_s=5, workers=1, isolation="rlimits", allow_unsafe_rlimits=True, python=PY))
    report["unsafe"] = box.isolation
    report["good"] = box.run("def add(a, b):\\n    return a + b\\n", "assert add(2, 3) == 5\\n").status
    report["wrong"] = box.run("def add(a, b):\\n    return a - b\\n", "assert add(2, 3) == 5\\n").status
    probe = box.run(open(sys.argv[1]).read(), "assert add(2, 3) == 5\\n")
    report["probe"] = [probe.status, probe.stdout_tail]
    print(json.dumps(report))
''')


def test_rlimits_as_non_root_needs_explicit_consent(tmp_path):
    setpriv = shutil.which("setpriv")
    if setpriv is None or not IS_ROOT or not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs root and setpriv to run a subprocess as the unprivileged user 'nobody'")
    if not reachable_by_others(REPO):
        pytest.skip(f"the user 'nobody' cannot reach this checkout ({REPO}) to import trl_rapid")
    from test_sandbox_forging import PROBE_VERDICT

    home = Path(tempfile.mkdtemp(prefix="trl-rapid-nobody-"))  # pytest's tmp_path is not reachable for 'nobody'
    try:
        home.chmod(0o777)
        probe = home / "probe.py"  # a file: on the trainer's command line the probe would find (and stop) the trainer
        probe.write_text(PROBE_VERDICT + "def add(a, b):\n    return 0\n")
        probe.chmod(0o644)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(home), "TMPDIR": "/tmp"}
        out = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                              AS_NOBODY, str(probe)], capture_output=True, text=True, env=env, cwd=home, timeout=120)
    finally:
        remove_tree(home)
    if out.returncode != 0 and "Permission denied" in out.stderr:
        pytest.skip(f"the user 'nobody' cannot run this interpreter: {out.stderr[-300:]}")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    refusal = report["rlimits"]
    for exposed in ("/proc/<pid>/environ", "HF_TOKEN", "HOME", "daemons", "kill the trainer", "allow_unsafe_rlimits",
                    "--code_allow_unsafe_rlimits", "every world-readable file stays readable", "reference solutions"):
        assert exposed in refusal, (exposed, refusal)
    assert report["auto"] == "namespaces" or report["auto"].startswith("refused: "), report["auto"]
    assert "allow_unsafe_rlimits" in report["auto"] or report["auto"] == "namespaces"
    assert report["unsafe"] == "rlimits" and report["good"] == "passed" and report["wrong"] == "failed"
    status, stdout = report["probe"]
    assert status != "passed"
    line = next(line for line in stdout.splitlines() if line.startswith("VERDICT-ACCESS"))
    access = eval(line.split(" ", 1)[1], {})  # our own probe's dict literal
    # Same uid, but the verdict process is non-dumpable and read its tests before the candidate started.
    assert access["seen"] >= 1 and access["environ"] == access["fds"] == access["mem"] == access["ptraced"] == 0, access
