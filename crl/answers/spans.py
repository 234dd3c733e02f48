"""Scanners that find answer-bearing spans in a completion, each with its position and whether it is complete.

Three kinds, all found in one linear pass each (no regular expression here can backtrack on model text):
- boxes: `\\boxed{...}`, `\\fbox{...}`, `\\framebox{...}` (nested braces) and `\\boxed 5`, and the box tokens other model
  families write (`<|begin_of_box|>...<|end_of_box|>`, `<answer>...</answer>`); a box that never closes is kept as a
  cut-off span (content None), so that it, and not an earlier box, is the final one;
- cue phrases: "final answer is", "the answer is", and an answer cue opening a line, with or without a colon, also
  as a heading on a line of its own ("Answer:", "Final Answer:", "A:", "# Answer", "**Final Answer**", "####"), each
  with the sentence or math span after it (on the next lines for a heading); "we may check our answer: ..." is not a cue;
- fallback spans: closed math spans (`$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]`) and standalone numbers.
A standalone number is a whole token: not digits inside a word (`crl_pwned2`), an exponent or a subscript; a number
inside a closed bracket group on its line stands for the whole group (a tuple or interval); a number that is part
of an inequality or a matrix row stands for nothing; a number inside plain-text arithmetic stands for the whole
expression ("12*pi", "sqrt(2)/2", "3 + 2√2", "80 × 5"), so that plain-text math is read as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crl.answers.normalize import UNITS

MAX_SPAN = 2000  # characters read after a cue phrase; longer answers are refused downstream anyway
MAX_RUN = 16  # operations read around a number in plain-text arithmetic
MAX_ARGUMENT_DEPTH = 4  # nested LaTeX arguments climbed to find the bracket group around a number

BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![a-zA-Z])")
BOX_TOKENS = (("<|begin_of_box|>", "<|end_of_box|>"), ("<answer>", "</answer>"))  # GLM's box tokens; answer tags
CUE_RE = re.compile(
    r"final answer is|\banswer is|final answer\s?\**\s?:|(?:^|\n)[ \t*#>-]{0,8}answer\s?\**\s?:"
    r"|(?:^|\n)[ \t]{0,4}(?:#{1,6}[ \t]{0,4}|\*\*)?(?:final answer|answer)(?:\*\*)?[ \t]{0,4}(?=\n)"
    r"|(?:^|\n)(?-i:A):[ \t]|####",
    re.IGNORECASE,
)
_MATH_DELIM = re.compile(r"(?<!\\)(?:\$\$|\$)|\\\(|\\\)|\\\[|\\\]")
_CLOSERS = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
NUMBER_RE = re.compile(
    r"(?<![\w.^_\\])-?(?:\\[dt]?frac\{-?\d+\}\{\d+\}|\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?: \d{3})+(?!\d|[.,]\d)"
    r"|\d+,\d+|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)(?![\d_^]|\.\d|,\d)"
)
_OPERAND = r"(?:\d+(?:\.\d+)?(?:\s?[\u03c0\u221a]\s?\d*)?(?![\d.])|\u03c0|pi\b|\u221a\s?\d+|sqrt\(\d+\))"
_OPERATOR = r"\s?[*/^\u00d7\u00f7\u00b7+\u2212-]\s?"
_RUN_RIGHT = re.compile(_OPERATOR + _OPERAND + r"|\s?(?:\u03c0|pi\b)")  # one more operation, or a glued pi
_RUN_LEFT = re.compile(r"(?<![\w.])" + _OPERAND + _OPERATOR + r"$|(?<![\w.])(?:\d+(?:\.\d+)?\s?)?\u221a\s?$|sqrt\($")
_RELATION = r"(?:<|>|\\le|\\ge|\\lt|\\gt|\\neq|\\ne|\u2264|\u2265|&|\\\\)"
_RELATION_BEFORE = re.compile(_RELATION + r"[ {]*$")
_RELATION_AFTER = re.compile(r"(?<![ }])[ }]*" + _RELATION)
_LETTERS = re.compile(r"[A-Za-z]+")
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n|\bI hope it is correct", re.IGNORECASE)
_GAP_MARKUP = re.compile(r"\\text\{([^{}]{0,40})\}|\\quad|\\qquad|\\,|\\;|~|\\\(|\\\)|\\\[|\\\]|\$")
_STOP = re.compile(r"[.!?](?:\s|$)")
_GAP_TOKEN = re.compile(r"[A-Za-z_0-9{}]+|[,;&=]")
_JOINER_WORDS = {"and", "or", ",", ";", "&"}
_PROSE_WORDS = {"then", "we", "see", "so", "thus", "but", "no", "not", "get", "have", "is", "are", "was", "were",
                "hence", "therefore", "wait", "check", "also", "which", "that", "first", "actually", "it", "i",
                "answer", "instead", "correct", "wrong", "let", "me", "again", "now", "maybe", "perhaps", "final"}


@dataclass(frozen=True, slots=True)
class Span:
    """An answer-bearing span: where it starts and ends, its answer text (None when cut off) and its kind."""

    start: int
    end: int
    content: str | None
    kind: str  # "box" | "tag" (a token box) | "cue" | "math" | "number"
    closed: bool = True  # False when the text ends inside or right at the end of the span (it may be cut off)


def closing_brace(text: str, start: int) -> int | None:
    """The index of the `}` closing the group that opens at `text[start] == '{'`, or None when it never closes."""
    depth = 0
    i, n = start, len(text)
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
                return i
        i += 1
    return None


def boxes(text: str) -> list[Span]:
    """The top-level boxes of every kind in order; a final box that never closes is a Span with content None."""
    found = _latex_boxes(text) + _token_boxes(text)
    found.sort(key=lambda sp: sp.start)
    out: list[Span] = []
    for sp in found:
        if not out or sp.start >= out[-1].end:  # not inside the previous box
            out.append(sp)
    return out


def _latex_boxes(text: str) -> list[Span]:
    """`\\boxed{...}`, `\\fbox{...}`, `\\framebox{...}` and `\\boxed 5`, top level, in order."""
    out: list[Span] = []
    pos = 0
    for m in BOX_RE.finditer(text):
        if m.start() < pos:
            continue  # a box inside the previous box's content
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i >= len(text):
            out.append(Span(m.start(), len(text), None, "box", closed=False))
            break
        if text[i] == "{":
            close = closing_brace(text, i)
            if close is None:
                out.append(Span(m.start(), len(text), None, "box", closed=False))
                break
            out.append(Span(m.start(), close + 1, text[i + 1 : close], "box"))
            pos = close + 1
        elif (i > m.end() or text[i].isdigit()) and not text[i].isspace() and text[i] not in "$\\":  # `\boxed 5`
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in "$,;":
                j += 1
            out.append(Span(m.start(), j, text[i:j].rstrip("."), "box", closed=j < len(text)))
            pos = j
    return out


def _token_boxes(text: str) -> list[Span]:
    """Boxes written with opening and closing tokens (`BOX_TOKENS`), kind "tag": their content may be a sentence."""
    out: list[Span] = []
    for left, right in BOX_TOKENS:
        pos = text.find(left)
        while pos >= 0:
            close = text.find(right, pos + len(left))
            if close < 0:
                out.append(Span(pos, len(text), None, "tag", closed=False))
                break
            out.append(Span(pos, close + len(right), text[pos + len(left) : close], "tag"))
            pos = text.find(left, close + len(right))
    return out


def math_spans(text: str) -> list[Span]:
    """Closed math spans in order; inline ones (`$`, `\\(`) do not cross a line break, display ones may."""
    out: list[Span] = []
    opener: re.Match[str] | None = None
    for m in _MATH_DELIM.finditer(text):
        tok = m.group(0)
        if opener is None:
            if tok in _CLOSERS:
                opener = m
            continue
        want = _CLOSERS[opener.group(0)]
        if tok == want:
            inner = text[opener.end() : m.start()]
            if opener.group(0) in ("$", "\\(") and "\n" in inner:
                opener = m if tok == "$" else None  # not a span: this `$` may open the next one
                continue
            out.append(Span(opener.start(), m.end(), inner, "math"))
            opener = None
        elif tok in _CLOSERS and tok != "$" and opener.group(0) == "$":
            opener = m  # a stray `$` before a display opener
    return out


def _bracket_group(line: str, at: int) -> tuple[int, int] | None:
    """The innermost bracket group of `line` that contains position `at` and closes on the line, or None."""
    depth, start = 0, -1
    for i in range(at - 1, -1, -1):
        c = line[i]
        if c in ")]}":
            depth += 1
        elif c in "([{":
            if depth == 0:
                start = i
                break
            depth -= 1
    if start < 0 or (start > 0 and line[start - 1] == "\\" and line[start] != "{"):
        return None
    depth = 0
    for i in range(start, len(line)):
        c = line[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return (start, i + 1) if i + 1 > at else None
    return None


def last_number_span(text: str) -> Span | None:
    """The last standalone number, or the closed tuple/interval it sits in; None if it is part of a relation."""
    last = None
    for last in NUMBER_RE.finditer(text):
        pass
    if last is None:
        return None
    glued = _LETTERS.match(text, last.end())
    if glued and glued.group(0) not in UNITS:
        return None  # digits at the start of a word ("2nd", "3x"): not a standalone number
    line_start = text.rfind("\n", 0, last.start()) + 1
    line_end = text.find("\n", last.end())
    line_end = len(text) if line_end < 0 else line_end
    line = text[line_start:line_end]
    at = last.start() - line_start
    before, after = line[max(0, at - 8) : at], line[at + len(last.group(0)) : at + len(last.group(0)) + 8]
    if _RELATION_BEFORE.search(before) or (_RELATION_AFTER.match(after) and not after.lstrip().startswith("<|")):
        return None
    group = _bracket_group(line, at)
    for _ in range(MAX_ARGUMENT_DEPTH):  # a LaTeX argument ("\\frac{\\pi}{2}"): the group around the command counts
        if group is None or line[group[0]] != "{":
            break
        group = _bracket_group(line, group[0])
    if group is not None and line[group[0]] in "([" and "," in line[group[0] : group[1]]:
        s, e = group
        return Span(line_start + s, line_start + e, line[s:e], "number")
    if group is not None and line[group[0]] in "([" and line[group[0] - 1 : group[0]].isalpha():
        return None  # an argument, as in f(3)
    start, end = plain_run(text, last.start(), last.end())
    return Span(start, end, text[start:end], "number", closed=bool(text[end:].strip()))


def plain_run(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen the number at text[start:end] to the plain-text arithmetic around it ("12*pi", "sqrt(2)/2", "3 + 2√2"),
    one operation at a time (at most `MAX_RUN`), each step a bounded match."""
    for _ in range(MAX_RUN):
        m = _RUN_RIGHT.match(text, end)
        if m is None:
            break
        end = m.end()
    if text[end : end + 1] == ")" and text[max(0, start - 5) : start] == "sqrt(":
        end += 1
    for _ in range(MAX_RUN):
        m = _RUN_LEFT.search(text, max(0, start - 40), start)
        if m is None:
            break
        start = m.start()
    return start, end


