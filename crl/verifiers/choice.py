"""The `choice` verifier: multiple-choice letters (A-J), gold "C", "(C)", "\\text{(C)}" or "C) 12".

The predicted letter comes from the final answer span (box, "the answer is", "Answer:"), else the last "(X)"
in the text, else "option X" / "choice X". Case-insensitive inside a box or answer span, upper case elsewhere.
"""

from __future__ import annotations

import re

from crl.verifiers import Verdict, register
from crl.answers.extract import after_think, extract_answer
from crl.answers.normalize import normalize

_LETTER = re.compile(r"(?<![A-Za-z\\])\(?([A-Ja-j])\)?(?![A-Za-z])")
_PAREN = re.compile(r"\(([A-J])\)")
_OPTION = re.compile(r"\b(?:option|choice)\s+\(?([A-J])\b", re.IGNORECASE)


def letter(span: str) -> str | None:
    """The first choice letter in a short answer span, upper case, or None."""
    m = _LETTER.search(normalize(span))
    return m.group(1).upper() if m else None


@register("choice")
def verify(completion: str, answer: str) -> Verdict:
    """1.0 when the chosen letter equals the gold letter."""
    gold = letter(str(answer))
    text = after_think(completion)
    span = extract_answer(text, ("boxed", "final_answer", "answer_is", "answer_colon"), think=False)
    pred = letter(span) if span else None
    if pred is None:
        found = _PAREN.findall(text) or _OPTION.findall(text)
        pred = found[-1].upper() if found else None
    if pred is None:
        return Verdict(0.0, None, "no_answer" if span is None else "unparsable")
    return Verdict(float(pred == gold), pred, "ok")
