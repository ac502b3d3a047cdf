"""A policy trying to get reward 1.0 without solving the task: every attempt is a real completion, scored for real.

The verdict runs in a process of its own (see trl_rapid/rewards/sandbox/__init__.py), so each forging attempt must
score 0.0, none may crash the scorer (status "error"), and the correct solutions scored in the same batch must still
score 1.0. All rows of one isolation level are scored in one batched call (2 workers) to keep this file fast.
"""

import os
import textwrap

import pytest

from trl_rapid.rewards.code import make_code_reward
from trl_rapid.rewards.sandbox import SandboxConfig, find_sandbox_processes, run_prefix

from helpers.timing import scaled
from sandbox_modes import ROWS, MODES, lasting

# Scaled to the machine's load: a correct program must finish in time on a loaded machine too; the hostile programs
# check that the sandbox stops them at this timeout, whatever its value.
TIMEOUT_S = scaled(2.0)



# A takeover: the solution replaces the runner's protocol loop with its own (it knows the pipe's descriptors from
# sys.argv and can use the runner's own codec through __main__). REPLY(call_id, name, args) gives the raw reply.
TAKEOVER = '''
import os, sys, struct, __main__
CALLS, REPLIES = int(sys.argv[2]), int(sys.argv[3])
def serve(names, reply):
    __main__.send(REPLIES, ("ready", tuple(names)))
    while True:
        try:
            _, cid, name, args, kwargs = __main__.receive(CALLS)
        except EOFError:
            os._exit(0)
        out = reply(cid, name, args)
        if isinstance(out, bytes):
            os.write(REPLIES, out)
        else:
            __main__.send(REPLIES, out)
'''


def raw_message(body: bytes) -> bytes:
    return len(body).to_bytes(8, "big") + body


def takeover(names, reply_src: str) -> str:
    return TAKEOVER + f"serve({names!r}, {reply_src})\n"


# Where the rows' tests come from: an MBPP+ task id ("all" = base asserts + plus script), ("plus", id) for the plus
# script alone (so the plus-only attacks are not stopped by a base assert first), or a generic `tests` script.
UNITTEST_ADD = textwrap.dedent('''
    import unittest
    class T(unittest.TestCase):
        def test_add(self):
            self.assertEqual(add(2, 3), 5)
            self.assertEqual(add(-1, 1), 0)
    outcome = unittest.TextTestRunner(verbosity=0).run(unittest.defaultTestLoader.loadTestsFromTestCase(T))
    assert outcome.wasSuccessful()
''')

ANYTHING = '''
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __hash__(self): return 0
'''

SCAN_FOR_SECRETS = '''
import gc, os, re, sys
HEX64 = re.compile(r"[0-9a-f]{64}")
found = set()
frame = sys._getframe()
while frame is not None:
    for space in (frame.f_locals, frame.f_globals):
        for value in list(space.values()):
            if isinstance(value, str) and (HEX64.fullmatch(value) or "assert" in value):
                found.add(value)
    frame = frame.f_back
for obj in gc.get_objects():
    if isinstance(obj, dict):
        for value in list(obj.values()):
            if isinstance(value, str) and (HEX64.fullmatch(value) or "assert" in value):
                found.add(value)
'''

PROBE_VERDICT = '''
import ctypes, os, signal
report = {"seen": 0, "environ": 0, "fds": 0, "mem": 0, "signalled": 0, "ptraced": 0}
libc = ctypes.CDLL(None, use_errno=True)
for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        continue
    if b"_verdict" not in cmd:
        continue
    report["seen"] += 1
    try:
        open(f"/proc/{pid}/environ", "rb").read(); report["environ"] += 1
    except OSError:
        pass
    for fd in range(64):
        try:
            open(f"/proc/{pid}/fd/{fd}", "rb").read(1); report["fds"] += 1
        except OSError:
            pass
    try:
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(0x400000); mem.read(16); report["mem"] += 1
    except (OSError, ValueError):
        pass
    try:
        os.kill(int(pid), signal.SIGSTOP); report["signalled"] += 1
    except OSError:
        pass
    if libc.ptrace(16, int(pid), 0, 0) == 0:  # PTRACE_ATTACH
        report["ptraced"] += 1
print("VERDICT-ACCESS", report, flush=True)
'''

