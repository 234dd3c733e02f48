"""The `gsm8k` verifier: numeric answers, gold written as "... #### 18" or "18".

The prediction is the number after the completion's last "####", else its last `\\boxed{}`, else after "the
answer is", else its last number; dollar signs, units and thousands separators are ignored. Numbers compare
exactly (18 == 18.00), decimals within the tolerance of `equivalence.numbers_equal`.
"""

from __future__ import annotations

import re
from fractions import Fraction

from crl.verifiers import Verdict, register
from crl.answers.equivalence import numbers_equal
from crl.answers.extract import after_think, extract_answer, last_number
from crl.answers.normalize import text_key

_DIGITS = re.compile(r"\d+")


def to_number(text: str) -> Fraction | None:
    """The last number in a span as a Fraction ("$1,234.50" -> 123450/100), or None."""
    found = last_number(text.replace("$", " ").replace("\\!", ""))
    if not found:
        return None
    found = found.replace(",", "")
    if found.startswith(("\\", "-\\")):
        m = _DIGITS.findall(found)
        value = Fraction(int(m[0]), int(m[1]))
        return -value if found.startswith("-") else value
    try:
        return Fraction(found)
    except (ValueError, ZeroDivisionError):
        return None


@register("gsm8k")
def verify(completion: str, answer: str) -> Verdict:
    """1.0 when the completion's final number equals the gold number."""
    text = after_think(completion)
    span = text.rsplit("####", 1)[1] if "####" in text else extract_answer(text, think=False)
    if span is None:
        return Verdict(0.0, None, "no_answer")
    gold_text = str(answer).rsplit("####", 1)[-1].strip()
    pred, gold = to_number(span), to_number(gold_text)
    shown = span.strip()[:200]
    if gold is None:  # a non-numeric gold: compare as text
        return Verdict(float(text_key(span) == text_key(gold_text)), shown, "ok")
    if pred is None:
        return Verdict(0.0, shown, "unparsable")
    approx = "." in span or "." in gold_text
    return Verdict(float(numbers_equal(pred, gold, approx)), str(pred) if pred.denominator != 1 else str(pred.numerator), "ok")
