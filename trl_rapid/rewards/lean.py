"""Lean 4 proof reward (MiniF2F) through the Lean REPL's JSON protocol (github.com/leanprover-community/repl).

Protocol, as implemented by the REPL: the client writes one JSON command followed by a blank line on stdin, e.g.
`{"cmd": "import Mathlib"}` (no `env`: a fresh environment, imports allowed) or
`{"cmd": "theorem t : 1 + 1 = 2 := by norm_num", "env": 0}` (run in the environment numbered 0); the REPL answers one
JSON object followed by a blank line: `{"env": 1, "messages": [{"severity": "error"|"warning"|"info", "pos": ...,
"data": "..."}], "sorries": [...]}`, or `{"message": "..."}` when the request itself is invalid.

A proof is accepted (reward 1.0) iff the REPL reports no `error` message, no `sorries` and no "declaration uses
'sorry'" warning, the theorem statement is the dataset's (unchanged), and the completion uses none of the constructs
that could cheat or escape (see `FORBIDDEN`). Anything else scores 0.0.

No Lean toolchain is installed in this project's CI: the client is tested up to the process boundary against a fake
REPL executable that speaks the same protocol (tests/test_rewards_lean.py). To use it for real, build the REPL
(`lake build` in a checkout of leanprover-community/repl whose toolchain matches your Mathlib project) and set
`LeanConfig.repl_command` (e.g. `["lake", "exe", "repl"]` with `project_dir` = the REPL checkout that requires
Mathlib, or `["lake", "env", "/path/to/repl/.lake/build/bin/repl"]` with `project_dir` = your Mathlib project).
`make_lean_reward` checks this at construction (and runs one trivial command), so a missing toolchain is reported at
start-up with the setting to change, never in the middle of a run.

The REPL runs with the trainer's privileges: Lean code can execute IO (`#eval`, custom elaborators), which is why such
commands are rejected before anything is sent. Run the trainer in a container if proofs come from untrusted models.
"""

from __future__ import annotations

import json
import os
import queue
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .utils import completion_text

DEFAULT_HEADER = (
    "import Mathlib\nimport Aesop\n\nset_option maxHeartbeats 400000\n\nopen BigOperators Real Nat Topology Rat\n\n"
)
ENV_REPL_COMMAND = "TRL_RAPID_LEAN_REPL"
ENV_PROJECT_DIR = "TRL_RAPID_LEAN_PROJECT"

# Constructs rejected in a completion (checked on the code outside the given statement). They either fake a proof
# (sorry, admit, axiom, kernel-check switches), run arbitrary IO on the host (#eval, run_cmd, elab/macro definitions,
# initialize, extern/implemented_by), or end elaboration early (#exit).
FORBIDDEN = (
    "sorry", "admit", "axiom", "sorryAx", "#eval", "#exit", "run_cmd", "run_tac", "run_elab", "elab", "macro",
    "syntax", "initialize", "implemented_by", "extern", "unsafe", "debug.skipKernelTC", "IO.", "import",
)


def _token_pattern(tok: str) -> str:
    before = r"(?<![\w.'])" if re.match(r"\w", tok[0]) else ""
    after = r"(?![\w'])" if re.match(r"\w", tok[-1]) else ""
    return before + re.escape(tok) + after


_FORBIDDEN_RE = re.compile("|".join(_token_pattern(tok) for tok in FORBIDDEN))
_FENCE = re.compile(r"```[ \t]*(?:([A-Za-z0-9_+-]+)[ \t]*)?\n(.*?)(?:```|\Z)", re.DOTALL)  # linear: no ambiguous runs


class LeanNotAvailableError(RuntimeError):
    """The Lean REPL is not configured or cannot be started. Raised at construction time, with the setting to change."""


class LeanReplError(RuntimeError):
    """The REPL process failed while handling a request (base class)."""


class LeanReplTimeout(LeanReplError):
    """No answer within the timeout; the process was killed and will be restarted on the next request."""


class LeanReplCrashed(LeanReplError):
    """The process exited or closed its output; it will be restarted on the next request."""