WRONG_17 = "def square_perimeter(a):\n    return 0\n"

# name -> (tests source, completion). Each must score 0.0.
ATTACKS = {
    # --- the forging attempts that scored 1.0 against the single-interpreter runner -----------------------------------
    "eq_always_true": (17, ANYTHING + "def square_perimeter(a):\n    return Anything()\n"),
    "patch_math_isclose": (139, "import math\nmath.isclose = lambda *a, **k: True\n"
                                "def circle_circumference(r):\n    return 0.0\n"),
    "patch_numpy_allclose": (("plus", 139), "import numpy\nnumpy.allclose = lambda *a, **k: True\n"
                                            "def circle_circumference(r):\n    return 0.5\n"),
    "patch_unittest_assertEqual": (UNITTEST_ADD, "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
                                                 "def add(a, b):\n    return 0\n"),
    "patch_builtins_exec": (17, "import builtins\nbuiltins.exec = lambda *a, **k: None\n" + WRONG_17),
    "patch_builtins_compile": (17, "import builtins\n_c = builtins.compile\n"
                                   "builtins.compile = lambda *a, **k: _c('pass', '<x>', 'exec')\n" + WRONG_17),
    "patch_builtins_zip": (("plus", 17), "import builtins\nbuiltins.zip = lambda *a: iter(())\n" + WRONG_17),
    "walk_frames_to_nonce": (17, SCAN_FOR_SECRETS + "for tok in found:\n    print(tok)\n"
                                 "    for fd in range(3, 64):\n        try:\n            os.write(fd, tok.encode())\n"
                                 "        except OSError:\n            pass\nos._exit(0)\n"),
    "read_hidden_tests_lookup_table": (17, SCAN_FOR_SECRETS + "import ast\nTABLE = {}\n"
                                           "for text in found:\n"
                                           "    for m in re.finditer(r'square_perimeter\\((.*?)\\)\\s*==\\s*(\\d+)', text):\n"
                                           "        TABLE[m.group(1)] = int(m.group(2))\n"
                                           "def square_perimeter(a):\n    return TABLE.get(repr(a), 0)\n"),
    "sys_exit_before_tests": (17, WRONG_17 + "import sys\nsys.exit(0)\n"),
    "os_exit_before_tests": (17, WRONG_17 + "import os\nos._exit(0)\n"),
    "shadow_builtin_set": (2, "def set(*args):\n    return 0\ndef similar_elements(a, b):\n    return ()\n"),
    "define_test_helper_assertion": (("plus", 2), "def assertion(*a, **k):\n    return None\n"
                                                  "def similar_elements(a, b):\n    return ()\n"),
    "print_markers": (17, "import secrets, sys\nfor m in ('passed', 'OK', 'PASS', secrets.token_hex(32)):\n"
                          "    print(m); print(m, file=sys.stderr)\n" + WRONG_17),
    "raise_systemexit_in_call": (17, "def square_perimeter(a):\n    raise SystemExit(0)\n"),
    "kill_everything_in_call": (17, "import os, signal\ndef square_perimeter(a):\n"
                                    "    try:\n        os.kill(-1, signal.SIGKILL)\n    except OSError:\n        pass\n"
                                    "    return 0\n"),
    "read_ptrace_signal_verdict": (17, PROBE_VERDICT + WRONG_17),
    "plant_modules_for_verdict": (("plus", 139), "import os\nsrc = 'allclose = lambda *a, **k: True\\n'\n"
                                                 "for d in ('.', '/tmp', '/var/tmp', '/dev/shm', os.environ['HOME'], '../verdict'):\n"
                                                 "    for name in ('numpy.py', 'sitecustomize.py', 'usercustomize.py', 'math.py'):\n"
                                                 "        try:\n            open(os.path.join(d, name), 'w').write(src)\n"
                                                 "        except OSError:\n            pass\n"
                                                 "def circle_circumference(r):\n    return 0.5\n"),
    # --- attacks on the two-process design itself ----------------------------------------------------------------
    "nan_result": (17, "def square_perimeter(a):\n    return float('nan')\n"),
    "negative_zero_result": (17, "def square_perimeter(a):\n    return -0.0\n"),
    "true_instead_of_int": (17, "def square_perimeter(a):\n    return True\n"),
    "float_instead_of_int": (17, "def square_perimeter(a):\n    return 40.0\n"),
    "huge_int": (17, "def square_perimeter(a):\n    return 10 ** 100000\n"),
    "too_many_values": (8, "def square_nums(nums):\n    return [0] * 3_000_000\n"),
    "oversized_message": (17, "def square_perimeter(a):\n    return 'x' * (70 << 20)\n"),
    "recursive_list": (8, "def square_nums(nums):\n    out = []\n    out.append(out)\n    return out\n"),
    "deeply_nested": (8, "def square_nums(nums):\n    out = []\n    for _ in range(500):\n        out = [out]\n"
                         "    return out\n"),
    "int_subclass_eq": (17, "class I(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\n"
                            "def square_perimeter(a):\n    return I(0)\n"),
    "str_subclass_eq": (17, "class S(str):\n    def __eq__(self, o): return True\n    __hash__ = str.__hash__\n"
                            "def square_perimeter(a):\n    return S('x')\n"),
    "float_subclass_eq": (139, "class F(float):\n    def __eq__(self, o): return True\n    __hash__ = float.__hash__\n"
                               "def circle_circumference(r):\n    return F(0.0)\n"),
    "list_subclass_eq": (8, "class L(list):\n    def __eq__(self, o): return True\ndef square_nums(nums):\n    return L()\n"),
    "tuple_subclass_eq": (2, "class T(tuple):\n    def __eq__(self, o): return True\n    __hash__ = tuple.__hash__\n"
                             "def similar_elements(a, b):\n    return T()\n"),
    "dict_subclass_eq": ("assert f() == {'a': 1}\n", "class D(dict):\n    def __eq__(self, o): return True\n"
                                                     "def f():\n    return D()\n"),
    "object_inside_list": (8, ANYTHING + "def square_nums(nums):\n    return [Anything() for _ in nums]\n"),
    "numpy_subclass_eq": (8, "import numpy as np\nclass A(np.ndarray):\n    def __eq__(self, o): return True\n"
                             "def square_nums(nums):\n    return np.zeros(3).view(A)\n"),
    "generator_result": (8, "def square_nums(nums):\n    return (0 for _ in nums)\n"),
    "sleep_in_exec": (17, "import time\ntime.sleep(30)\n" + WRONG_17),
    "sleep_in_call": (17, "import time\ndef square_perimeter(a):\n    time.sleep(30)\n    return 4 * a\n"),
    "os_exit_in_call": (17, "import os\ndef square_perimeter(a):\n    os._exit(0)\n"),
    "close_the_pipe": (17, "import os, sys\nos.close(int(sys.argv[3]))\n" + WRONG_17),
    "fork_and_answer_twice": (17, "import os\nos.fork()\n" + WRONG_17),
    "garbage_bytes": (17, takeover(["square_perimeter"], "lambda cid, n, a: b'\\x00' * 8 + b'garbage!'")),
    "huge_length_header": (17, takeover(["square_perimeter"], "lambda cid, n, a: (2 ** 40).to_bytes(8, 'big')")),
    "json_float_literal": (17, takeover(["square_perimeter"], "lambda cid, n, a: len(b'40.0').to_bytes(8, 'big') + b'40.0'")),
    "json_nan_literal": (17, takeover(["square_perimeter"], "lambda cid, n, a: len(b'NaN').to_bytes(8, 'big') + b'NaN'")),
    "unknown_tag": (17, takeover(["square_perimeter"], "lambda cid, n, a: len(b'{\"x\":1}').to_bytes(8, 'big') + b'{\"x\":1}'")),
    "json_nesting_bomb": (17, takeover(["square_perimeter"], "lambda cid, n, a: (200000).to_bytes(8, 'big') + b'[' * 100000 + b']' * 100000")),
    "wrong_call_id": (17, takeover(["square_perimeter"], "lambda cid, n, a: ('ok', cid + 1, 4 * a[0], ())")),
    "reply_twice": (17, takeover(["square_perimeter"],
                                 "lambda cid, n, a: (__main__.send(REPLIES, ('ok', cid, 4 * a[0], ())), ('ok', cid, 4 * a[0], ()))[1]")),
    "bad_value_claim_then_ok": (17, takeover(["square_perimeter"], "lambda cid, n, a: ('bad_value', cid, 'x')")),
    "raise_systemexit_type": (17, takeover(["square_perimeter"], "lambda cid, n, a: ('raise', cid, 'SystemExit', '0', ())")),
    "raise_protocol_error_type": (17, takeover(["square_perimeter"], "lambda cid, n, a: ('raise', cid, 'SandboxProtocolError', '', ())")),
    "raise_stopiteration": (17, takeover(["square_perimeter"], "lambda cid, n, a: ('raise', cid, 'StopIteration', '', ())")),
    "echo_changes_immutable_arg": (2, takeover(["similar_elements"], "lambda cid, n, a: ('ok', cid, (4, 5), ((0, (4, 5)),))")),
    "echo_changes_arg_type": (8, takeover(["square_nums"], "lambda cid, n, a: ('ok', cid, [], ((0, {'a': 1}),))")),
    "echo_bad_position": (8, takeover(["square_nums"], "lambda cid, n, a: ('ok', cid, [], ((7, [1]),))")),
    "echo_malformed": (8, takeover(["square_nums"], "lambda cid, n, a: ('ok', cid, [], 'not a tuple')")),
    "proxy_names_shadow_builtins": (2, takeover(["set", "zip", "isinstance", "__builtins__", "__import__", "similar_elements"],
                                                "lambda cid, n, a: ('ok', cid, 0, ())")),
    "proxy_names_not_identifiers": (17, takeover(["square perimeter", "1x", "", "def", "square_perimeter"],
                                                 "lambda cid, n, a: ('ok', cid, 0, ())")),
    "too_many_names": (17, takeover([f"f{i}" for i in range(10001)] + ["square_perimeter"],
                                    "lambda cid, n, a: ('ok', cid, 4 * a[0], ())")),
    "no_ready_message": (17, "import os, sys, time\nos.write(int(sys.argv[3]), b'')\nos._exit(0)\n"),
}

