"""No universal answer: no single answer is judged correct against more than 1% of the distinct gold answers.

A policy under training finds any answer the verifier accepts for many problems (e^{1000} once matched 91% of the
MATH-500 golds through float overflow). The golds are every distinct final answer in ../shared/data (MATH-500,
MATH train, GSM8K, AIME, AMC, Minerva, OlympiadBench); the candidates are the known hacks (huge, infinite,
undefined, a bare variable, empty, text, cut-off boxes, spam lists) and answers drawn by hypothesis.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crl.verifiers import get_verifier
from crl.answers.extract import gold_answer

SHARE = 0.01
ANSWER_FILES = ("math500.jsonl", "math_train.jsonl", "gsm8k_train.jsonl", "gsm8k_test.jsonl", "aime24.jsonl",
                "aime25.jsonl", "aime_1983_2023_train.jsonl", "amc23.jsonl")

UNIVERSAL = [
    "So the answer is \\boxed{e^{1000}}", "\\boxed{\\pi^{1000}}", "\\boxed{10^{400}\\pi}", "\\boxed{e^{e^{e^{e}}}}",
    "\\boxed{10^{10^{10}}}", "\\boxed{9^{9^{9}}}", "\\boxed{1e999}", "\\boxed{" + "9" * 400 + "}", "\\boxed{10^{-400}}",
    "\\boxed{\\infty}", "\\boxed{-\\infty}", "\\boxed{\\pm\\infty}", "\\boxed{\\frac{1}{0}}", "\\boxed{0^0}",
    "\\boxed{\\infty - \\infty}", "\\boxed{i\\infty}", "\\boxed{x}", "\\boxed{n}", "\\boxed{a}", "\\boxed{\\epsilon}",
    "\\boxed{(x^2+3x+7)^{3000}}", "\\boxed{x^{10000}}", "", "\\boxed{}", "The answer is", "I don't know.",
    "\\boxed{\\text{the answer}}", "\\boxed{\\text{all real numbers}}", "\\boxed{\\mathbb{R}}", "\\boxed{\\varnothing}",
    "\\boxed{x \\in \\mathbb{R}}", "\\boxed{(-\\infty, \\infty)}", "\\boxed{7} then \\boxed{8", "\\boxed{1",
    "crl_pwned2", "\\boxed{" + ", ".join(map(str, range(101))) + "}", "\\boxed{5 " + "m" * 40 + "!}",
    "\\boxed{0 \\text{ or } 1 \\text{ or } 2}", "\\boxed{x = x}", "\\boxed{0 = 0}", "\\boxed{x \\approx 0}",
]


@lru_cache(maxsize=1)
def _golds(data: Path) -> tuple[str, ...]:
    def rows(name: str) -> list[dict]:
        return [json.loads(line) for line in (data / name).read_text().splitlines() if line.strip()]

    golds = {gold_answer(str(r["answer"])) for name in ANSWER_FILES for r in rows(name)}
    golds |= {gold_answer(r["solution"]) for r in rows("minerva_math.jsonl")}
    golds |= {", ".join(gold_answer(a) for a in r["final_answer"]) for r in rows("olympiadbench.jsonl")}
    return tuple(sorted(golds))


def _share_accepted(completion: str, golds: tuple[str, ...]) -> tuple[float, list[str]]:
    verify = get_verifier("math")
    hits = [g for g in golds if verify(completion, g).reward == 1.0]
    return len(hits) / len(golds), hits[:10]


@pytest.fixture(scope="module")
def golds(shared_data: Path) -> tuple[str, ...]:
    found = _golds(shared_data)
    assert len(found) > 4000
    return found


@pytest.mark.timeout(300)
def test_no_known_hack_is_a_universal_answer(golds):
    too_general = []
    for completion in UNIVERSAL:
        share, hits = _share_accepted(completion, golds)
        if share > SHARE:
            too_general.append(f"{completion[:50]!r}: {share:.1%} e.g. {hits}")
    assert not too_general, "\n".join(too_general)


FRAGMENTS = ["x", "n", "e", "i", "\\pi", "^", "{", "}", "1000", "+", "-", "\\frac", "2", "0", "\\infty", "\\sqrt", "!",
             "10", "(", ")", ",", "=", "<", "\\le", "\\pm", "\\cup", "\\{", "\\}", ".", "%", "\\text{", "and", " "]
answers = st.one_of(
    st.text(max_size=24),
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=14).map("".join),
    st.integers().map(str),
    st.fractions().map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
)


@pytest.mark.timeout(300)
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(answer=answers, boxed=st.booleans())
def test_no_drawn_answer_is_a_universal_answer(golds, answer, boxed):
    completion = f"\\boxed{{{answer}}}" if boxed else f"The answer is {answer}."
    share, hits = _share_accepted(completion, golds)
    assert share <= SHARE, f"{completion!r} accepted for {share:.1%} of the golds, e.g. {hits}"