@dataclass
class LeanConfig:
    """Where and how to run the Lean 4 REPL.

    Attributes:
        repl_command: argv (or a shell-style string) starting the REPL, e.g. `["lake", "exe", "repl"]`. Defaults to
            the `TRL_RAPID_LEAN_REPL` environment variable.
        project_dir: working directory of the command (the Lake project that provides Mathlib). Defaults to
            `TRL_RAPID_LEAN_PROJECT`.
        timeout_s: seconds to wait for the answer to one proof.
        startup_timeout_s: seconds to wait for a header (e.g. `import Mathlib`, slow on a cold cache).
        workers: REPL processes checking proofs in parallel.
        restart_every: restart a REPL after this many commands (bounds its memory growth); None = never.
        memory_limit_mb: optional `RLIMIT_AS` for the REPL process (Lean memory-maps .olean files: keep it generous).
        extra_env: environment variables added to the inherited environment of the REPL.
    """

    repl_command: Sequence[str] | str | None = None
    project_dir: str | None = None
    timeout_s: float = 120.0
    startup_timeout_s: float = 900.0
    workers: int = 1
    restart_every: int | None = 2000
    memory_limit_mb: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.repl_command is None and os.environ.get(ENV_REPL_COMMAND):
            self.repl_command = os.environ[ENV_REPL_COMMAND]
        if self.project_dir is None and os.environ.get(ENV_PROJECT_DIR):
            self.project_dir = os.environ[ENV_PROJECT_DIR]
        if not self.timeout_s > 0:
            raise ValueError(f"LeanConfig.timeout_s={self.timeout_s!r} is invalid: use a positive number of seconds.")
        if not self.startup_timeout_s > 0:
            raise ValueError(
                f"LeanConfig.startup_timeout_s={self.startup_timeout_s!r} is invalid: use a positive number."
            )
        if self.workers < 1:
            raise ValueError(f"LeanConfig.workers={self.workers!r} is invalid: use at least 1.")


def check_lean_available(config: LeanConfig) -> list[str]:
    """Validate the REPL settings without starting anything; return the resolved argv.

    Raises `LeanNotAvailableError` naming the field to change when no command is configured, its executable cannot be
    found, or `project_dir` does not exist.
    """
    if not config.repl_command:
        raise LeanNotAvailableError(
            "No Lean REPL configured: set LeanConfig.repl_command (or the TRL_RAPID_LEAN_REPL environment variable) to "
            "the command that starts the Lean 4 REPL, e.g. repl_command=['lake', 'exe', 'repl'] with "
            "project_dir=<a Lake project with Mathlib and leanprover-community/repl built>. No Lean toolchain is "
            "bundled with trl-rapid; install one with elan (https://github.com/leanprover/elan)."
        )
    argv = shlex.split(config.repl_command) if isinstance(config.repl_command, str) else list(config.repl_command)
    if not argv:
        raise LeanNotAvailableError("LeanConfig.repl_command is empty: set it to e.g. ['lake', 'exe', 'repl'].")
    if config.project_dir is not None and not os.path.isdir(config.project_dir):
        raise LeanNotAvailableError(
            f"LeanConfig.project_dir={config.project_dir!r} does not exist: set it to the Lake project directory "
            "(the one containing lakefile.lean / lakefile.toml) in which the REPL command runs."
        )
    exe = argv[0]
    if os.sep in exe:
        path = exe if os.path.isabs(exe) or config.project_dir is None else os.path.join(config.project_dir, exe)
        found = path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    else:
        found = shutil.which(exe)
    if found is None:
        raise LeanNotAvailableError(
            f"LeanConfig.repl_command={argv!r}: executable {exe!r} not found"
            + (" on PATH" if os.sep not in exe else "")
            + ". Install the Lean toolchain (elan provides `lake` and `lean`) or set LeanConfig.repl_command to the "
            "full path of the REPL executable."
        )
    argv[0] = found
    return argv