# name -> (tests source, completion). Each must score 1.0: the honest behaviours the proxies must preserve.
GOOD = {
    "reference_17": (17, ROWS[17]["code"]),
    "star_imports_before_the_function": (17, "from numpy import *\nfrom math import *\nfrom itertools import *\n"
                                             "from os import *\nfrom string import *\n" + ROWS[17]["code"]),  # plus inputs include True: a bool must arrive as a bool
    "reference_139": (139, ROWS[139]["code"]),
    "reference_2": (2, ROWS[2]["code"]),
    "reference_8": (8, ROWS[8]["code"]),
    "unittest_add": (UNITTEST_ADD, "def add(a, b):\n    return a + b\n"),
    "mutates_list_in_place": ("x = [3, 1, 2]\nassert sort_in_place(x) is None\nassert x == [1, 2, 3]\n"
                              "y = {'a': 1}\nadd_key(y, k='b')\nassert y == {'a': 1, 'b': 2}\n"
                              "t = ([], {1})\npush(t)\nassert t == ([1], {1, 2})\n",
                              "def sort_in_place(l):\n    l.sort()\n"
                              "def add_key(d, k):\n    d[k] = 2\n"
                              "def push(t):\n    t[0].append(1)\n    t[1].add(2)\n"),
    "raises_builtin_exception": ("try:\n    check(-1)\nexcept ValueError as e:\n    assert str(e) == 'negative'\n"
                                 "else:\n    raise AssertionError('no exception')\n",
                                 "def check(x):\n    if x < 0:\n        raise ValueError('negative')\n"),
    "helpers_and_numpy_values": ("assert total([1, 2]) == 3 and type(total([1])) is int\nassert as_array(2) == [0.0, 0.0]\n"
                                 "assert pair() == (1, 'a') and special() == [float('inf'), -0.0, b'\\x00', 3j, frozenset({1})]\n"
                                 "import math\nassert math.isnan(nan())\nassert big() == 2 ** 200\n",
                                 "import numpy as np\nfrom collections import namedtuple\nP = namedtuple('P', 'x y')\n"
                                 "def _helper(v):\n    return np.int64(v)\n"
                                 "def total(xs):\n    return _helper(sum(xs))\n"
                                 "def as_array(n):\n    return np.zeros(n)\n"
                                 "def pair():\n    return P(1, 'a')\n"
                                 "def special():\n    return [float('inf'), -0.0, b'\\x00', 3j, frozenset({1})]\n"
                                 "def nan():\n    return float('nan')\n"
                                 "def big():\n    return 2 ** 200\n"),
}


