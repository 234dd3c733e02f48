"""Answer extraction by position: the final answer is the last answer-bearing span of the completion.

Answer-bearing spans (found by `spans.py`) are boxes (`\\boxed{}`, `\\fbox{}`, `\\framebox{}`, `\\boxed 5`) and
cue phrases ("The final answer is X", "the answer is X", "Answer: X", "#### X"). Whichever starts last is the final
answer, so a correction after an early box or an early "the answer is" wins. Boxes separated only by "and", commas
or a few label words ("$\\boxed{1}$ and $\\boxed{-2}$") are one answer, the list of their contents.
Policies:
- a final box that is cut off or never closed gives no answer, never an earlier box;
- a cue followed by a sentence of words ("The volume of $ABCD$ is 120.") reads the last math span or standalone
  number of that sentence; a cue followed by no answer ("the answer is correct") does not count, and one followed
  by plain words only ("the answer is reasonable") does not override a box;
- only when the text has no box and no cue: the last closed math span or standalone number (see `spans.py`), as
  whole tokens (never digits inside a word, never one entry of a tuple, matrix or inequality);
- only the text after the last `</think>` is read; a `<think>` never closed means the reasoning was cut off and
  there is no answer;
- `truncated=True` (the completion was stopped by the length limit): the final answer counts only when it is
  complete, i.e. closed by a brace, a math delimiter or a sentence end rather than by the end of the text.
"""

from __future__ import annotations

import re

from crl.answers.spans import (
    CUE_RE,
    Span,
    boxes,
    joined_boxes,
    last_number_span,
    math_spans,
    only_joins,
    sentence_after,
)

DEFAULT_STRATEGIES = ("boxed", "final_answer", "answer_is", "answer_colon", "hashes", "last_number")
MAX_CUES = 16  # cue phrases tried from the end (bounds the work on hostile text)

_CLAUSE = re.compile(r",?\s(?:because|since|which|where|as|so that|when|given|with|for all|if)\s", re.IGNORECASE)
_WORD2 = re.compile(r"[A-Za-z]{2,}")
_WORD3 = re.compile(r"[a-zA-Z]{3,}")
_DIGIT = re.compile(r"\d")
_COMMAND = re.compile(r"\\[a-zA-Z]+")
_NOT_ANSWERS = {"correct", "incorrect", "wrong", "right", "that", "this", "as", "below", "above", "not", "clear",
                "given", "obvious", "simple", "straightforward", "yes", "no", "unclear", "unknown", "follows"}


def after_think(text: str) -> str:
    """The text after the last `</think>`; empty when a `<think>` is never closed; else the whole text."""
    cut = text.rfind("</think>")
    if cut >= 0:
        return text[cut + len("</think>") :]
    return "" if "<think>" in text else text


def unwrap_math(span: str) -> str:
    """Strip one pair of surrounding `$...$`, `$$...$$`, `\\(...\\)` or `\\[...\\]` (repeatedly)."""
    s = span.strip()
    while True:
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left) : len(s) - len(right)].strip()
                break
        else:
            return s


def _strip_remark(s: str) -> str:
    """Drop a trailing clause ("because ...") and a trailing parenthetical remark with words."""
    m = _CLAUSE.search(s)
    if m:
        s = s[: m.start()]
    s = s.rstrip(" .,;:!")
    if s.endswith(")"):
        depth = 0
        for i in range(len(s) - 1, -1, -1):
            depth += (s[i] == ")") - (s[i] == "(")
            if depth == 0:
                if _WORD3.search(s[i:]) and i > 0:
                    s = s[:i].rstrip()
                break
    return s


