"""Answer extraction: find the span of a completion that holds its final answer.

Strategies, tried in order (each can be left out by passing `strategies=`):
- "boxed": the last `\\boxed{...}` / `\\fbox{...}` / `\\framebox{...}` (nested braces, or `\\boxed 5`);
- "final_answer": Minerva's "The final answer is X. I hope it is correct.";
- "answer_is": "the answer is X";
- "answer_colon": "Answer: X" (also "**Answer:** X");
- "last_number": the last number in the text (integer, decimal, a/b or \\frac{a}{b}).
Only the text after the last `</think>` is searched when there is one (the reasoning before it is a draft).
A span written in `$...$`, `\\(...\\)` or `\\[...\\]` is unwrapped.
"""

from __future__ import annotations

import re

DEFAULT_STRATEGIES = ("boxed", "final_answer", "answer_is", "answer_colon", "last_number")
BOX_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")
MAX_SPAN = 2000  # longer spans are cut (the parser refuses them anyway); bounds the work per item
MAX_BOXES = 20  # boxes tried from the end before giving up (bounds the work on hostile text)

_FINAL_RE = re.compile(r"final answer is\s*:?\s*", re.IGNORECASE)
_ANSWER_IS_RE = re.compile(r"\banswer is\s*:?\s*", re.IGNORECASE)
_ANSWER_COLON_RE = re.compile(r"\banswer\s*\**\s*:\s*\**\s*", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\\[dt]?frac\{-?\d+\}\{\d+\}|-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_BARE_BOX = re.compile(r"[^\s$]+")
_CLAUSE = re.compile(r",?\s+(?:because|since|which|where|as|so|when|for|given|with)\s.*$", re.IGNORECASE | re.S)
_REMARK = re.compile(r"\s+\([^()]*[a-zA-Z]{3,}[^()]*\)$")
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\s+I hope it is correct|\n")


def after_think(text: str) -> str:
    """The text after the last `</think>`, or the whole text when there is none."""
    cut = text.rfind("</think>")
    return text if cut < 0 else text[cut + len("</think>") :]


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at `text[start] == '{'` and the index after it, or None."""
    depth = 0
    i = start
    n = min(len(text), start + 10 * MAX_SPAN)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


_JOINER = re.compile(r"[\s$,]*(?:,|and|\\text\{\s*and\s*\}|\\quad)[\s$,]*")


def _between(text: str, pos: int) -> str:
    """The text between the box before `pos` and `pos` (empty match target when there is no earlier box)."""
    start = text.rfind("}", 0, pos)
    return text[start + 1 : pos] if start >= 0 and "\\boxed" in text[:start] else "x"


def last_boxed(text: str, _joined: int = 0) -> str | None:
    """The content of the last well-formed, non-empty `\\boxed{}` (or `\\fbox`, `\\framebox`, `\\boxed 5`)."""
    if "\\boxed" not in text and "\\fbox" not in text and "\\framebox" not in text:
        return None
    end = len(text)
    for _ in range(MAX_BOXES):
        pos, cmd = max((text.rfind(c, 0, end), c) for c in BOX_COMMANDS)
        if pos < 0:
            return None
        i = pos + len(cmd)
        while i < len(text) and text[i] in " \t":
            i += 1
        content = None
        if i < len(text) and text[i] == "{":
            got = _braced(text, i)
            content = got[0] if got else None
        elif i < len(text) and (text[i].isdigit() or (text[i].isalpha() and i > pos + len(cmd))):  # \boxed 5
            m = _BARE_BOX.match(text, i)
            content = m.group(0) if m else None
        if content is not None and content.strip():
            joins = _joined < 16 and _JOINER.fullmatch(_between(text, pos))
            earlier = last_boxed(text[:pos], _joined + 1) if joins else None
            return f"{earlier}, {content.strip()}" if earlier else content.strip()
        end = pos
    return None


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


def _span_after(text: str, start: int) -> str | None:
    """The answer written right after a cue phrase: a math span, a box, or the rest of the sentence."""
    rest = text[start : start + MAX_SPAN].lstrip(" *:")
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(left):
            close = rest.find(right, len(left))
            while close > 0 and rest[close - 1] == "\\" and left[0] == "$":  # an escaped \$ inside
                close = rest.find(right, close + 1)
            if close > 0:
                inner = rest[len(left) : close]
                return last_boxed(inner) or inner.strip() or None
    boxed = last_boxed(rest.split("\n", 1)[0])
    if boxed:
        return boxed
    m = _SENTENCE_END.search(rest)
    span = (rest[: m.start()] if m else rest).strip().rstrip(".,;:!*").strip()
    span = _CLAUSE.sub("", _REMARK.sub("", span))
    return unwrap_math(span) or None


def _after_phrase(text: str, pattern: re.Pattern[str]) -> str | None:
    """The answer after the last match of a cue phrase, or None."""
    last = None
    for last in pattern.finditer(text):
        pass
    return _span_after(text, last.end()) if last else None


def last_number(text: str) -> str | None:
    """The last number in the text (integer, decimal, a/b or \\frac{a}{b}), thousands separators kept."""
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    return last.group(0).rstrip(",") if last else None


EXTRACTORS = {
    "boxed": last_boxed,
    "final_answer": lambda t: _after_phrase(t, _FINAL_RE),
    "answer_is": lambda t: _after_phrase(t, _ANSWER_IS_RE),
    "answer_colon": lambda t: _after_phrase(t, _ANSWER_COLON_RE),
    "last_number": last_number,
}


def extract_answer(text: str, strategies: tuple[str, ...] = DEFAULT_STRATEGIES, think: bool = True) -> str | None:
    """The final answer of a completion by the first strategy that finds one, or None."""
    if think:
        text = after_think(text)
    for name in strategies:
        found = EXTRACTORS[name](text)
        if found:
            return found
    return None


def gold_answer(answer: str) -> str:
    """The final answer of a gold string: a MATH solution's last box, GSM8K's "#### x", or the string itself."""
    if "\\boxed" in answer or "\\fbox" in answer:
        boxed = last_boxed(answer)
        if boxed:
            return boxed
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip()
    return unwrap_math(answer)