def _columns(sources):
    cols = {"test_list": [], "test": [], "test_imports": [], "tests": []}
    for source in sources:
        if isinstance(source, str):
            row, plus_only, tests = None, False, source
        else:
            plus_only = isinstance(source, tuple)
            row, tests = ROWS[source[1] if plus_only else source], None
        cols["test_list"].append([] if row is None or plus_only else row["test_list"])
        cols["test"].append("" if row is None else row["test"])
        cols["test_imports"].append([] if row is None else row["test_imports"])
        cols["tests"].append(tests)
    return cols


@pytest.fixture(scope="module", params=MODES)
def scored(request):
    """Every attack and every good row of this module, scored in one batch under one isolation level."""
    fn = make_code_reward(SandboxConfig(timeout_s=TIMEOUT_S, memory_mb=1024, workers=2, isolation=request.param))
    names = list(ATTACKS) + list(GOOD)
    table = {**ATTACKS, **GOOD}
    logged = {}
    rewards = fn([f"```python\n{table[n][1]}\n```" for n in names], **_columns(table[n][0] for n in names),
                 log_extra=lambda key, values: logged.__setitem__(key, values))
    out = {n: (r, s) for n, r, s in zip(names, rewards, logged["code_status"])}
    # Also score each attack's completion directly to read what it printed.
    out["_probe"] = fn.sandbox.run(PROBE_VERDICT + WRONG_17, "assert square_perimeter(1) == 4\n")
    yield out
    fn.sandbox.close()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_forging_attempt_scores_zero(scored, name):
    reward, status = scored[name]
    assert reward == 0.0, f"{name} was rewarded ({status})"
    assert status not in ("passed", "error"), f"{name}: status {status}"


@pytest.mark.parametrize("name", list(GOOD))
def test_correct_solution_still_scores_one(scored, name):
    reward, status = scored[name]
    assert reward == 1.0, f"{name} scored {reward} ({status})"


def test_candidate_cannot_read_signal_or_trace_the_verdict(scored):
    result = scored["_probe"]
    line = next(line for line in result.stdout_tail.splitlines() if line.startswith("VERDICT-ACCESS"))
    report = eval(line.split(" ", 1)[1], {})  # our own probe's dict literal
    # namespaces: the verdict process is in another PID namespace (not even seen); rlimits: another uid.
    assert {k: v for k, v in report.items() if k != "seen"} == dict.fromkeys(
        ("environ", "fds", "mem", "signalled", "ptraced"), 0), report


def test_no_process_or_planted_file_survives(scored):
    assert not lasting(lambda: find_sandbox_processes(run_prefix()))
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        for name in ("numpy.py", "sitecustomize.py", "usercustomize.py", "math.py"):
            assert not os.path.exists(os.path.join(directory, name)), f"{directory}/{name} left behind"
