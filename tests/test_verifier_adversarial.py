"""Hostile input: every regular expression of the verifiers and the answer readers is linear in its input, and no adversarial completion
costs any verifier more than a fraction of its per-item limit."""

from __future__ import annotations

import importlib
import pkgutil
import re
import time

import pytest

import crl.answers
import crl.verifiers
from crl.data.schemas import STATUSES
from crl.verifiers import get_verifier, verify_many

ATOMS = [" ", "a", "m", "1", "1,", "1 ", ",", ".", "{", "}", "(", ")", "[", "\\", "\\frac", "$", "$$", "^", "_", "=",
         "<", "\\le", "&", "\\\\", "x", "and ", "or ", "0.", "1.0", ",1", "{,}", ", ", "\\text{", "\\boxed{",
         "answer is ", "#", "*", "%", "percent", "e", "E1", "'", '"', "\n", "\t", "-", "+", "/", "!", ":", "1,000",
         "\\,", ",\\!", "\\(", "\\[", "ab1", "1 m", "m ", "the ", "\\left(", "\\infty", "\\approx", "^{", "^\\circ",
         "\\{", "x=", "a.", "0,", "\\sqrt", "pi", "1.", "1e", "_1", "a1", "1/", "-1", "1 ,", "m^2 ", "cm ", "}{"]
PAIRED = ["1", ".", ",", " ", "{", "}", "e", "a", "\\", "$", "(", "_", "^", "-"]
SIZE = 8000
LIMIT_S = 0.05  # a linear pattern scans 8000 characters in well under a millisecond; a quadratic one takes seconds


def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    found = []
    for package in (crl.verifiers, crl.answers):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found += [(f"{info.name}.{name}", p) for name, p in vars(module).items() if isinstance(p, re.Pattern)]
    return found


def _inputs() -> list[str]:
    atoms = ATOMS + [a + b for a in PAIRED for b in PAIRED if a != b]
    return [(atom * (SIZE // len(atom) + 1))[:SIZE] + tail for atom in atoms for tail in ("", "!")]


def test_the_pattern_census_is_complete():
    names = {name for name, _ in _patterns()}
    assert len(names) > 50
    assert {"spans.NUMBER_RE", "spans.CUE_RE", "normalize._THOUSANDS", "latex_tokens._TOKEN"} <= names


@pytest.mark.timeout(300)
def test_every_pattern_is_linear_on_repetitive_input():
    inputs = _inputs()
    slow = []
    for name, pattern in _patterns():
        for text in inputs:
            start = time.perf_counter()
            for _ in pattern.finditer(text):
                pass
            pattern.match(text)
            elapsed = time.perf_counter() - start
            if elapsed > LIMIT_S:
                slow.append(f"{name} {elapsed:.3f}s on {text[:12]!r}...")
    assert not slow, "\n".join(slow)


HOSTILE = [
    "\\boxed{5 " + "m" * 40 + "!}",
    "\\boxed{5 " + "m " * 5000 + "!}",
    "\\boxed{" + "1" * 30000 + "}",
    "\\boxed{" + "x" * 25000,
    "So " + "\\boxed{7} " * 5000 + "\\boxed{8",
    "\\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
    "\\boxed{" + "\\frac{" * 500 + "1" + "}{2}" * 500 + "}",
    "\\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}",
    "\\boxed{" + "x^" * 2000 + "2}",
    "\\boxed{" + "\\sqrt{" * 800 + "2" + "}" * 800 + "}",
    "\\boxed{9^{9^{9^{9^{9}}}}}", "\\boxed{10^{10^{10}}}", "\\boxed{1e99999}", "\\boxed{9999!}",
    "\\boxed{(x^2+3x+7)^{10000}}", "\\boxed{e^{e^{e^{e^{10}}}}}", "\\boxed{\\sin(10^{9000})}",
    "The answer is " * 5000, "Answer: " * 5000 + "3",
    "1" * 100000, "1," * 50000, "1 " * 50000, "1." * 50000, "$" * 50000, "\\(" * 20000, "x < " * 20000 + "1",
    "crl_pwned" * 10000 + "2", "(1, " * 10000 + "2)", "\\boxed{" + "1, " * 3000 + "1}",
    "\\boxed{" + "1 and " * 2000 + "1}", "\\boxed{" + "x = " * 2000 + "1}", "\\boxed{" + "1 < " * 2000 + "x}",
    "\\boxed{" + "1 \\approx " * 1000 + "1}", "\\boxed{" + "\\{" * 2000 + "1" + "\\}" * 2000 + "}",
    "\\boxed{\\begin{pmatrix}" + "1 & " * 3000 + "1\\end{pmatrix}}", "\\boxed{" + "1:" * 3000 + "1}",
    "\\boxed{" + "\\pm" * 1000 + "1}", "\\boxed{" + "(1,2) \\cup " * 1000 + "(3,4)}",
    "\\boxed{" + "1{,}" * 3000 + "000}", "\\boxed{0." + "1" * 5000 + "\\overline{3}}",
    "<think>" * 1000 + "</think>" * 1000 + "\\boxed{1}", "\\boxed{x^{2} + " * 300 + "1" + "}" * 300,
]
GOLDS = ["5", "7", "x", "(1, 2)", "\\frac{1}{2}", "0.5", "x^2+1", "(-\\infty, 3)"]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["math", "math_boxed", "gsm8k", "exact", "choice"])
def test_hostile_completions_stay_fast_in_process(name):
    verify = get_verifier(name)
    slow = []
    for completion in HOSTILE:
        for gold in GOLDS[:3]:
            start = time.perf_counter()
            v = verify(completion, gold)
            elapsed = time.perf_counter() - start
            assert v.status in STATUSES
            if elapsed > 1.0:
                slow.append(f"{elapsed:.2f}s {completion[:40]!r} vs {gold!r}")
    assert not slow, "\n".join(slow)


@pytest.mark.timeout(300)
def test_no_hostile_item_reaches_the_pool_limit():
    comps = [c for c in HOSTILE for _ in GOLDS]
    golds = [g for _ in HOSTILE for g in GOLDS]
    out = verify_many(comps, golds, workers=2, timeout=5.0)
    timed_out = [(c[:40], g) for c, g, v in zip(comps, golds, out) if v.status == "timeout"]
    assert not timed_out
    assert all(v.reward == 0.0 for v in out[: len(GOLDS)])  # "5 mmm...m!" is not an answer
