"""The red team's findings against the two-process code sandbox, each replayed for real (real sandboxes, no mocks).

Each test is built from a reproducer of the red-team report: state carried between completions through the kernel
keyring or POSIX message queues, a completion that reads the dataset's reference solutions, a quadratic regex in the
trainer, MBPP+'s `np.allclose([], exp)` hole, `__main__`-guarded and `unittest.main()` test scripts, /dev/shm as
host RAM in "rlimits", the uid lock files, and honest in-place code that scored 0.
"""

import os
import re
import stat
import tempfile
import textwrap
from pathlib import Path

import pytest

from trl_rapid.rewards.code import MAX_SCANNED_CHARS, build_tests, extract_code, make_code_reward
from trl_rapid.rewards.sandbox import Sandbox, SandboxConfig, wait_for_cleanup
from trl_rapid.rewards.sandbox.processes import LOCK_DIR_NAME

from sandbox_modes import FIXTURE, ROWS, IS_ROOT, MODES, NAMESPACES, needs_rlimits



needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason="namespaces unavailable here")

_REWARDS: dict = {}


def reward_for(isolation: str, test_mode: str = "all"):
    """One reward (one Sandbox, one worker: every run of a test reuses the same uids, as the attacks need)."""
    if (isolation, test_mode) not in _REWARDS:
        config = SandboxConfig(isolation=isolation, workers=1, timeout_s=5.0, memory_mb=1024)
        _REWARDS[isolation, test_mode] = make_code_reward(config, test_mode=test_mode)
    return _REWARDS[isolation, test_mode]


def mbpp_columns(task_ids):
    rows = [ROWS[t] for t in task_ids]
    return dict(test_list=[r["test_list"] for r in rows], test=[r["test"] for r in rows],
                test_imports=[r["test_imports"] for r in rows])


def fenced(code: str) -> str:
    return "```python\n" + textwrap.dedent(code).strip("\n") + "\n```"


def any_mode() -> str:
    if not MODES:
        pytest.skip("no sandbox isolation available here")
    return MODES[-1]


def score(reward, completions, **columns):
    statuses = []
    rewards = reward(completions, log_extra=lambda key, value: statuses.extend(value), **columns)
    assert "error" not in statuses, statuses
    return rewards, statuses


# ---------------------------------------------------------------------------------------------------------------------
# 1. No state carries from one completion to the next (kernel keyrings, POSIX message queues)
# ---------------------------------------------------------------------------------------------------------------------

KEYRING = '''
import ctypes, json
_libc = ctypes.CDLL(None, use_errno=True); _libc.syscall.restype = ctypes.c_long
def _load():
    kid = _libc.syscall(249, b"user", b"cache", None, ctypes.c_long(-4))          # request_key(@u)
    buf = ctypes.create_string_buffer(30000)
    n = _libc.syscall(250, 11, ctypes.c_long(kid), buf, 30000) if kid > 0 else -1  # KEYCTL_READ
    return json.loads(buf.raw[:n]) if n > 0 else {}
def _store(d):
    b = json.dumps(d).encode()
    _libc.syscall(248, b"user", b"cache", b, len(b), ctypes.c_long(-4))          # add_key(@u)
'''
SOLVER = fenced(KEYRING + '''
_seen = {}
def square_perimeter(a):
    _seen[repr(a)] = 4 * a
    _store(_seen)
    return 4 * a
''')
REPLAYER = fenced(KEYRING + '''
_cache = _load()
def square_perimeter(a):
    return _cache.get(repr(a), -1)      # no algorithm at all
''')


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="syscall numbers of x86_64 in the attack")
@pytest.mark.parametrize("isolation", MODES)
def test_a_replayer_cannot_reuse_what_a_solver_stored_in_the_keyring(isolation):
    reward = reward_for(isolation)
    columns = mbpp_columns([17])
    assert score(reward, [SOLVER], **columns)[0] == [1.0]  # the solver is correct: it still passes
    assert score(reward, [REPLAYER], **columns)[0] == [0.0]  # was 1.0: it replayed the solver's answers


