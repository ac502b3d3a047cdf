"""Verifiable rewards for RL on math, code and Lean proofs, in TRL's reward-function interface.

Each function takes `completions` (strings, or lists of `{"role", "content"}` messages for conversational prompts)
plus the dataset columns it needs as keyword lists, and returns one float per completion (1.0 = correct), or `None`
where a row cannot be scored.

* `math_reward(completions, solution)`: math-verify equivalence of the final answer (MATH, MATH-500, GSM8K).
* `code_reward(completions, test_list=..., test=..., test_imports=...)`: MBPP+ unit tests in a sandboxed
  subprocess; `make_code_reward(SandboxConfig(...))` to configure limits and parallelism.
* `lean_reward(completions, formal_statement, header=...)`: Lean 4 REPL check (MiniF2F);
  `make_lean_reward(LeanConfig(...))` validates the toolchain at start-up.
"""

from .code import code_reward, extract_code, make_code_reward
from .lean import LeanConfig, LeanNotAvailableError, LeanRepl, check_lean_available, lean_reward, make_lean_reward
from .math import math_reward
from .sandbox import Sandbox, SandboxConfig, SandboxUnavailableError

__all__ = [
    "LeanConfig",
    "LeanNotAvailableError",
    "LeanRepl",
    "Sandbox",
    "SandboxConfig",
    "SandboxUnavailableError",
    "check_lean_available",
    "code_reward",
    "extract_code",
    "lean_reward",
    "make_code_reward",
    "make_lean_reward",
    "math_reward",
]
