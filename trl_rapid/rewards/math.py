"""Math answer reward with `math-verify` (pip name `math-verify`): 1.0 iff the final answer equals the reference.

Works for the usual references:

* MATH / MATH-500: a bare LaTeX answer (`\\frac{1}{2}`) or a full worked solution whose last `\\boxed{...}` holds the
  answer;
* GSM8K: a worked solution ending in `#### 72` (everything after the last `####`, commas removed).

The completion's final answer is its last `\\boxed{...}` (or `\\fbox{...}`) when there is one; otherwise whatever comes
after a last `####`; otherwise math-verify's own extraction (answer phrases such as "the answer is", then the last
expression). Both sides are parsed with math-verify and compared symbolically, so `0.5`, `\\frac{1}{2}` and `1/2`
match, as do `\\boxed{2}` and `2`.

Returns a float per completion (1.0 correct, 0.0 otherwise) or `None` when the *reference* cannot be parsed (the row
is not scorable; TRL treats `None` as NaN and ignores it).
"""

from __future__ import annotations

import logging
import re
import threading

from .utils import completion_text

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (brace-balanced), or of `\\boxed x` up to a `$`/space."""
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    i = start + len(cmd)
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j].strip()
        return None  # unbalanced: a truncated answer is not an answer
    rest = text[i:].split("$")[0].strip()
    return rest.split()[0] if rest else None


_LEADING_NUMBER = re.compile(r"^\$?\s*(-?\d[\d,]*(?:\.\d+)?)")


def _after_hashes(text: str) -> str | None:
    """GSM8K style: the rest of the line after the last `####`; just its leading number when it starts with one."""
    if "####" not in text:
        return None
    lines = text.rsplit("####", 1)[1].strip().splitlines()
    if not lines:
        return None
    number = _LEADING_NUMBER.match(lines[0].strip())
    return number.group(1).replace(",", "") if number else lines[0].strip()


def reference_answer(solution: str) -> str:
    """The answer part of a reference: after `####` (GSM8K), else the last box (MATH solutions), else the whole."""
    solution = str(solution)
    hashed = _after_hashes(solution)
    if hashed:
        return hashed
    boxed = last_boxed(solution)
    return boxed if boxed is not None else solution.strip()


def completion_answer(text: str) -> str | None:
    """The final answer written in a completion: last box, else after `####`; None = let math-verify look for it."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    return _after_hashes(text)


def _timeouts() -> tuple[int | None, int | None]:
    # math-verify's timeouts use signal.alarm, which only works in the main thread; elsewhere run without.
    if threading.current_thread() is threading.main_thread():
        return 5, 5
    logging.getLogger("math_verify.parser").setLevel(logging.ERROR)
    logging.getLogger("math_verify.grader").setLevel(logging.ERROR)
    return None, None


def _parse_answer(answer: str, parsing_timeout):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    # A bare answer ("\frac{1}{2}", "0.5") has no $...$ delimiters; wrap it so the LaTeX extractor sees math.
    wrapped = answer if "$" in answer or "\\(" in answer or "\\[" in answer else f"${answer}$"
    parsed = parse(wrapped, extraction_config=configs, parsing_timeout=parsing_timeout)
    if not parsed and wrapped != answer:
        parsed = parse(answer, extraction_config=configs, parsing_timeout=parsing_timeout)
    return parsed


def is_equivalent(answer_text: str, reference: str) -> bool | None:
    """True/False for one completion text against one reference; None if the reference is unparseable."""
    from math_verify import parse, verify

    parsing_timeout, verify_timeout = _timeouts()
    gold = _parse_answer(reference_answer(reference), parsing_timeout)
    if not gold:
        return None
    extracted = completion_answer(answer_text)
    if extracted is not None:
        pred = _parse_answer(extracted, parsing_timeout)
    else:
        pred = parse(answer_text, parsing_timeout=parsing_timeout)
    if not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=verify_timeout))


def math_reward(completions, solution, log_extra=None, **kwargs) -> list[float | None]:
    """TRL reward function: 1.0 if a completion's final answer is equivalent to `solution`, else 0.0.

    Args:
        completions: strings (plain-text prompts) or lists of `{"role", "content"}` messages (conversational).
        solution: the reference per completion (the dataset column; see the module docstring for formats).
        log_extra: passed by TRL's GRPOTrainer; when given, the extracted answers are logged as a column.
    """
    try:
        import math_verify  # noqa: F401
    except ImportError as exc:  # a configuration error, raised on the first call with the fix in the message
        raise ImportError("math_reward needs the `math-verify` package: pip install math-verify") from exc
    rewards: list[float | None] = []
    extracted: list[str] = []
    for completion, reference in zip(completions, solution, strict=True):
        text = completion_text(completion)
        try:
            ok = is_equivalent(text, reference)
        except Exception:  # math-verify timeouts or sympy errors: an unverifiable answer scores 0
            ok = False
        rewards.append(None if ok is None else float(ok))
        extracted.append(str(completion_answer(text)))
    if log_extra is not None:
        log_extra("extracted_answer", extracted)
    return rewards