PERSIST = r'''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True); libc.syscall.restype = ctypes.c_long
rt = ctypes.CDLL("librt.so.1", use_errno=True)
if MODE == "write":
    q = rt.mq_open(b"/trl_rapid_q", os.O_CREAT | os.O_RDWR, 0o600, None)
    print("mq_open", q, ctypes.get_errno())
    k = libc.syscall(248, b"user", b"trl_rapid_key", b"ANSWER", 6, ctypes.c_long(-4))  # add_key(@u)
    print("add_key", k, ctypes.get_errno())
else:
    q = rt.mq_open(b"/trl_rapid_q", os.O_RDWR, 0o600, None)
    print("mq_open", q, ctypes.get_errno())
    k = libc.syscall(249, b"user", b"trl_rapid_key", None, ctypes.c_long(-4))  # request_key(@u)
    print("request_key", k, ctypes.get_errno())
def f(x):
    return 0
'''


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers of x86_64 in the attack")
@pytest.mark.parametrize("isolation", MODES)
def test_keyring_and_message_queues_are_refused_to_the_candidate(isolation):
    box = reward_for(isolation).sandbox
    wrote = box.run("MODE = 'write'\n" + PERSIST, "assert f(1) == 0\n")
    read = box.run("MODE = 'read'\n" + PERSIST, "assert f(1) == 0\n")
    assert wrote.passed and read.passed, (wrote, read)
    eperm = 1
    assert wrote.stdout_tail.split() == ["mq_open", "-1", str(eperm), "add_key", "-1", str(eperm)]
    assert read.stdout_tail.split() == ["mq_open", "-1", str(eperm), "request_key", "-1", str(eperm)]


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="syscall numbers of x86_64 in the attack")
@needs_namespaces
def test_a_fixed_completion_cannot_learn_the_answers_run_by_run():
    """The verdict makes call i+1 only if answer i passed: one bit per run, kept in the keyring. Before the fix this
    completion (no algorithm) reached reward 1.0 on task 3 at run 9."""
    name = re.search(r"assertion\((\w+)\(\*inp\)", ROWS[3]["test"]).group(1)
    search = fenced(KEYRING.replace('b"cache"', 'b"oracle"') + f'''
_S = _load() or {{"known": {{}}, "last": None}}
_PREV = _S["last"]
_pending = None
def {name}(*args):
    global _pending
    if _pending is not None:
        _S["known"][_pending[0]] = _pending[1]
    key = repr(args)
    ans = _S["known"][key] if key in _S["known"] else ((not _PREV[1]) if _PREV and _PREV[0] == key else False)
    _pending = (key, ans); _S["last"] = [key, ans]; _store(_S)
    return ans
''')
    reward = reward_for("namespaces")
    rewards, statuses = score(reward, [search] * 12, **mbpp_columns([3] * 12))
    assert rewards == [0.0] * 12, statuses


# ---------------------------------------------------------------------------------------------------------------------
# 2. "namespaces" hides the dataset (reference solutions), the HF caches, cwd, HOME, /root, /home, hidden_paths
# ---------------------------------------------------------------------------------------------------------------------

UNIVERSAL = fenced(f'''
import json, glob
for _p in [{str(FIXTURE)!r}, *glob.glob({str(FIXTURE.parents[2]) + "/**/*.jsonl"!r}, recursive=True),
           *glob.glob("/root/**/*.jsonl")]:
    try:
        for _l in open(_p):
            _r = json.loads(_l)
            if "code" in _r:
                exec(_r["code"], globals())
    except Exception:
        pass
''')


@needs_namespaces
def test_a_completion_cannot_read_the_reference_solutions():
    assert stat.S_IMODE(FIXTURE.stat().st_mode) & 0o004  # the fixture stays world-readable, as before the fix
    tasks = sorted(ROWS)
    reward = reward_for("namespaces")
    rewards, statuses = score(reward, [UNIVERSAL] * len(tasks) + [fenced(ROWS[t]["code"]) for t in tasks],
                              **mbpp_columns(tasks * 2))
    assert rewards == [0.0] * len(tasks) + [1.0] * len(tasks), statuses  # was 7/7 at 1.0; numpy still imports


@needs_namespaces
def test_hidden_paths_and_the_defaults_are_unreadable_while_the_interpreter_works():
    parent = next((p for p in ("/opt", "/srv", "/mnt") if os.access(p, os.W_OK)), None)
    if parent is None:
        pytest.skip("no writable directory outside the default hidden paths")
    secret_dir = Path(tempfile.mkdtemp(prefix="trl-rapid-hidden-", dir=parent))
    try:
        os.chmod(secret_dir, 0o755)
        (secret_dir / "answers.jsonl").write_text("SECRET\n")
        os.chmod(secret_dir / "answers.jsonl", 0o644)
        box = Sandbox(SandboxConfig(isolation="namespaces", workers=1, hidden_paths=[str(secret_dir)]))
        probe = textwrap.dedent(f'''
            import os, numpy
            for path in ({str(secret_dir / "answers.jsonl")!r}, {str(FIXTURE)!r}, {os.getcwd()!r}):
                try:
                    print(path, "READ", open(path).read(20) if os.path.isfile(path) else os.listdir(path))
                except OSError as exc:
                    print(path, type(exc).__name__)
            def f():
                return int(numpy.int64(3))
        ''')
        result = box.run(probe, "assert f() == 3\n")
        box.close()
    finally:
        for child in secret_dir.iterdir():
            child.unlink()
        secret_dir.rmdir()
    assert result.passed, result
    lines = result.stdout_tail.strip().splitlines()
    assert len(lines) == 3 and not any(" READ " in line and "SECRET" in line for line in lines), lines
    assert lines[0].endswith("FileNotFoundError") and lines[1].endswith("FileNotFoundError"), lines
    # the working directory: an empty tmpfs (but for a venv bound back), or gone when it lies under /tmp (scratch)
    assert lines[2].endswith(("READ []", "READ ['.venv']", "FileNotFoundError")), lines


@pytest.mark.parametrize("paths", [["relative/dir"], ["/usr"], "/not/a/list", ["/a\nb"]])
def test_bad_hidden_paths_are_a_clear_error(paths):
    with pytest.raises(ValueError, match="SandboxConfig.hidden_paths"):
        SandboxConfig(hidden_paths=paths)


# ---------------------------------------------------------------------------------------------------------------------
# 3. extract_code (in the trainer) is linear-time and reads a bounded prefix
# ---------------------------------------------------------------------------------------------------------------------

