"""MBPP+-style code reward: run the completion's Python against the task's unit tests in a sandboxed subprocess.

Dataset columns (as in the Hub dataset `evalplus/mbppplus`, which `trl_rapid.data.load_mbppplus` keeps):

* `test_imports` (list[str]): import lines the tests need, e.g. `["import math"]`; prepended to the tests.
* `test_list` (list[str]): the original MBPP asserts ("base" tests), e.g. `"assert similar_elements((3, 4), (4, 5)) ==
  (4,)"`.
* `test` (str): the MBPP+ "plus" test script: imports numpy, defines an `assertion(out, exp, atol)` helper, and loops
  over hundreds of generated `inputs`/`results`, calling the function by name. Its `np.allclose` fallback gets
  evalplus's type and length checks first (`strict_plus_assertion`), so `[]` is not "close" to every float.
* `tests` (str or list[str]): a generic alternative for other datasets: a test script, or a list of asserts. It runs
  as `__main__` (guarded blocks and `unittest.main()` run; an exit ends the tests, a pass only with status 0 after
  at least one call to the solution).

Which tests run is chosen with `make_code_reward(test_mode=...)`: "all" (default, base + plus, the official MBPP+ pass
criterion), "base" (`test_list` only) or "plus" (`test` only). `tests` is used whenever the MBPP+ columns are absent.

Reward: 1.0 iff the verdict process ran every test against the solution's functions and reported its private token;
0.0 otherwise (wrong answer, exception, timeout, resource limit, a value that is not plain data, `sys.exit` before the
tests, no code, or any failure while scoring that completion, logged with status "error"); `None` when a row has no
tests at all ("not applicable", which TRL turns into NaN and ignores). The statuses go to `log_extra("code_status")`.

The solution runs in a sandboxed process of its own; the tests run in another that calls the solution's top-level
functions over a plain-data pipe (so a solution cannot patch the checks, forge the verdict or read the tests). See
`trl_rapid.rewards.sandbox` for the isolation, what crosses the pipe, and the limits.
"""

from __future__ import annotations

import ast
import logging
import re
import textwrap
import threading
from collections.abc import Callable, Sequence

from .sandbox import ExecutionResult, Sandbox, SandboxConfig
from .utils import completion_text

logger = logging.getLogger(__name__)
_TEST_MODES = ("all", "base", "plus")
# Linear-time patterns (they run in the trainer on hostile text): no two adjacent quantifiers can match the same
# characters, and no quantifier runs past a line end, so a failed match at one start costs O(line), not O(text).
_FENCE = re.compile(r"```[ \t]*(?:([A-Za-z0-9_+-]+)[ \t]*)?\n(.*?)(?:```|\Z)", re.DOTALL)
_DEFINES = re.compile(r"^[ \t]*(?:def|class|async[ \t]+def)[ \t(]", re.MULTILINE)
_PY_LANGS = {"python", "py", "python3", "py3", ""}
MAX_SCANNED_CHARS = 100_000  # a completion is parsed from its first 100k characters only (solutions are far shorter)


def extract_code(text: str) -> str:
    """The Python source in a completion.

    Prefers fenced blocks (```python / ```py / bare ```), taking the last one that defines something (`def`/`class`),
    else the last Python block; an unterminated final fence (a truncated generation) counts as a block. Without fences,
    MBPP's `[BEGIN] ... [DONE]` markers are honoured, and otherwise the whole text is taken as code. Only the first
    `MAX_SCANNED_CHARS` characters are read, and every pattern is linear-time: this runs in the trainer process.
    """
    text = text[:MAX_SCANNED_CHARS]
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python_blocks = [body for lang, body in blocks if lang in _PY_LANGS]
    if python_blocks:
        defining = [b for b in python_blocks if _DEFINES.search(b)]
        return (defining or python_blocks)[-1].strip("\n")
    if blocks:  # only blocks in other languages: nothing to run
        return ""
    begin = text.find("[BEGIN]")
    if begin != -1:
        end = text.find("[DONE]", begin)
        return text[begin + len("[BEGIN]") : end if end != -1 else None].strip("\n")
    return text.strip("\n")


