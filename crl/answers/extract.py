"""Answer extraction by position: the final answer is the last answer-bearing span of the completion.

Answer-bearing spans (found by `spans.py`) are boxes (`\\boxed{}`, `\\fbox{}`, `\\framebox{}`, `\\boxed 5`, and the box
tokens of other model families) and cue phrases ("The final answer is X", "the answer is X", "Answer: X", "A: X",
"# Answer" or "**Final Answer**" on a line of its own with X below, "#### X"). Whichever starts last is the final
answer, so a correction after an early box or an early "the answer is" wins. Boxes separated only by "and", commas
or a few label words ("$\\boxed{1}$ and $\\boxed{-2}$") are one answer, the list of their contents.
Policies:
- a final box that is cut off or never closed gives no answer, never an earlier box; a token box holding a sentence
  ("<answer>The answer is 5</answer>") is read like a completion;
- after a cue, the answer is the span that starts at the first math, number or plain-text arithmetic after the cue
  and runs to the end of that sentence, less what follows the answer (a clause "with ...", a correction ", not 42",
  a new statement "and the remainder is 3", a parenthetical in words): "The answer is 41, not 42." reads 41, "the
  point with coordinates (2, 3)" reads (2, 3). A justification ("because ...", "since ...", "which ...") is cut
  first and never searched. A subject before "is" is skipped ("The volume of $ABCD$ is 120." reads 120);
- a negated cue ("The answer is not 12.") gives no answer; a cue followed by no answer ("the answer is correct") does
  not count, and one followed by plain words only ("the answer is reasonable") does not override a box;
- only when the text has no box and no cue: the last closed math span or standalone number (see `spans.py`, which
  widens a number to the plain-text arithmetic around it), as whole tokens (never digits inside a word, never one
  entry of a tuple, matrix or inequality);
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

_REASON = re.compile(r",?\s(?:because|since|which|where|as|so that|when|given|for all|if)\s", re.IGNORECASE)
_AFTER = re.compile(  # what may follow an answer: a clause ("with ..."), a correction (", not 42"), a new statement
    r",?\s(?:with|not|but|rather than|instead of)\s|,?\s(?:and|so|then)\s(?=[A-Za-z]{2,})", re.IGNORECASE
)
_ANSWER_START = re.compile(
    r"[\d$\\(\[{\u221a\u03c0]|[-\u2212](?=[\d$\\(\u221a\u03c0])|(?<![A-Za-z])(?:sqrt|pi|infinity)(?![a-z])"
    r"|(?<![A-Za-z])[A-Za-z](?:_\{?\w{1,4}\}?)?\s?="
)
_SUBJECT_VERB = re.compile(r"\s(?:is|are|was|equals|is equal to|becomes)\s(?=\S)", re.IGNORECASE)
_NEGATED = re.compile(r"(?:not|never|no longer|neither)\b", re.IGNORECASE)
_WORD2 = re.compile(r"[A-Za-z]{2,}")
_WORD3 = re.compile(r"[a-zA-Z]{3,}")
_DIGIT = re.compile(r"\d")
_NOT_ANSWERS = {"correct", "incorrect", "wrong", "right", "that", "this", "as", "below", "above", "not", "clear",
                "given", "obvious", "simple", "straightforward", "yes", "no", "unclear", "unknown", "follows"}
MAX_SUBJECTS = 4  # "X is Y is Z": subjects skipped before the answer


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
    """Drop what follows an answer (a clause, a correction, a new statement) and a trailing parenthetical in words."""
    m = _AFTER.search(s)
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
    if not s:
        return None
    inner = unwrap_math(s)
    if inner != s and "$" not in inner:  # one math span, possibly wrapped over lines
        return inner or None
    spans = math_spans(s)
    if spans:
        gaps = [s[: spans[0].start], *(s[a.end : b.start] for a, b in zip(spans, spans[1:])), s[spans[-1].end :]]
        if all(g.strip(" .,;:!\"'") == "" or only_joins(g) for g in gaps[1:-1]) and not gaps[0].strip(" *\"'\\"):
            if not _DIGIT.search(gaps[-1]):
                return ", ".join(sp.content.strip() for sp in spans if sp.content and sp.content.strip()) or None
    reason = _REASON.search(s)  # a justification ("since 12 > 10") never holds the answer
    s = s[: reason.start()] if reason else s
    start = _ANSWER_START.search(s)
    if start is None:  # words only: a short one ("odd", "Navin", "C") is an answer, a judgement ("correct") is not
        words = _WORD2.findall(s)
        short = len(words) <= 3 and not (words and words[0].lower() in _NOT_ANSWERS)
        return s.strip() if short and s.strip() else None
    answer = _strip_remark(s[start.start() :])
    for _ in range(MAX_SUBJECTS):  # "The volume of $ABCD$ is 120": the subject is not the answer
        verb = _SUBJECT_VERB.search(answer)
        later = _ANSWER_START.search(answer, verb.end()) if verb else None
        if later is None:
            break
        answer = answer[later.start() :]
    return unwrap_math(answer.strip()) or None


def last_cue(text: str, kinds: tuple[str, ...]) -> Span | None:
    """The last cue phrase (of the enabled kinds) followed by an answer, as a Span from the cue to the answer end."""
    found = [m for m in CUE_RE.finditer(text) if _cue_kind(m.group(0)) in kinds]
    for m in reversed(found[-MAX_CUES:]):
        sentence, closed = sentence_after(text, m.end())
        if _NEGATED.match(sentence.strip(" *$")):  # "The answer is not 12.": a final statement with no answer
            return Span(m.start(), m.end() + len(sentence), None, "cue", closed=closed)
        answer = cue_answer(sentence)
        if answer:
            return Span(m.start(), m.end() + len(sentence), answer, "cue", closed=closed)
    return None


def _wordy(answer: str) -> bool:
    """An answer of plain words ("reasonable", "odd"): it does not override a box ("the answer is reasonable")."""
    return not _DIGIT.search(answer) and "\\" not in answer and "$" not in answer


def _cue_kind(phrase: str) -> str:
    low = phrase.lower().strip()
    if low == "####":
        return "hashes"
    low = low.strip(" \t*#>-:")
    if low.startswith("final"):
        return "final_answer"
    return "answer_is" if low.endswith("is") else "answer_colon"


def final_span(text: str, strategies: tuple[str, ...] = DEFAULT_STRATEGIES) -> Span | None:
    """The final answer-bearing span by position (see module docstring); its content is None when cut off."""
    candidates: list[Span] = []
    if "boxed" in strategies:
        box = joined_boxes(text, boxes(text))
        if box is not None and box.kind == "tag" and box.content is not None:  # a token box may hold a sentence
            inner = final_span(box.content, tuple(k for k in strategies if k != "last_number"))
            box = Span(box.start, box.end, inner.content if inner else box.content, "tag", box.closed)
        if box is not None:
            candidates.append(box)
    cue = last_cue(text, strategies)
    if cue is not None and candidates and candidates[0].start <= cue.start < candidates[0].end:
        cue = None  # a cue inside the box ("<answer>The answer is 5</answer>") was read with the box
    if cue is not None and (cue.content is None or not (candidates and _wordy(cue.content))):
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