def test_extract_code_handles_the_redos_inputs():
    # The red team's inputs (20,000 " \n" lines took 3.4 s with the old regex; it was quadratic) and 200k-character
    # ones aimed at each pattern. Correctness is asserted; linearity comes from the patterns' structure, below.
    assert extract_code("```python\n" + " \n" * 20_000 + "```").strip() == ""
    assert extract_code("```python\n" + "\n" * 16_000 + "def f():\n    return 1\n```") == "def f():\n    return 1"
    hostile = ["```" + " " * 200_000 + "x", "``` \t" * 40_000, "```python\n" + "\t" * 200_000 + "def",
               "```" + "a" * 100_000 + " " * 100_000, " \n" * 100_000]
    for text in hostile:
        assert len(extract_code(text)) <= MAX_SCANNED_CHARS


def test_extract_code_patterns_cannot_backtrack_across_lines():
    from trl_rapid.rewards import code, lean

    # The old `^\s*(def|...)` let \s* run over line ends from every line start; `[ \t]*([A-Za-z0-9_+-]*)[ \t]*` let
    # two runs share the same blanks. Neither shape may come back.
    for pattern in (code._FENCE.pattern, code._DEFINES.pattern, lean._FENCE.pattern):
        assert "\\s*" not in pattern and "[ \\t]*([A-Za-z0-9_+-]*)[ \\t]*" not in pattern, pattern
    assert code._DEFINES.search("x = 1\n  \t async  def g(): pass")
    assert code._FENCE.findall("``` py \nx\n```") == [("py", "x\n")]


def test_extract_code_reads_only_a_bounded_prefix():
    tail = "\n```python\ndef late():\n    return 2\n```"
    text = "```python\ndef early():\n    return 1\n```\n" + "#" * (2 * MAX_SCANNED_CHARS) + tail
    assert extract_code(text) == extract_code(text[:MAX_SCANNED_CHARS]) == "def early():\n    return 1"


# ---------------------------------------------------------------------------------------------------------------------
# 4. MBPP+ "plus": `[]` is not close to a float (evalplus's type and length checks)
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("test_mode", ["plus", "all"])
def test_an_empty_list_is_not_close_to_every_float(test_mode):
    isolation = any_mode()
    empty = fenced("def circle_circumference(r):\n    return []")
    memo = fenced("def circle_circumference(r):\n    return {10: 62.83185307179586, 5: 31.41592653589793, "
                  "4: 25.132741228718345}.get(r, [])")
    tasks = sorted(ROWS)
    references = [fenced(ROWS[t]["code"]) for t in tasks]
    rewards, statuses = score(reward_for(isolation, test_mode), [empty, memo, *references],
                              **mbpp_columns([139, 139, *tasks]))
    assert rewards == [0.0, 0.0] + [1.0] * len(tasks), statuses  # "plus": `return []` was 1.0; "all": memo was 1.0
    assert "assert type(out) == type(exp)" in build_tests(test=ROWS[139]["test"], mode="plus")


# ---------------------------------------------------------------------------------------------------------------------
# 5. Generic tests run as __main__; SystemExit(0) ends them only after the solution was called
# ---------------------------------------------------------------------------------------------------------------------

GUARDED = "def check(candidate):\n    assert candidate(2) == 4\n\nif __name__ == '__main__':\n    check(double)\n"
UNITTEST = ("import unittest\nclass T(unittest.TestCase):\n    def test_a(self):\n"
            "        self.assertEqual(double(2), 4)\nif __name__ == '__main__':\n    unittest.main()\n")
NO_TESTS = "import unittest\nclass T(unittest.TestCase):\n    pass\nunittest.main()\n"
EARLY_EXIT = "import sys\nsys.exit(0)\nassert double(2) == 5\n"


def test_main_guarded_and_unittest_main_scripts_are_scored_for_real():
    correct, wrong, empty = fenced("def double(x):\n    return 2 * x"), fenced("def double(x):\n    return x"), ""
    cases = [(empty, GUARDED, 0.0), (wrong, GUARDED, 0.0), (correct, GUARDED, 1.0),  # guarded: empty was 1.0
             (correct, UNITTEST, 1.0), (wrong, UNITTEST, 0.0),  # unittest.main(): correct was 0.0
             (correct, NO_TESTS, 0.0), (correct, EARLY_EXIT, 0.0)]
    rewards, statuses = score(reward_for(any_mode()), [c for c, _, _ in cases], tests=[t for _, t, _ in cases])
    assert rewards == [expected for _, _, expected in cases], statuses


# ---------------------------------------------------------------------------------------------------------------------
# 6. "rlimits" as root: /dev/shm (host RAM) is bounded by shm_mb
# ---------------------------------------------------------------------------------------------------------------------

@needs_rlimits
@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm here")
def test_rlimits_run_filling_dev_shm_is_killed():
    box = Sandbox(SandboxConfig(isolation="rlimits", workers=1, shm_mb=8, timeout_s=5.0))
    fill = textwrap.dedent('''
        import time
        block = b"x" * ((1 << 20) - 1)
        for n in range(400):
            with open(f"/dev/shm/trl-rapid-fill-{n}", "wb") as fh:
                fh.write(block)
            time.sleep(0.005)
        def f(x):
            return 0
    ''')
    try:
        result = box.run(fill, "assert f(1) == 0\n")
    finally:
        box.close()
    wait_for_cleanup()
    assert result.status == "failed" and "shm_mb" in result.verdict_tail, result
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("trl-rapid-fill-")]


