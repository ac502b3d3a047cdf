"""Math reward on real inputs: equivalent forms, wrong and missing answers, MATH / MATH-500 / GSM8K references."""

import json
import threading
from pathlib import Path

import pytest

from trl_rapid.rewards.math import completion_answer, last_boxed, math_reward, reference_answer

FIXTURES = Path(__file__).parent / "fixtures"


def _rows(name):
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


@pytest.mark.parametrize(
    "completion, solution",
    [
        (r"Adding the fractions gives $\boxed{\frac{1}{2}}$.", "0.5"),
        (r"So the probability is \boxed{0.5}.", r"\frac{1}{2}"),
        (r"\boxed{2}", "2"),
        ("The answer is 2.", r"\boxed{2}"),
        (r"We get $\boxed{\dfrac{3}{4}}$.", r"Thus the answer is $\boxed{\frac34}$."),
        (r"\boxed{x^2+2x+1}", r"(x+1)^2"),
        (r"\boxed{2\sqrt{2}}", r"\sqrt{8}"),
        (r"\boxed{(-2, 2)}", r"(-2,2)"),
        (r"First try $\boxed{3}$; correcting the sign, the answer is $\boxed{-3}$.", "-3"),
    ],
)
def test_equivalent_forms_score_one(completion, solution):
    assert math_reward([completion], [solution]) == [1.0]


@pytest.mark.parametrize(
    "completion, solution",
    [
        (r"\boxed{3}", "2"),
        (r"\boxed{\frac{1}{3}}", "0.5"),
        (r"The answer is $\boxed{-3}$, no wait, $\boxed{3}$.", "-3"),  # the last box counts
        (r"\boxed{\frac{1}{2", r"\frac{1}{2}"),  # truncated box
        ("I could not solve this problem.", "7"),
        ("", "7"),
    ],
)
def test_wrong_or_missing_answers_score_zero(completion, solution):
    assert math_reward([completion], [solution]) == [0.0]


def test_gsm8k_references_and_completions():
    reference = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
        "in April and May.\n#### 72"
    )
    completions = [
        "In May she sold 24, so 48 + 24 = 72 in total.\n#### 72",
        r"She sold 24 in May, so the total is $\boxed{72}$.",
        "She sold 48 + 24 = 72 clips. The answer is 72.",
        "#### 96",
    ]
    assert math_reward(completions, [reference] * 4) == [1.0, 1.0, 1.0, 0.0]
    assert math_reward(["The dealership sold #### 3,750 cars"], ["... #### 3750"]) == [1.0]


def test_conversational_completions():
    completions = [[{"role": "assistant", "content": r"The answer is $\boxed{14}$."}],
                   [{"role": "assistant", "content": r"The answer is $\boxed{7}$."}]]
    assert math_reward(completions, ["14", "14"]) == [1.0, 0.0]


def test_unparseable_reference_is_not_applicable():
    assert math_reward([r"\boxed{5}", r"\boxed{5}"], ["", "5"]) == [None, 1.0]


def test_fixture_references_score_themselves():
    math_rows = _rows("math_lighteval.jsonl")
    completions = [f"Working through it, the final answer is $\\boxed{{{reference_answer(r['solution'])}}}$."
                   for r in math_rows]
    assert math_reward(completions, [r["solution"] for r in math_rows]) == [1.0] * len(math_rows)
    m500 = _rows("math500.jsonl")
    assert math_reward([r["solution"] for r in m500], [r["answer"] for r in m500]) == [1.0] * len(m500)
    gsm = _rows("gsm8k.jsonl")
    assert math_reward([r["answer"] for r in gsm], [r["answer"] for r in gsm]) == [1.0] * len(gsm)
    # and a shifted pairing (each completion against the next row's reference) scores 0
    shifted = [r["answer"] for r in gsm[1:] + gsm[:1]]
    assert math_reward([r["answer"] for r in gsm], shifted) == [0.0] * len(gsm)


def test_works_outside_the_main_thread():
    # math-verify's signal-based timeouts only work in the main thread; the reward must not crash elsewhere.
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("r", math_reward([r"\boxed{\frac{1}{2}}"], ["0.5"])))
    worker.start()
    worker.join(60)
    assert out["r"] == [1.0]


def test_answer_extraction_helpers():
    assert last_boxed(r"a \boxed{1} b \boxed{\frac{1}{2}} c") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed 5 and more") == "5"
    assert last_boxed("no box") is None
    assert reference_answer("blah\n#### 1,234") == "1234"
    assert reference_answer(r"so $\boxed{14}$ units") == "14"
    assert reference_answer(r"\frac{5}{6}") == r"\frac{5}{6}"
    assert completion_answer("free text only") is None


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        math_reward([r"\boxed{1}", r"\boxed{2}"], ["1"])
