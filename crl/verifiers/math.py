"""The `math` verifier: extract the final answer of a completion and test it for mathematical equivalence.

Extraction (`crl/answers/extract.py`): the last answer-bearing span by position (a box or another family's box
tokens, "the final answer is", "the answer is", "Answer:", "A:", "# Answer" on a line of its own, "####"), else the
last math span or standalone number (widened to the plain-text arithmetic around it), after `</think>` when
present; a cut-off final box, a negated cue ("The answer is not 12."), or an incomplete final answer of a
completion stopped by the length limit, is no answer. The gold answer may be a bare answer, a MATH solution (its
last box) or GSM8K's "... #### 18". Both are normalised (`crl/answers/normalize.py`) and compared
(`crl/answers/equivalence.py`; a decimal matches another value only as its rounding at the decimal's own places).
Against a gold that is a number, arithmetic on literals left undone ("9+4", "\\frac{26}{2}", "5!",
`crl/answers/structure.py`) is a wrong answer, not an equal one. Identical strings and integers are settled
without sympy, which keeps the synthetic-arithmetic path at a few microseconds.
"""

from __future__ import annotations

import re

from crl.verifiers import Verdict, register
from crl.answers.equivalence import equivalent
from crl.answers.extract import DEFAULT_STRATEGIES, find_answer, gold_answer
from crl.answers.latex_tokens import MAX_CHARS, Refused
from crl.answers.normalize import normalize
from crl.answers.structure import is_number, parse_node, undone_arithmetic

_INT = re.compile(r"^-?\d+$")


def check(pred: str, gold: str) -> Verdict:
    """Compare a normalised prediction with a normalised gold answer."""
    if pred == gold:
        return Verdict(1.0, pred, "ok")
    if len(pred) > MAX_CHARS:
        return Verdict(0.0, pred[:MAX_CHARS], "unparsable")
    if _INT.match(pred) and _INT.match(gold):
        return Verdict(float(int(pred) == int(gold)), pred, "ok")
    if not pred:
        return Verdict(0.0, pred, "unparsable")
    try:
        node = parse_node(pred)
        if is_number(gold) and undone_arithmetic(pred):
            return Verdict(0.0, pred, "ok")
        if equivalent(pred, gold):
            return Verdict(1.0, pred, "ok")
    except Refused:
        return Verdict(0.0, pred, "unparsable")
    if node.kind == "text" and _kind(gold) != "text":
        return Verdict(0.0, pred, "unparsable")
    return Verdict(0.0, pred, "ok")


def _kind(answer: str) -> str:
    """The parsed kind of a normalised answer, "text" for a refused one."""
    try:
        return parse_node(answer).kind
    except Refused:
        return "text"


@register("math")
def verify(
    completion: str, answer: str, strategies: tuple[str, ...] = DEFAULT_STRATEGIES, truncated: bool = False
) -> Verdict:
    """1.0 when the completion's final answer is mathematically equal to the gold answer."""
    raw = find_answer(completion, strategies, truncated=truncated)
    if raw is None:
        return Verdict(0.0, None, "no_answer")
    pred = normalize(raw)
    try:
        return check(pred, normalize(gold_answer(str(answer))))
    except RecursionError:
        return Verdict(0.0, pred, "unparsable")
    except Exception:  # a bug must cost one item, not a run
        return Verdict(0.0, pred, "error")


@register("math_boxed")
def verify_boxed(completion: str, answer: str, truncated: bool = False) -> Verdict:
    """Like `math` but reads only a `\\boxed{}` answer (no phrase or last-number fallback): stricter format."""
    return verify(completion, answer, strategies=("boxed",), truncated=truncated)