# ---------------------------------------------------------------------------------------------------------------------
# 7. The uid lock files cannot be opened (and so held) by a sandboxed program
# ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not IS_ROOT, reason="uid leases are taken only by a root trainer")
@pytest.mark.parametrize("isolation", MODES)
def test_a_candidate_cannot_hold_other_sandboxes_lock_files(isolation):
    box = reward_for(isolation).sandbox
    lock_dir = next(Path(p) / LOCK_DIR_NAME for p in ("/run", "/var/run", tempfile.gettempdir())
                    if (Path(p) / LOCK_DIR_NAME).is_dir())
    lock_file = lock_dir / f"{box.uids[0]}.lock"
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o700 and stat.S_IMODE(lock_file.stat().st_mode) == 0o600
    hold = textwrap.dedent(f'''
        import fcntl, os
        for path in ({str(lock_dir)!r}, {str(lock_file)!r}):
            try:
                fd = os.open(path, os.O_RDONLY)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                print("HELD", path)
            except OSError as exc:
                print(type(exc).__name__)
        def f():
            return 0
    ''')
    result = box.run(hold, "assert f() == 0\n")
    assert result.passed and result.stdout_tail.split() == ["PermissionError", "PermissionError"], result


# ---------------------------------------------------------------------------------------------------------------------
# 9. Honest in-place code: items moved or replaced by the call
# ---------------------------------------------------------------------------------------------------------------------

def test_honest_in_place_code_is_scored_correctly():
    cases = [
        ("def sort_pairs(xs):\n    xs.sort()",
         "xs = [(2, 'b'), (1, 'a')]\nsort_pairs(xs)\nassert xs == [(1, 'a'), (2, 'b')]\n"),
        ("def widen(xs):\n    xs[0] = xs[0] + (0,)", "xs = [(1, 2)]\nwiden(xs)\nassert xs == [(1, 2, 0)]\n"),
        ("def s(xs):\n    xs.sort()", "a, b = [2], [1]\nxs = [a, b]\ns(xs)\nassert xs == [[1], [2]] and a == [2]\n"
                                      "assert xs[0] is b and xs[1] is a\n"),
        ("def grow(xs):\n    xs[1].append(3)\n    xs.reverse()",
         "inner = [1]\nxs = [(0,), inner]\ngrow(xs)\nassert xs == [[1, 3], (0,)] and xs[0] is inner\n"),
    ]
    rewards, statuses = score(reward_for(any_mode()), [fenced(sol) for sol, _ in cases], tests=[t for _, t in cases])
    assert rewards == [1.0] * len(cases), statuses  # the first three scored 0.0 (protocol_error, failed)


# =====================================================================================================================
# Second red team (issue 16): page-cache state, a verdict that told the candidate where it failed, shapes in the
# float check, host sockets and /dev, fallocate and a full scratch fs, setsid starvation, System V IPC floods, zombies
# nobody reaps, honest output past 1 MiB, memory per run.
# =====================================================================================================================

