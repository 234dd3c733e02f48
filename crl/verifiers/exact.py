"""The `exact` verifier: the extracted answer must equal the gold string, up to surrounding space and `$`.

For tasks whose answers are strings (names, codes, labels) where any mathematical reading would be wrong.
Inner whitespace runs count as one space; case matters.
"""

from __future__ import annotations

from crl.verifiers import Verdict, register
from crl.answers.extract import extract_answer, gold_answer, unwrap_math


def _squash(s: str) -> str:
    return " ".join(unwrap_math(s).split())


@register("exact")
def verify(completion: str, answer: str) -> Verdict:
    """1.0 when the final answer equals the gold answer string exactly."""
    raw = extract_answer(completion, ("boxed", "final_answer", "answer_is", "answer_colon"))
    if raw is None:
        stripped = completion.strip()
        raw = stripped.splitlines()[-1] if stripped else None
    if raw is None:
        return Verdict(0.0, None, "no_answer")
    pred = _squash(raw)
    return Verdict(float(pred == _squash(gold_answer(str(answer)))), pred, "ok")