# MBPP+'s `assertion(out, exp, atol)` helper falls back to `np.allclose(out, exp)`, which is True for `out = []`
# or any shape that broadcasts against `exp` (`[1.0]` against `[1.0, 1.0]`, `[[x]]` against `[x]`). evalplus's own
# checker (evalplus/eval/__init__.py, unsafe_execute) first asserts `type(out) == type(exp)` and, for lists/tuples,
# equal lengths; we go further and require the same shape and nesting all the way down (`_trl_same_shape`), then
# closeness.
_ALLCLOSE_LINE = re.compile(r"^([ \t]*)(assert np\.allclose\(out, exp\b)", re.MULTILINE)
_SAME_SHAPE = '''
def _trl_same_shape(out, exp):
    """`out` has the type, length and nesting of `exp` at every level (numbers may be int/float/bool alike)."""
    numbers = (bool, int, float, complex)
    if type(exp) in numbers:
        return type(out) in numbers
    if type(out) is not type(exp):
        return False
    if type(exp) in (list, tuple):
        return len(out) == len(exp) and all(_trl_same_shape(o, e) for o, e in zip(out, exp))
    if type(exp) is dict:
        return out.keys() == exp.keys() and all(_trl_same_shape(out[k], exp[k]) for k in exp)
    return True
'''


# The "plus" script imports numpy for `np.allclose`, its float fallback, and for `isinstance(x, np.ndarray)` in
# `is_floats`, which is always False here (every value is plain data: the codec turns arrays into lists). numpy is
# imported when the fallback first needs it, not in every run (~0.1 s of CPU per run saved).
_NUMPY_IMPORT = re.compile(r"^import numpy as np[ \t]*$", re.MULTILINE)
_LAZY_NUMPY = '''
class _TrlLazyNumpy:
    class ndarray:  # nothing here is an ndarray
        pass

    def __getattr__(self, name):
        import numpy
        return getattr(numpy, name)


np = _TrlLazyNumpy()
'''


def strict_plus_assertion(test: str) -> str:
    """The MBPP+ "plus" script with evalplus's type check and our exact shape/nesting check before its
    `np.allclose` fallback."""
    if not _ALLCLOSE_LINE.search(test):
        return test
    return _SAME_SHAPE + _ALLCLOSE_LINE.sub(
        lambda m: (f"{m[1]}assert type(out) == type(exp)\n{m[1]}assert _trl_same_shape(out, exp)\n{m[1]}{m[2]}"),
        test,
    )


# Every test is run, whatever the others do, in a fresh random order per run, and the outputs of the "plus" cases are
# compared only after the last call, once the candidate's process is gone (`__sandbox_release__`, provided by the
# verdict process): the candidate cannot learn which test failed, nor how many, from the calls it sees or their
# timing. Only pass/fail (and a count, for the trainer's log) comes out.
_RUN_ALL = '''
def _trl_run_all(base, cases, out, check, last=True):
    import random
    units = [(test, None) for test in base] + [(None, case) for case in cases]
    random.SystemRandom().shuffle(units)
    failures, outputs = 0, []
    for test, case in units:
        try:
            if test is not None:
                test()
            else:
                outputs.append((out(*case), case))
        except Exception:
            failures += 1
    release = globals().get("__sandbox_release__") if last else None
    if release is not None:  # no more calls: the candidate's process is ended before any output is compared
        release()
    for value, case in outputs:
        try:
            check(value, *case)
        except Exception:
            failures += 1
    assert not failures, f"{failures} of {len(units)} tests failed"
'''