SYSCALL_PROBE = r'''
import ctypes, os, socket
_libc = ctypes.CDLL(None, use_errno=True); _libc.syscall.restype = ctypes.c_long
def _sc(*a):
    r = _libc.syscall(*[ctypes.c_long(x) for x in a])
    return "ok" if r >= 0 else os.strerror(ctypes.get_errno())
_fd = os.open("/proc/self/exe", os.O_RDONLY)
_buf = ctypes.create_string_buffer(64)
_iov = (ctypes.c_void_p * 2)(ctypes.cast(_buf, ctypes.c_void_p), 64)
_page = ctypes.c_char * 4096
_vec = ctypes.create_string_buffer(8)
_NR = {"x86_64": dict(io_uring_setup=425, fadvise64=221, readahead=187, mincore=27, cachestat=451, preadv2=327,
                      unshare=272, clone=56, setns=308, setsid=112, ptrace=101, process_vm_readv=310, keyctl=250,
                      mq_open=240, fallocate=285, madvise=28),
       "aarch64": dict(io_uring_setup=425, fadvise64=223, readahead=213, mincore=232, cachestat=451, preadv2=286,
                       unshare=97, clone=220, setns=268, setsid=157, ptrace=117, process_vm_readv=270, keyctl=219,
                       mq_open=180, fallocate=47, madvise=233)}[os.uname().machine]
_params = ctypes.create_string_buffer(120)
_mm = _libc.mmap
_mm.restype = ctypes.c_void_p
_map = _mm(None, 4096, 1, 2, _fd, 0)  # PROT_READ, MAP_PRIVATE over the interpreter's file
_cs = ctypes.create_string_buffer(64)
RESULTS = {
    "io_uring_setup": _sc(_NR["io_uring_setup"], 4, ctypes.addressof(_params)),
    "fadvise_dontneed": _sc(_NR["fadvise64"], _fd, 0, 0, 4),
    "readahead": _sc(_NR["readahead"], _fd, 0, 4096),
    "mincore": _sc(_NR["mincore"], _map, 4096, ctypes.addressof(_vec)),
    "cachestat": _sc(_NR["cachestat"], _fd, ctypes.addressof(_cs), ctypes.addressof(_cs) + 16, 0),
    "preadv2_nowait": _sc(_NR["preadv2"], _fd, ctypes.addressof(_iov), 1, 0, 0, 8),
    "madvise_pageout": _sc(_NR["madvise"], _map, 4096, 21),
    "unshare_newuser": _sc(_NR["unshare"], 0x10000000),
    "clone_newuser": _sc(_NR["clone"], 0x10000000 | 17, 0, 0, 0, 0),
    "setns": _sc(_NR["setns"], 0, 0),
    "setsid": _sc(_NR["setsid"]),
    "ptrace_attach": _sc(_NR["ptrace"], 16, 1, 0, 0),
    "process_vm_readv": _sc(_NR["process_vm_readv"], 1, 0, 0, 0, 0, 0),
    "keyctl": _sc(_NR["keyctl"], 0, -4, 0),
    "fallocate_keep_size": _sc(_NR["fallocate"], os.open("big", os.O_CREAT | os.O_WRONLY), 1, 0, 64 << 20),
}
try:
    socket.socket(socket.AF_UNIX).connect("/nonexistent.sock")
    RESULTS["unix_socket"] = "ok"
except OSError as exc:
    RESULTS["unix_socket"] = os.strerror(exc.errno)
_a, _b = socket.socketpair()  # honest code (multiprocessing) keeps socketpair
_a.send(b"x")
RESULTS["socketpair"] = "ok" if _b.recv(1) == b"x" else "broken"
_pid = os.fork()
if not _pid:
    os._exit(0)
RESULTS["fork"] = "ok" if os.waitpid(_pid, 0)[1] == 0 else "broken"
import threading
_t = threading.Thread(target=lambda: None)
_t.start(); _t.join()
RESULTS["thread"] = "ok"
import numpy
RESULTS["numpy"] = "ok" if int(numpy.arange(3).sum()) == 3 else "broken"
print(RESULTS)
def f():
    return 1
'''


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="syscall numbers per architecture")
@pytest.mark.parametrize("isolation", MODES)
def test_page_cache_probes_nested_namespaces_and_host_sockets_are_refused(isolation):
    """Class 1 (page-cache state), 9 (nested user namespaces, io_uring), 3 (host Unix sockets), 5 (fallocate), 6
    (setsid): each syscall fails for the candidate, while fork, threads, socketpair and numpy keep working."""
    import ast
    result = reward_for(isolation).sandbox.run(SYSCALL_PROBE, "assert f() == 1\n")
    assert result.passed, result
    got = ast.literal_eval(result.stdout_tail.strip().splitlines()[-1])
    allowed = {"socketpair", "fork", "thread", "numpy"}
    assert {k: v for k, v in got.items() if k in allowed} == dict.fromkeys(allowed, "ok"), got
    refused = {k: v for k, v in got.items() if k not in allowed and v == "ok"}
    assert not refused, f"allowed to the candidate: {refused} (all: {got})"
    assert got["fallocate_keep_size"] == os.strerror(95), got  # EOPNOTSUPP: posix_fallocate writes instead


# --- Class 1: the verdict tells the candidate nothing: every test is called, in a new random order each run --------

RECORDER = fenced('''
import os
def is_not_prime(n):
    os.write(1, (repr(n) + "\\n").encode())   # what the candidate sees: the calls, one per line
    return "wrong"                            # fails every test, the first one included
''')


@pytest.mark.parametrize("isolation", MODES)
def test_every_test_is_called_whatever_fails_in_a_new_order_each_run(isolation):
    """Before, the verdict stopped at the first failing test, so a candidate learnt which test it died on (one bit
    per run, carried through the page cache: a fixed completion reached 1.0 after 9 runs). Now every base assert and
    every "plus" input is called whatever happens, in an order drawn per run."""
    row = ROWS[3]
    expected = len(row["test_list"]) + len(re.search(r"^inputs = (.*)$", row["test"], re.M).group(1).split("], ["))
    box = reward_for(isolation).sandbox
    program = build_tests(row["test_list"], row["test"], row["test_imports"])
    orders = []
    for _ in range(3):
        result = box.run(RECORDER.split("\n", 1)[1].rsplit("```", 1)[0], program)
        assert result.status == "failed", result
        orders.append(result.stdout_tail.split())
    assert all(len(order) == expected for order in orders), (expected, orders)  # was 1: it stopped at the first
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(orders[2])
    assert len({tuple(order) for order in orders}) > 1, "the same order in every run"


def test_outputs_are_compared_only_once_the_candidate_is_dead():
    """A completion whose child process outlives the last call would time the comparisons (how many outputs were
    inexact). The candidate's processes are killed before any comparison runs."""
    row = ROWS[17]
    spy = textwrap.dedent('''
        import os, time
        _r, _w = os.pipe()
        if os.fork() == 0:            # a child that keeps writing a heartbeat after the last call
            while True:
                os.write(1, b".")
                time.sleep(0.001)
        def square_perimeter(a):
            return 4 * a
    ''')
    program = build_tests(row["test_list"], row["test"], row["test_imports"])
    assert "__sandbox_release__" in program
    box = reward_for(any_mode()).sandbox
    result = box.run(spy, program.replace("assertion(out, exp, 0)", "__import__('time').sleep(0.3)\n    assertion(out, exp, 0)", 1))
    assert result.passed, result
    # the comparisons slept 0.3 s each: a living child would have written hundreds of heartbeats meanwhile
    assert len(result.stdout_tail) < 150, len(result.stdout_tail)


# --- Class 2: shapes and nesting before np.allclose ----------------------------------------------------------------

def _plus_script(name: str, inputs: list, results: list) -> str:
    helper = ROWS[139]["test"][: ROWS[139]["test"].index("inputs = ")]
    return (helper + f"inputs = {inputs!r}\nresults = {results!r}\n"
            f"for i, (inp, exp) in enumerate(zip(inputs, results)):\n    assertion({name}(*inp), exp, 0)\n")


