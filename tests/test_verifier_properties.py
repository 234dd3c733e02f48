"""Property tests: random and adversarial strings never raise out of a verifier or verify_many, and never hang."""

from __future__ import annotations

import math
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crl.data.schemas import STATUSES
from crl.verifiers import Verdict, get_verifier, verify_many

LIMIT = 2.0  # seconds per item in these tests

FRAGMENTS = [
    "\\boxed{", "\\boxed ", "\\fbox{", "}", "{", "^", "_", "!", "\\frac", "\\dfrac", "\\sqrt", "\\sqrt[", "]", "[",
    "(", ")", "10^{", "9^{9^{9}}", "99!", "1000000", "-", "+", "*", "/", "=", "<", "\\leq", ",", ";", "\\{", "\\}",
    "\\left(", "\\right)", "$", "$$", "\\(", "\\)", "\\[", "\\]", "</think>", "<think>", "\\pm", "\\cup",
    "\\begin{pmatrix}", "\\end{pmatrix}", "&", "\\\\", "%", "\\%", "x", "y", "e", "i", "\\pi", "\\infty", "\\log_",
    "\\ln", "\\sin^{-1}", "|", "\\text{", "\\mathrm{", "^\\circ", "0.", "\\overline{3}", ".", "The answer is ",
    "Final Answer: The final answer is ", "Answer:", "####", " ", "\n", "\\", "\\binom{", "1e999", "\x00", "\u2212",
    "\\lfloor", "\\rfloor", "'", "\\cdot", "\\times", "2", "3", "0", "\\in", "\\mathbb{R}", "and", "or",
]
adversarial = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
text = st.one_of(st.text(max_size=200), adversarial)
VERIFIERS = ["math", "math_boxed", "gsm8k", "exact", "choice"]


def _valid(v: Verdict) -> bool:
    return (isinstance(v, Verdict) and v.status in STATUSES and v.reward in (0.0, 1.0)
            and (v.pred is None or isinstance(v.pred, str)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(completion=text, answer=text, name=st.sampled_from(VERIFIERS))
def test_verifiers_never_raise_and_stay_fast(completion, answer, name):
    start = time.perf_counter()
    v = get_verifier(name)(completion, answer)
    assert time.perf_counter() - start < LIMIT
    assert _valid(v)


MARKERS = ("\\boxed", "\\fbox", "answer", "Answer", "####", "think>", "$", "\\(", "\\)", "\\[", "\\]", "\x00")
# Expressions without the marks that say where an answer is, and without a lone brace or backslash that would
# close the box early: a box around one holds exactly it.
expressions = st.lists(st.sampled_from([f for f in FRAGMENTS if not any(m in f for m in MARKERS) and f not in ("{", "}", "\\", "\\\\")]),
                       max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(answer=expressions)
def test_a_boxed_expression_against_itself_is_right_whenever_it_is_read(answer):
    start = time.perf_counter()
    v = get_verifier("math")(f"\\boxed{{{answer}}}", answer)
    assert time.perf_counter() - start < LIMIT
    assert _valid(v)
    assert v.status != "ok" or v.reward == 1.0, v


@settings(max_examples=200, deadline=None)
@given(n=st.integers(-10**9, 10**9), d=st.integers(1, 10**4))
def test_a_boxed_number_or_fraction_against_itself_is_read_and_right(n, d):
    for answer in (str(n), f"\\frac{{{n}}}{{{d}}}", f"{n}/{d}"):
        v = get_verifier("math")(f"The answer is \\boxed{{{answer}}}.", answer)
        assert (v.status, v.reward) == ("ok", 1.0), (answer, v)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=st.lists(st.tuples(text, text), min_size=1, max_size=30))
def test_verify_many_never_raises_or_stalls(pairs):
    comps, golds = [c for c, _ in pairs], [g for _, g in pairs]
    start = time.monotonic()
    out = verify_many(comps, golds, workers=2, timeout=LIMIT)
    elapsed = time.monotonic() - start
    assert len(out) == len(pairs) and all(_valid(v) for v in out)
    # Start-up (a few seconds at most), then at most LIMIT + 1 s per item and worker.
    assert elapsed < 10 + math.ceil(len(pairs) / 2) * (LIMIT + 1)
