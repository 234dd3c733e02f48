"""Known reward hacks of a math verifier, one row each: what the verifier must answer for each of them."""

from __future__ import annotations

import re

import polars as pl
import pytest

from crl.default import TEST_PROMPTS
from crl.verifiers import get_verifier

QUESTION = re.compile(r"What is (.+)\?")
BIG_BOX = "\\boxed{" + "1+" * 10_500 + "1}"
ROWS = [
    # (completion, gold, reward, status): values past the float range are ordinary numbers
    ("So the answer is \\boxed{e^{1000}}", "72", 0.0, "ok"),
    ("So the answer is \\boxed{e^{1000}}", "\\frac{\\pi}{2}", 0.0, "ok"),
    ("\\boxed{\\pi^{1000}}", "x^2+1", 0.0, "ok"),
    ("\\boxed{10^{400}\\pi}", "(3, 4)", 0.0, "ok"),
    ("\\boxed{e^{1000}}", "e^{1000}", 1.0, "ok"),
    ("\\boxed{2e^{1000}}", "e^{1000}+e^{1000}", 1.0, "ok"),
    # no tolerance between exact expressions
    ("\\boxed{e^{50}}", "e^{50}+1", 0.0, "ok"),
    ("\\boxed{(x^2+3x+7)^{3000}}", "(x^2+3x+7)^{2999}(x^2+3x+6)", 0.0, "ok"),
    ("\\boxed{(x^2+3x+7)^{2999}(x^2+3x+7)}", "(x^2+3x+7)^{3000}", 1.0, "ok"),
    ("\\boxed{\\frac{1}{2^{99}}}", "\\frac{1}{2^{98}}", 0.0, "ok"),
    ("\\boxed{3.14159}", "\\pi", 1.0, "ok"),
    ("\\boxed{3.1416}", "\\pi", 0.0, "ok"),
    # the final answer is the last answer-bearing span; a cut-off final box is no answer
    ("First \\boxed{7} ... then \\boxed{8", "7", 0.0, "no_answer"),
    ("The answer is 3. Wait, I made an error; redoing it gives \\boxed{4}.", "3", 0.0, "ok"),
    ("\\boxed{3} was my first guess. Checking again, the final answer is 4.", "4", 1.0, "ok"),
    ("\\boxed{3} was my first guess. Checking again, the final answer is 4.", "3", 0.0, "ok"),
    (BIG_BOX + " and the count is 5", "5", 0.0, "unparsable"),
    ("\\boxed{12}. So the answer is reasonable, since 12 > 10.", "12", 1.0, "ok"),
    ("\\boxed{12}. So the answer is correct.", "12", 1.0, "ok"),
    # the last-number fallback reads whole numbers only
    ("My name is crl_pwned2", "2", 0.0, "no_answer"),
    ("So the pair is (3, 7)", "7", 0.0, "ok"),
    ("So the pair is (3, 7)", "(3, 7)", 1.0, "ok"),
    ("Hence x < 5", "5", 0.0, "no_answer"),
    ("We get \\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "4", 0.0, "no_answer"),
    # the unit regex no longer backtracks: an answer, refused in microseconds
    ("\\boxed{5 " + "m" * 40 + "!}", "5", 0.0, "unparsable"),
    # hedging is never rewarded
    ("\\boxed{3} or \\boxed{4}", "3", 0.0, "ok"),
    ("\\boxed{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}", "7", 0.0, "ok"),
    # the question boxed as its answer: arithmetic left undone is not a number (a SmolLM2 run learned this)
    ("\\boxed{9+4}", "13", 0.0, "ok"),
    ("The sum is \\boxed{488 + 1}.", "489", 0.0, "ok"),
    ("\\boxed{9+4 = 13}", "13", 1.0, "ok"),
]


@pytest.mark.parametrize("completion,gold,reward,status", ROWS, ids=[f"row{i}" for i in range(len(ROWS))])
def test_each_reward_hack_gets_the_reward_and_status_of_its_row(completion, gold, reward, status):
    v = get_verifier("math")(completion, gold)
    assert (v.reward, v.status) == (reward, status), v


def test_boxing_the_question_earns_nothing_on_the_arithmetic_set():
    """Over the whole shipped held-out set, the question's own expression boxed is never right; the sum is."""
    rows = pl.read_parquet(TEST_PROMPTS).to_dicts()
    math = get_verifier("math")
    questions = [QUESTION.match(r["prompt"]).group(1) for r in rows]
    restated = [math("\\boxed{" + q + "}", r["answer"]) for q, r in zip(questions, rows)]
    assert sum(v.reward for v in restated) == 0
    assert all(math("\\boxed{" + r["answer"] + "}", r["answer"]).reward == 1.0 for r in rows)