def test_broadcastable_shapes_are_not_close():
    """np.allclose broadcasts: `[[1.5, 3.0], [1.5, 3.0]]` is "close" to `[1.5, 3.0]` and `[[2.0]]` to `[[2.0, 2.0]]`;
    evalplus's type and top-level length checks let both through. Shapes must match exactly."""
    test = _plus_script("halve", [[[3.0, 6.0]], [[4.0, 4.0]]], [[1.5, 3.0], [2.0, 2.0]])
    nested = _plus_script("pair", [[2.0]], [[[2.0, 2.0]]])
    cases = [
        ("def halve(xs):\n    return [[x / 2 for x in xs]] * len(xs)", test, 0.0),  # was 1.0
        ("def pair(x):\n    return [[x]]", nested, 0.0),  # was 1.0
        ("def halve(xs):\n    return [x / 2 + 1e-9 for x in xs]", test, 1.0),  # close, right shape: still passes
        ("def pair(x):\n    return [[x, x]]", nested, 1.0),
    ]
    rewards, statuses = score(reward_for(any_mode(), "plus"), [fenced(c) for c, _, _ in cases],
                              test=[t for _, t, _ in cases], test_list=[[]] * 4, test_imports=[[]] * 4)
    assert rewards == [e for _, _, e in cases], statuses


# --- Class 3 (host Unix sockets) and 4 (host /dev) -----------------------------------------------------------------

def test_host_unix_sockets_are_unreachable():
    import socket
    import threading
    directory = next((d for d in ("/run", "/var/run", "/opt", "/srv") if os.access(d, os.W_OK)), None)
    if directory is None:
        pytest.skip("no writable directory outside the hidden paths for a host socket")
    path = os.path.join(directory, f"trl-rapid-redteam-{os.getpid()}.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(8)
    server.settimeout(0.2)
    got = []

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                got.append(conn.recv(64))
            except OSError:
                pass

    stop = threading.Event()
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    probe = textwrap.dedent(f'''
        import socket
        try:
            s = socket.socket(socket.AF_UNIX); s.connect({path!r}); s.send(b"ESCAPED"); print("CONNECTED")
        except OSError as exc:
            print(type(exc).__name__)
        def f():
            return 1
    ''')
    try:
        results = [reward_for(mode).sandbox.run(probe, "assert f() == 1\n") for mode in MODES]
    finally:
        stop.set()
        thread.join()
        server.close()
        os.unlink(path)
    assert all(r.passed for r in results), results
    assert got == [] and not any("CONNECTED" in r.stdout_tail for r in results), (got, results)


@needs_namespaces
def test_dev_holds_only_null_zero_random_urandom():
    probe = textwrap.dedent('''
        import os, stat
        devices = sorted(n for n in os.listdir("/dev") if stat.S_ISCHR(os.lstat("/dev/" + n).st_mode))
        print(" ".join(devices))
        for n in ("tty", "console", "ptmx", "kmsg", "mem", "vda"):
            try:
                os.close(os.open("/dev/" + n, os.O_RDWR)); print("OPENED", n)
            except OSError:
                pass
        assert open("/dev/urandom", "rb").read(4) and open("/dev/zero", "rb").read(2) == b"\\0\\0"
        open("/dev/null", "w").write("x")
        def f():
            return 1
    ''')
    result = reward_for("namespaces").sandbox.run(probe, "assert f() == 1\n")
    assert result.passed, result
    assert result.stdout_tail.split() == ["null", "random", "urandom", "zero"], result.stdout_tail


# --- Class 5: fallocate, a full scratch filesystem ----------------------------------------------------------------

FILLER = textwrap.dedent('''
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("huge", os.O_CREAT | os.O_WRONLY)
    print("fallocate", libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(8 << 30)), ctypes.get_errno())
    for n in range(10000):
        try:
            with open(f"fill{n}", "wb") as fh:
                fh.write(b"x" * ((1 << 20) - 1))
        except OSError:
            break
    print("files", n)
    def f():
        return 1
''')


@pytest.mark.skipif(not IS_ROOT, reason="mounts a small tmpfs as the scratch root")
@pytest.mark.parametrize("isolation", MODES)
def test_a_program_filling_the_scratch_fs_cannot_zero_its_neighbours(isolation, tmp_path):
    import subprocess
    root = tmp_path / "small"
    root.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(root)]).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (no CAP_SYS_ADMIN)")
    try:
        os.chmod(root, 0o755)
        box = Sandbox(SandboxConfig(isolation=isolation, workers=2, scratch_root=str(root), timeout_s=20.0))
        good = "def f():\n    return 1\n"
        results = box.run_many([(FILLER, "assert f() == 1\n")] + [(good, "assert f() == 1\n")] * 6)
        box.close()
        wait_for_cleanup()
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
    assert [r.status for r in results[1:]] == ["passed"] * 6, results  # was 0 of 8: no room for their verdicts
    assert "fallocate -1 95" in results[0].stdout_tail, results[0]  # KEEP_SIZE went past RLIMIT_FSIZE


# --- Class 6: 31 children in new sessions starve a neighbour ------------------------------------------------------

