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

import logging
import re
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
# (an empty array broadcasts against anything). evalplus's own checker (evalplus/eval/__init__.py, unsafe_execute)
# first asserts `type(out) == type(exp)` and, for lists/tuples, equal lengths: restore those two checks.
_ALLCLOSE_LINE = re.compile(r"^([ \t]*)(assert np\.allclose\(out, exp\b)", re.MULTILINE)


def strict_plus_assertion(test: str) -> str:
    """The MBPP+ "plus" script with evalplus's type and length checks before its `np.allclose` fallback."""
    return _ALLCLOSE_LINE.sub(
        lambda m: (f"{m[1]}assert type(out) == type(exp)\n{m[1]}if isinstance(exp, (list, tuple)):\n"
                   f"{m[1]}    assert len(out) == len(exp)\n{m[1]}{m[2]}"),
        test,
    )


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
    """Assemble the test program for one row; None if the row has no tests for `mode`."""
    if mode not in _TEST_MODES:
        raise ValueError(f"code reward test_mode={mode!r} is invalid: choose one of {_TEST_MODES}.")
    parts: list[str] = []
    if mode in ("all", "base"):
        parts += _as_list(test_list)
    if mode in ("all", "plus") and test:
        parts.append(strict_plus_assertion(test))
    if not parts:
        parts = _as_list(tests)
    if not any(p.strip() for p in parts):
        return None
    return "\n".join([*_as_list(test_imports), *parts]) + "\n"


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