def only_joins(gap: str) -> bool:
    """Whether the text between two answers only joins them: commas, "and"/"or", spacing, at most 4 label words."""
    if len(gap) > 80:
        return False
    words = _GAP_MARKUP.sub(r" \1 ", gap)
    if _STOP.search(words):
        return False
    tokens = _GAP_TOKEN.findall(words)
    joiners = [t for t in tokens if t.lower() in _JOINER_WORDS]
    if any(t.lower() in _PROSE_WORDS for t in tokens):
        return False
    return (not tokens) or (0 < len(joiners) <= 2 and len(tokens) - len(joiners) <= 4)


def joined_boxes(text: str, found: list[Span]) -> Span | None:
    """The last box, joined with the boxes right before it when only "and"/commas separate them."""
    if not found or found[-1].content is None:
        return found[-1] if found else None
    k = len(found) - 1
    while k > 0 and found[k - 1].content is not None and len(found) - k < 64:
        if not only_joins(text[found[k - 1].end : found[k].start]):
            break
        k -= 1
    contents = [b.content.strip() for b in found[k:] if b.content is not None and b.content.strip()]
    if not contents:
        return None
    return Span(found[k].start, found[-1].end, ", ".join(contents), found[-1].kind if k == len(found) - 1 else "box")


def _closer(text: str, right: str, start: int) -> int:
    """The index of the first `right` at or after `start` that is not an escaped `\\$`, or -1."""
    close = text.find(right, start)
    while close > 0 and right == "$" and text[close - 1] == "\\":
        close = text.find(right, close + 1)
    return close


def sentence_after(text: str, start: int) -> tuple[str, bool]:
    """The sentence (or display math) right after a cue phrase, and whether a terminator closes it."""
    rest = text[start : start + MAX_SPAN]
    lead = len(rest) - len(rest.lstrip(" *:\t\"'\u201c"))
    if rest[lead : lead + 1] == "\n":  # a cue on a line of its own (a heading): the answer is on the next lines
        lead = len(rest) - len(rest.lstrip(" *:\t\n\"'\u201c"))
    rest = rest[lead:]
    for left, right in (("$$", "$$"), ("\\[", "\\]"), ("$", "$"), ("\\(", "\\)")):
        if rest.startswith(left):
            close = _closer(rest, right, len(left))
            if close > 0 and (left in ("$$", "\\[") or "\n" in rest[:close]):  # inline math after a cue may wrap
                return rest[: close + len(right)], True
            break
    depth, i = 0, 0
    while i < len(rest):
        c = rest[i]
        if c == "\\":
            i += 2
            continue
        depth += (c in "{") - (c in "}")
        if depth <= 0:
            m = _SENTENCE_END.match(rest, i)
            if m:
                return rest[:i], True
        i += 1
    return rest, False