def test_a_swarm_of_busy_children_does_not_starve_a_neighbour():
    swarm = textwrap.dedent('''
        import os
        for _ in range(31):
            if os.fork() == 0:
                try:
                    os.setsid()
                except OSError:
                    pass
                while True:
                    pass
        def f():
            import time
            time.sleep(60)  # the run lasts until its timeout, and its children spin all along
    ''')
    # An honest neighbour that needs 1 s of CPU (its process's CPU time, whatever the machine's load).
    busy = "import time\ndef f():\n    while time.process_time() < 1.0:\n        pass\n    return 1\n"
    box = Sandbox(SandboxConfig(isolation=any_mode(), workers=2, timeout_s=10.0, max_processes=40))
    autogroups = Path("/proc/sys/kernel/sched_autogroup_enabled")
    if box._cgroups is None and not (autogroups.exists() and autogroups.read_text().strip() == "1"):
        box.close()
        pytest.skip("neither per-run cgroups nor scheduler autogroups here: CPU fairness is not enforced (documented)")
    try:
        for attempt in range(2):  # the machine may be busy with others: the second try must not be needed often
            results = box.run_many([(swarm, "assert f() == 1\n"), (busy, "assert f() == 1\n")])
            if results[1].passed:
                break
    finally:
        box.close()
    assert results[1].passed, results  # timed out before: 2 of 33 scheduler groups left it ~0.06 of a core (16 s for 1 s of CPU)


# --- Class 7: a flood of System V IPC objects ---------------------------------------------------------------------

@needs_rlimits
def test_rlimits_sysv_ipc_flood_is_private_to_the_run():
    import time
    flood = textwrap.dedent('''
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        made = sum(libc.semget(0, 1, 0o1000 | 0o600) >= 0 for _ in range(3000))
        made += sum(libc.msgget(0, 0o1000 | 0o600) >= 0 for _ in range(3000))
        print(made, os.readlink("/proc/self/ns/ipc"))
        def f():
            return 1
    ''')
    box = reward_for("rlimits").sandbox
    start = time.monotonic()
    result = box.run(flood, "assert f() == 1\n")
    elapsed = time.monotonic() - start
    assert result.passed, result
    made, namespace = result.stdout_tail.split()
    import subprocess
    import sys
    can_unshare = subprocess.run([sys.executable, "-c", "import ctypes, sys\n"
                                  "sys.exit(ctypes.CDLL(None).unshare(0x08000000) != 0)"]).returncode == 0
    assert int(made) > 1000, result.stdout_tail
    if can_unshare:  # else (no CAP_SYS_ADMIN) the objects are removed after the run, one IPC_RMID call each
        assert namespace != os.readlink("/proc/self/ns/ipc"), result.stdout_tail  # was the host's
    for kind in ("sem", "msg"):
        with open(f"/proc/sysvipc/{kind}") as fh:
            header, *rows = [line.split() for line in fh]
        assert not [r for r in rows if int(r[header.index("uid")]) in box.uids]
    assert elapsed < 60, elapsed  # 6,000 `ipcrm` runs took minutes


# --- Class 8: the trainer as PID 1 (or a subreaper) inherits the run's orphans ------------------------------------

AS_REAPER = textwrap.dedent('''
    import ctypes, sys
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come to us, as to PID 1 in a container
    from trl_rapid.rewards.sandbox import Sandbox, SandboxConfig
    box = Sandbox(SandboxConfig(isolation=sys.argv[1], workers=1, timeout_s=5.0))
    orphaner = (
        "import os, signal, time\\n"
        "if os.fork() == 0:\\n    time.sleep(30)\\n    os._exit(0)\\n"
        "os.kill(os.getppid(), signal.SIGKILL)\\n"  # rlimits: its supervisor; namespaces: refused/none
        "def f():\\n    return 1\\n"
    )
    statuses = [box.run(orphaner, "assert f() == 1\\n").status]
    statuses += [box.run("def f():\\n    return 1\\n", "assert f() == 1\\n").status for _ in range(3)]
    print(" ".join(statuses))
''')


@pytest.mark.parametrize("isolation", MODES)
def test_orphans_inherited_by_the_trainer_are_reaped(isolation):
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", AS_REAPER, isolation], capture_output=True, text=True, timeout=240,
                         env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[1:] == ["passed"] * 3, out.stdout + out.stderr[-2000:]  # were "error" for good


# --- Class 9: honest output past 1 MiB, one memory bound per run, the OOM killer's first pick -----------------------

@pytest.mark.parametrize("isolation", MODES)
def test_honest_code_printing_a_lot_still_passes(isolation):
    chatty = "for i in range(200000):\n    print('progress', i)\ndef f():\n    return 1\n"
    result = reward_for(isolation).sandbox.run(chatty, "assert f() == 1\n")
    assert result.passed, result  # 2.6 MB on stdout: was killed by RLIMIT_FSIZE (SIGXFSZ)
    assert result.stdout_tail.endswith("progress 199999\n")


@pytest.mark.parametrize("isolation", MODES)
def test_memory_is_bounded_per_run_and_sandbox_processes_go_first_when_out_of_memory(isolation):
    box = Sandbox(SandboxConfig(isolation=isolation, workers=1, memory_mb=1024, timeout_s=20.0))
    hog = textwrap.dedent('''
        import os, time
        print("oom_score_adj", open("/proc/self/oom_score_adj").read().strip(), flush=True)
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                block = bytearray(400 << 20)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                os.write(1, b"HELD\\n")
                time.sleep(2)
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        def f():
            return 1
    ''')
    try:
        if getattr(box, "_cgroups", "before") is None:
            pytest.skip("no per-run cgroups here: memory is bounded per process only (documented)")
        result = box.run(hog, "assert f() == 1\n")
    finally:
        box.close()
    assert "oom_score_adj 1000" in result.stdout_tail, result
    assert result.stdout_tail.count("HELD") < 3, result  # 4 x 400 MiB held at once with memory_mb=1024 before