def _plus_parts(test: str) -> tuple[str, str, str] | None:
    """Split an MBPP+ "plus" script into (its setup: helpers, inputs, results; the expression computing a case's
    output; the statement checking it), from its final `for i, (inp, exp) in enumerate(zip(inputs, results)):
    assertion(OUT, EXP, ATOL)` loop. None for any other shape."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return None
    loops = [n for n in tree.body if isinstance(n, ast.For)]
    if not loops or loops[-1] is not tree.body[-1]:
        return None
    loop = loops[-1]
    target, it = ast.unparse(loop.target), ast.unparse(loop.iter)
    body = loop.body[0] if len(loop.body) == 1 else None
    call = body.value if isinstance(body, ast.Expr) else None
    if (target not in ("i, (inp, exp)", "(i, (inp, exp))") or it != "enumerate(zip(inputs, results))" or loop.orelse
            or not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or len(call.args) != 3
            or call.keywords):
        return None
    setup = "\n".join(test.splitlines()[: loop.lineno - 1])
    out = ast.unparse(call.args[0])
    check = f"{call.func.id}(out, {ast.unparse(call.args[1])}, {ast.unparse(call.args[2])})"
    return setup, out, check


def _is_single_assert(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert)


def _only_asserts_and_imports(script: str) -> list[str] | None:
    """The top-level statements of a script made only of asserts and imports (e.g. "assert f(1) == 2\nassert ..."),
    each as source; None for any other script."""
    try:
        tree = ast.parse(script)
    except SyntaxError:
        return None
    if not tree.body or not all(isinstance(n, (ast.Assert, ast.Import, ast.ImportFrom)) for n in tree.body):
        return None
    return [ast.get_source_segment(script, n) or ast.unparse(n) for n in tree.body]


def _run_all_program(asserts: list[str], plus: str | None) -> str:
    """One test program that runs every assert and every "plus" case (see `_RUN_ALL`). Lines that are not a single
    assert (setup) run first, in order; a "plus" script of another shape than MBPP+'s runs as it is, after."""
    setup = [a for a in asserts if not _is_single_assert(a)]
    units = [a for a in asserts if _is_single_assert(a)]
    parts = [*setup, _RUN_ALL]
    parts += [f"def _trl_base_{i}():\n{textwrap.indent(a.strip(), '    ')}" for i, a in enumerate(units)]
    split = _plus_parts(plus) if plus else None
    cases = "[]"
    if split is not None:
        plus_setup, out, check = split
        plus_setup = _NUMPY_IMPORT.sub(lambda m: _LAZY_NUMPY, plus_setup, count=1)
        parts += [plus_setup, f"def _trl_out(inp, exp):\n    return {out}",
                  f"def _trl_check(out, inp, exp):\n    {check}"]
        cases = "list(zip(inputs, results))"
    base = "[" + ", ".join(f"_trl_base_{i}" for i in range(len(units))) + "]"
    parts.append(f"_trl_run_all({base}, {cases}, {'_trl_out' if split else 'None'}, "
                 f"{'_trl_check' if split else 'None'}, last={plus is None or split is not None})")
    if plus and split is None:
        parts.append(plus)
    return "\n".join(parts)


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def build_tests(
    test_list: Sequence[str] | None = None,
    test: str | None = None,
    test_imports: Sequence[str] | None = None,
    tests: str | Sequence[str] | None = None,
    mode: str = "all",
) -> str | None:
    """Assemble the test program for one row; None if the row has no tests for `mode`.

    MBPP+ rows (and a `tests` list of asserts, or a script of asserts and imports only) become one program that runs
    every test whatever the others do, in a random order, and reports pass/fail only (`_RUN_ALL`); any other `tests`
    script runs as it is."""
    if mode not in _TEST_MODES:
        raise ValueError(f"code reward test_mode={mode!r} is invalid: choose one of {_TEST_MODES}.")
    asserts = [a for a in _as_list(test_list) if a.strip()] if mode in ("all", "base") else []
    plus = strict_plus_assertion(test) if mode in ("all", "plus") and test and test.strip() else None
    imports = _as_list(test_imports)
    if asserts or plus:
        return "\n".join([*imports, _run_all_program(asserts, plus)]) + "\n"
    if isinstance(tests, str):
        if not tests.strip():
            return None
        statements = _only_asserts_and_imports(tests)
        if statements is None:  # any other script runs as it is (it may stop at its first failing assert)
            return "\n".join([*imports, tests]) + "\n"
        return "\n".join([*imports, _run_all_program(statements, None)]) + "\n"
    listed = [t for t in _as_list(tests) if t.strip()]
    if not listed:
        return None
    return "\n".join([*imports, _run_all_program(listed, None)]) + "\n"