def cue_answer(sentence: str) -> str | None:
    """The answer in the sentence after a cue phrase, or None when the sentence holds no answer."""
    s = sentence.strip().rstrip(".,;:!*").strip()
    inner = unwrap_math(s)
    if inner != s and "$" not in inner:  # one math span, possibly wrapped over lines
        return inner or None
    if not s:
        return None
    spans = math_spans(s)
    if spans:
        gaps = [s[: spans[0].start], *(s[a.end : b.start] for a, b in zip(spans, spans[1:])), s[spans[-1].end :]]
        if all(g.strip(" .,;:!\"'") == "" or only_joins(g) for g in gaps[1:-1]) and not gaps[0].strip(" *\"'\\"):
            if not _DIGIT.search(gaps[-1]):
                return ", ".join(sp.content.strip() for sp in spans if sp.content and sp.content.strip()) or None
    s = _strip_remark(s)
    outside = s
    for sp in reversed(spans):
        outside = outside[: sp.start] + " " + outside[sp.end :]
    words = _WORD2.findall(_COMMAND.sub(" ", outside))
    if not words:
        return unwrap_math(s) or None
    if not _DIGIT.search(s) and not spans:
        short = len(words) <= 3 and words[0].lower() not in _NOT_ANSWERS
        return s if short else None
    last_math = spans[-1] if spans else None
    number = last_number_span(s)
    if last_math is not None and (number is None or last_math.end >= number.start):
        return last_math.content
    return number.content if number else None


def last_cue(text: str, kinds: tuple[str, ...]) -> Span | None:
    """The last cue phrase (of the enabled kinds) followed by an answer, as a Span from the cue to the answer end."""
    found = [m for m in CUE_RE.finditer(text) if _cue_kind(m.group(0)) in kinds]
    for m in reversed(found[-MAX_CUES:]):
        sentence, closed = sentence_after(text, m.end())
        answer = cue_answer(sentence)
        if answer:
            return Span(m.start(), m.end() + len(sentence), answer, "cue", closed=closed)
    return None


def _wordy(answer: str) -> bool:
    """An answer of plain words ("reasonable", "odd"): it does not override a box ("the answer is reasonable")."""
    return not _DIGIT.search(answer) and "\\" not in answer and "$" not in answer


def _cue_kind(phrase: str) -> str:
    low = phrase.lower()
    if low.startswith("final"):
        return "final_answer"
    if low == "####":
        return "hashes"
    return "answer_is" if low.endswith("is") else "answer_colon"


def final_span(text: str, strategies: tuple[str, ...] = DEFAULT_STRATEGIES) -> Span | None:
    """The final answer-bearing span by position (see module docstring); its content is None when cut off."""
    candidates: list[Span] = []
    if "boxed" in strategies:
        box = joined_boxes(text, boxes(text))
        if box is not None:
            candidates.append(box)
    cue = last_cue(text, strategies)
    if cue is not None and cue.content and not (candidates and _wordy(cue.content)):
        candidates.append(cue)
    if candidates:
        return max(candidates, key=lambda sp: sp.start)
    if "last_number" not in strategies:
        return None
    maths = [sp for sp in math_spans(text) if sp.content and sp.content.strip()]
    number = last_number_span(text)
    if maths and (number is None or maths[-1].end >= number.start):
        return maths[-1]
    return number


def find_answer(
    text: str, strategies: tuple[str, ...] = DEFAULT_STRATEGIES, think: bool = True, truncated: bool = False
) -> str | None:
    """The final answer of a completion, or None (no answer, a cut-off final box, an incomplete truncated one)."""
    if think:
        text = after_think(text)
    span = final_span(text, strategies)
    if span is None or span.content is None or (truncated and not span.closed):
        return None
    return span.content.strip() or None


def extract_answer(text: str, strategies: tuple[str, ...] = DEFAULT_STRATEGIES, think: bool = True) -> str | None:
    """The final answer of a completion by position, or None (kept for callers of the old name)."""
    return find_answer(text, strategies, think)


def last_boxed(text: str) -> str | None:
    """The content of the final box (joined with adjacent boxes), or None when there is none or it is cut off."""
    span = joined_boxes(text, boxes(text))
    return None if span is None or span.content is None else span.content.strip() or None


def last_number(text: str) -> str | None:
    """The last standalone number (or the tuple it sits in), thousands separators kept."""
    span = last_number_span(text)
    return None if span is None else span.content


def gold_answer(answer: str) -> str:
    """The final answer of a gold string: a solution's last box, GSM8K's "#### x", a cue phrase, or the string."""
    if "\\boxed" in answer or "\\fbox" in answer:
        boxed = last_boxed(answer)
        if boxed:
            return boxed
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip()
    if len(answer) > 200 and CUE_RE.search(answer):  # a worked solution, not a long expression
        found = find_answer(answer, think=False)
        if found:
            return found
    return unwrap_math(answer)