def test_honest_exceptions_keep_their_built_in_base_and_arguments():
    solution = textwrap.dedent('''
        class InvalidInput(ValueError):
            pass
        def check(n):
            if n < 0:
                raise InvalidInput("negative")
            return n
        def lookup(d, k):
            return d[k]
    ''')
    tests = textwrap.dedent('''
        try:
            check(-1)
        except ValueError as exc:
            assert str(exc) == "negative"
        else:
            raise AssertionError("no ValueError")
        try:
            lookup({}, ("a", 1))
        except KeyError as exc:
            assert exc.args == (("a", 1),), exc.args
        else:
            raise AssertionError("no KeyError")
    ''')
    result = reward_for(any_mode()).sandbox.run(solution, tests)
    assert result.passed, result  # was CandidateError / KeyError("('a', 1)")


def test_a_tests_script_of_asserts_calls_everything_too():
    recorder = "import os\ndef double(x):\n    os.write(1, (repr(x) + '\\n').encode())\n    return 0\n"
    script = "".join(f"assert double({i}) == {2 * i}\n" for i in range(12))
    tests = build_tests(tests=script)
    result = reward_for(any_mode()).sandbox.run(recorder, tests)
    assert result.status == "failed", result
    assert sorted(map(int, result.stdout_tail.split())) == list(range(12)), result.stdout_tail  # was [0]


# --- Class 1, end to end: a fixed completion that learns one answer per run through the host's page cache ----------

PAGE_CACHE_ORACLE = r'''
import ctypes, os, zlib
_libc = ctypes.CDLL(None, use_errno=True); _libc.syscall.restype = ctypes.c_long
_fd = os.open(STORE, os.O_RDONLY)
os.posix_fadvise(_fd, 0, 0, os.POSIX_FADV_RANDOM) if hasattr(os, "posix_fadvise") else None
_buf = ctypes.create_string_buffer(1)
_iov = (ctypes.c_void_p * 2)(ctypes.cast(_buf, ctypes.c_void_p), 1)
def _get(page):   # cached? (preadv2 RWF_NOWAIT fails with EAGAIN on a page not in the page cache)
    return _libc.syscall(327, _fd, ctypes.c_long(ctypes.addressof(_iov)), 1, ctypes.c_long(page * 16384), 0, 8) == 1
def _set(page, bit):
    if bit:
        os.pread(_fd, 1, page * 16384)
    else:
        try:
            os.posix_fadvise(_fd, page * 16384, 4096, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass
if not _get(255):                       # first run ever: clear the store, then mark it initialised
    for p in range(255):
        _set(p, 0)
    _set(255, 1)
def _slot(key):
    return zlib.crc32(key.encode()) % 60
_last = [_get(200 + i) for i in range(8)]   # has_last, ans, slot (6 bits)
_PREV = (sum(b << i for i, b in enumerate(_last[2:])), _last[1]) if _last[0] else None
_pending = None
def NAME(*args):
    global _pending
    if _pending is not None:             # the verdict called again: the previous answer passed
        _set(3 * _pending[0], 1); _set(3 * _pending[0] + 1, _pending[1])
    s = _slot(repr(args))
    if _get(3 * s):
        ans = _get(3 * s + 1)
    elif _PREV is not None and _PREV[0] == s:
        ans = not _PREV[1]
    else:
        ans = False
    _pending = (s, ans)
    for i, b in enumerate([1, ans] + [(s >> k) & 1 for k in range(6)]):
        _set(200 + i, b)
    return ans
'''


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers of x86_64 in the attack")
@pytest.mark.parametrize("isolation", MODES)
def test_a_fixed_completion_cannot_learn_the_answers_through_the_page_cache(isolation):
    """The bits live in which pages of a world-readable file are cached (set: read the page; clear: fadvise DONTNEED;
    get: preadv2 RWF_NOWAIT), the feedback in how far the verdict got. On the landed code this completion, with no
    algorithm, reached reward 1.0 at run 17 of 30 in both modes; now every run scores 0."""
    parent = next((p for p in ("/opt", "/srv", "/mnt") if os.access(p, os.W_OK)), None)
    if parent is None:
        pytest.skip("no writable directory outside the hidden paths for the store file")
    row = ROWS[3]
    name = re.search(r"assertion\((\w+)\(\*inp\)", row["test"]).group(1)
    store = tempfile.NamedTemporaryFile(dir=parent, prefix="trl-rapid-store-", delete=False)
    try:
        store.write(os.urandom(5 << 20))
        store.close()
        os.chmod(store.name, 0o644)
        fd = os.open(store.name, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # a clean store
        os.close(fd)
        oracle = fenced(f"STORE = {store.name!r}\n" + PAGE_CACHE_ORACLE.replace("NAME", name))
        runs = 30
        rewards, statuses = score(reward_for(isolation), [oracle] * runs, **mbpp_columns([3] * runs))
    finally:
        os.unlink(store.name)
    assert rewards == [0.0] * runs, statuses