def _column(values, index: int):
    return None if values is None else values[index]


def make_code_reward(
    config: SandboxConfig | None = None, test_mode: str = "all", sandbox: Sandbox | None = None
) -> Callable[..., list[float | None]]:
    """Build a TRL reward function that scores completions by running them against their tests.

    The sandbox is created (and its isolation probed) here, so a broken setup fails at start-up. Completions of one
    call run in parallel on `config.workers` threads, each driving its own subprocess.
    """
    if test_mode not in _TEST_MODES:
        raise ValueError(f"make_code_reward(test_mode={test_mode!r}) is invalid: choose one of {_TEST_MODES}.")
    sandbox = sandbox or Sandbox(config)

    def code_reward(
        completions,
        test_list=None,
        test=None,
        test_imports=None,
        tests=None,
        log_extra=None,
        **kwargs,
    ) -> list[float | None]:
        jobs: list[tuple[str, str]] = []
        job_index: list[int | str] = []  # index into jobs, or the status of a completion that is not run
        for i, completion in enumerate(completions):
            try:
                program_tests = build_tests(
                    _column(test_list, i), _column(test, i), _column(test_imports, i), _column(tests, i),
                    mode=test_mode,
                )
                solution = extract_code(completion_text(completion))
            except Exception as exc:  # a malformed row or completion scores 0; it never ends the training run
                logger.warning("code reward: completion %d could not be prepared: %s: %s", i, type(exc).__name__, exc)
                job_index.append("error")
                continue
            if program_tests is None:
                job_index.append("no_tests")
            else:
                job_index.append(len(jobs))
                jobs.append((solution, program_tests))
        try:
            results: list[ExecutionResult] = sandbox.run_many(jobs)
        except Exception as exc:  # Sandbox.run never raises; this guards the thread pool itself
            logger.warning("code reward: scoring failed: %s: %s", type(exc).__name__, exc)
            results = [ExecutionResult(False, "error", None, 0.0) for _ in jobs]
        rewards: list[float | None] = []
        statuses: list[str] = []
        for idx in job_index:
            if idx == "no_tests":
                rewards.append(None)
                statuses.append("no_tests")
            elif isinstance(idx, str):
                rewards.append(0.0)
                statuses.append(idx)
            else:
                rewards.append(1.0 if results[idx].passed else 0.0)
                statuses.append(results[idx].status)
        if any(status == "error" for status in statuses):
            logger.warning("code reward: %d completion(s) scored 0 because of a sandbox error (status 'error')",
                           statuses.count("error"))
        if log_extra is not None:
            log_extra("code_status", statuses)
        return rewards

    code_reward.sandbox = sandbox  # type: ignore[attr-defined]
    return code_reward


_DEFAULT: Callable | None = None
_DEFAULT_LOCK = threading.Lock()


def code_reward(completions, **kwargs) -> list[float | None]:
    """TRL reward function with the default sandbox (`SandboxConfig()`) and all available tests (base + plus).

    See the module docstring for the columns it reads. Build your own with `make_code_reward(SandboxConfig(...))`
    to change time/memory limits, workers or which tests run.
    """
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = make_code_reward()
    return _DEFAULT(completions, **kwargs)