class LeanRepl:
    """One Lean REPL process: send a JSON command, get the JSON answer, with timeouts and restart on failure.

    Not thread-safe: use one instance per thread (`LeanVerifier` keeps a pool).
    """

    def __init__(self, config: LeanConfig):
        self.config = config
        self.argv = check_lean_available(config)
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._buffer = b""
        self._header_envs: dict[str, int] = {}
        self.commands_sent = 0
        self.starts = 0

    # -- process lifecycle --------------------------------------------------------------------------------------------
    def start(self):
        """Start the process (no-op if it is running)."""
        if self.alive:
            return
        self.close()
        limit = self.config.memory_limit_mb

        def preexec():
            if limit:
                import resource

                resource.setrlimit(resource.RLIMIT_AS, (limit * 1024 * 1024, limit * 1024 * 1024))

        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=self.config.project_dir,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env={**os.environ, **self.config.extra_env},
                start_new_session=True,
                preexec_fn=preexec if limit else None,
            )
        except OSError as exc:
            raise LeanNotAvailableError(
                f"could not start LeanConfig.repl_command={self.argv!r} in project_dir={self.config.project_dir!r}: "
                f"{exc}"
            ) from exc
        self._buffer = b""
        self._header_envs.clear()
        self.commands_sent = 0
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self):
        """Kill the process group and forget all environments."""
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._header_envs.clear()

    def restart(self):
        self.close()
        self.start()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def stderr_tail(self, limit: int = 2000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - limit))
        return self._stderr.read().decode("utf-8", errors="replace")

    # -- protocol -----------------------------------------------------------------------------------------------------
    def send(self, request: dict, timeout_s: float | None = None) -> dict:
        """Send one command and return the REPL's JSON answer.

        Raises `LeanReplTimeout` (process killed) or `LeanReplCrashed` (process gone); in both cases the next call
        starts a fresh process, so callers only decide whether to retry.
        """
        if self.config.restart_every and self.commands_sent >= self.config.restart_every:
            self.restart()
        self.start()
        timeout_s = self.config.timeout_s if timeout_s is None else timeout_s
        assert self._proc is not None
        try:
            self._proc.stdin.write(json.dumps(request, ensure_ascii=False).encode() + b"\n\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            tail = self.stderr_tail()
            self.close()
            raise LeanReplCrashed(f"Lean REPL stdin closed ({exc}); stderr: {tail[-500:]}") from exc
        self.commands_sent += 1
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            while b"\n\n" not in self._buffer.lstrip(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.close()
                    raise LeanReplTimeout(f"Lean REPL gave no answer within {timeout_s:.1f}s; process restarted")
                if not sel.select(timeout=remaining):
                    continue
                chunk = os.read(self._proc.stdout.fileno(), 1 << 16)
                if chunk == b"":
                    tail = self.stderr_tail()
                    code = self._proc.wait()
                    self.close()
                    raise LeanReplCrashed(f"Lean REPL exited with code {code}; stderr: {tail[-500:]}")
                self._buffer += chunk
        text, _, self._buffer = self._buffer.lstrip(b"\n").partition(b"\n\n")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            self.close()
            raise LeanReplCrashed(f"Lean REPL answered something that is not JSON: {text[:200]!r}") from exc

    def run_command(self, code: str, env: int | None = None, timeout_s: float | None = None) -> dict:
        """`{"cmd": code}` (optionally in environment `env`); raises `LeanReplError` if the REPL rejects the request."""
        request: dict = {"cmd": code}
        if env is not None:
            request["env"] = env
        answer = self.send(request, timeout_s)
        if "message" in answer and "env" not in answer:
            raise LeanReplError(f"Lean REPL rejected the command: {answer['message']}")
        return answer

    def header_env(self, header: str) -> int:
        """Environment id after running `header` (imports, options), computed once per process."""
        if header not in self._header_envs or not self.alive:
            answer = self.run_command(header, timeout_s=self.config.startup_timeout_s)
            errors = [m for m in answer.get("messages", []) if m.get("severity") == "error"]
            if errors:
                raise LeanReplError(f"the Lean header does not compile: {errors[0].get('data', '')[:300]}")
            self._header_envs[header] = answer["env"]
        return self._header_envs[header]

    def check(self, code: str, header: str = DEFAULT_HEADER) -> dict:
        """Compile `code` (no imports) on top of `header`; the REPL's answer."""
        return self.run_command(code, env=self.header_env(header))


def is_complete_proof(answer: dict) -> bool:
    """True iff a REPL answer has no error, no sorry and no "declaration uses 'sorry'" warning."""
    messages = answer.get("messages", []) or []
    if any(m.get("severity") == "error" for m in messages):
        return False
    if answer.get("sorries"):
        return False
    return not any("sorry" in str(m.get("data", "")) for m in messages if m.get("severity") == "warning")


def _normalise(text: str) -> str:
    return " ".join(text.split())


def statement_without_proof(formal_statement: str) -> str:
    """The theorem statement up to and including `:=` / `:= by`, with any trailing `sorry` removed."""
    stmt = formal_statement.rstrip()
    if stmt.endswith("sorry"):
        stmt = stmt[: -len("sorry")].rstrip()
    return stmt


def build_proof_code(completion: str, formal_statement: str) -> str | None:
    """The Lean code to check for one completion, or None if it must score 0 without being sent.

    A completion may restate the whole theorem (typically in a ```lean4 block) or just continue the statement with
    tactics (the MiniF2F prompt ends with the statement and `:= by`). A restated theorem must contain the dataset's
    statement verbatim (up to whitespace); a theorem of the same name with another statement is rejected. Import lines
    are dropped (the header supplies them); any `FORBIDDEN` construct outside the statement rejects the completion.
    """
    statement = statement_without_proof(formal_statement)
    core = statement[: -len("by")].rstrip() if statement.endswith("by") else statement
    core = core[: -len(":=")].rstrip() if core.endswith(":=") else core
    # A ```lean4 / ```lean block restates the code; otherwise the completion continues the prompt's open block and
    # the proof is everything before the first fence (the closing one).
    blocks = [body for lang, body in _FENCE.findall(completion) if lang.lower() in {"lean4", "lean"}]
    body = blocks[-1] if blocks else completion.split("```")[0]
    body = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("import "))
    norm_body, norm_core = _normalise(body), _normalise(core)
    if norm_core and norm_core in norm_body:
        code, outside_statement = body, norm_body.replace(norm_core, " ", 1)
    else:
        name = re.search(r"\b(?:theorem|lemma)\s+([^\s(:{\[]+)", statement)
        if name and re.search(rf"\b(?:theorem|lemma)\s+{re.escape(name.group(1))}(?![\w.'])", body):
            return None  # the theorem was restated with a different statement
        body = body.lstrip("\n")
        code = statement + "\n" + (body if body[:1].isspace() else "  " + body)
        outside_statement = body
    if not outside_statement.strip() or _FORBIDDEN_RE.search(outside_statement):
        return None
    return code.strip() + "\n"


class LeanVerifier:
    """A pool of `LeanRepl` processes checking proofs in parallel (`config.workers`).

    The constructor validates the configuration and, with `probe=True` (default), runs one trivial command so that a
    broken installation fails here, at start-up.
    """

    def __init__(self, config: LeanConfig | None = None, probe: bool = True):
        self.config = config or LeanConfig()
        check_lean_available(self.config)
        self._pool: queue.Queue[LeanRepl] = queue.Queue()
        for _ in range(self.config.workers):
            self._pool.put(LeanRepl(self.config))
        if probe:
            repl = self._pool.get()
            try:
                answer = repl.run_command("example : True := trivial", timeout_s=self.config.startup_timeout_s)
                if not is_complete_proof(answer):
                    raise LeanNotAvailableError(
                        f"the Lean REPL started by LeanConfig.repl_command={repl.argv!r} cannot check "
                        f"`example : True := trivial`: {answer}"
                    )
            except LeanReplError as exc:
                raise LeanNotAvailableError(
                    f"the Lean REPL started by LeanConfig.repl_command={repl.argv!r} (project_dir="
                    f"{self.config.project_dir!r}) does not answer: {exc}"
                ) from exc
            finally:
                self._pool.put(repl)

    def verify(self, code: str | None, header: str = DEFAULT_HEADER, retries: int = 1) -> tuple[bool, str]:
        """(accepted, status) for one piece of code; status is "passed", "rejected", "failed", "timeout" or "crash"."""
        if code is None:
            return False, "rejected"
        repl = self._pool.get()
        try:
            for attempt in range(retries + 1):
                try:
                    answer = repl.check(code, header)
                    return (True, "passed") if is_complete_proof(answer) else (False, "failed")
                except LeanReplTimeout:
                    return False, "timeout"  # a proof that exhausts the time limit is not retried
                except LeanReplCrashed:
                    if attempt == retries:
                        return False, "crash"
                except LeanReplError:
                    return False, "failed"
            return False, "crash"
        finally:
            self._pool.put(repl)

    def verify_many(self, items: list[tuple[str | None, str]]) -> list[tuple[bool, str]]:
        if self.config.workers == 1 or len(items) <= 1:
            return [self.verify(code, header) for code, header in items]
        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            return list(pool.map(lambda item: self.verify(*item), items))

    def close(self):
        while not self._pool.empty():
            self._pool.get().close()


def make_lean_reward(config: LeanConfig | None = None, verifier: LeanVerifier | None = None) -> Callable:
    """Build a TRL reward function for Lean proofs; fails here (start-up) if the REPL is unavailable.

    The returned function reads the dataset columns `formal_statement` (the theorem, ending in `:= by`) and optionally
    `header` (imports and options; `DEFAULT_HEADER` when absent).
    """
    verifier = verifier or LeanVerifier(config)

    def lean_reward(completions, formal_statement, header=None, log_extra=None, **kwargs) -> list[float]:
        items = []
        for i, completion in enumerate(completions):
            code = build_proof_code(completion_text(completion), formal_statement[i])
            items.append((code, (header[i] if header is not None and header[i] else DEFAULT_HEADER)))
        results = verifier.verify_many(items)
        if log_extra is not None:
            log_extra("lean_status", [status for _, status in results])
        return [1.0 if ok else 0.0 for ok, _ in results]

    lean_reward.verifier = verifier  # type: ignore[attr-defined]
    return lean_reward


_DEFAULT: Callable | None = None
_DEFAULT_LOCK = threading.Lock()


def lean_reward(completions, formal_statement, header=None, **kwargs) -> list[float]:
    """TRL reward function using `LeanConfig()` (the `TRL_RAPID_LEAN_REPL` / `TRL_RAPID_LEAN_PROJECT` variables).

    Prefer `make_lean_reward(LeanConfig(...))` before training starts: it validates the setup up front, whereas this
    convenience function can only do so on its first call.
    """
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = make_lean_reward()
    return _DEFAULT(completions, formal_statement, header=header, **kwargs)
