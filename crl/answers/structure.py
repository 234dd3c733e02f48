"""The structure of a normalised answer: a tree of `Node`s (numbers, expressions, lists, tuples, equations, ...).

Reading rules, from the loosest binding to the tightest:
- several answers: top-level ";", "and", "or" (also glued, "(1,2)or(2,1)") and "," separate the items of a list;
  a group of assignments to distinct names ("x = 5, y = 2", "p=5,q=2") is one tuple of their values, labelled;
  "n = 1, 2, 3" is the list 1, 2, 3;
- `a \\approx b`: the exact part a is the answer; b is kept as an alternative only when it is a rounding of a at its
  written precision (so "3/7 \\approx 0.43" equals 3/7 and 0.43, "1/3 \\approx 11" only 1/3);
- "=" chains: "1+2=3", "x = 5+5+1 = 11" and a computation the parser cannot read followed by "= number" read as
  their last side; "NAME = value" is an assignment whose value is the answer, where NAME is a label (a letter
  with subscripts or primes, a run of capitals as in "AB", a Greek letter and a letter as in "\\Delta p", a
  subscript command as in "I_{\\max}", a function of up to four variables "f(x)", "f(x,y)", "|AB|", a fraction or
  ratio of labels, a tuple of labels "(p,q)"); anything else is an equation;
- relations ("x > 3", "-x > -1", "1 \\le |z| \\le 3/2") and `\\in`, unions, `\\mathbb R`: sets (see `relations.py`);
- "a:b" ratios and times (parts compared in order); `\\pm` (the list of both signs); `\\{...\\}` sets; brackets:
  tuples and intervals; matrices; a plain `{...}` group is only grouping;
- everything else is one expression (`latex.py`), or text when it is not math.

Arithmetic left undone, one rule for every operator: `undone_arithmetic` tells any expression of number literals
alone (a sum, product, quotient, power, root or factorial: "9+4", "3 \\times 5", "\\frac{26}{2}", "2^{3}",
"\\sqrt{25}", "5!") whose value is a rational number from a number written in one of its usual forms: an integer,
a decimal, a fraction in lowest terms, a mixed number, a percentage, scientific notation ("2.5 \\times 10^{3}",
"10^{6}"); an exact irrational ("2\\sqrt{2}", "\\sqrt{17}") has no plainer form and is not undone. Against a gold that is a
plain number, the math verifier does not credit it: a final answer does the arithmetic, and a policy trained on
arithmetic otherwise learns to box the question ("\\boxed{9+4}" for 13). An "=" chain that ends in the number
("80 + 5 = 85") has done it.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache
from math import gcd

import sympy as sp

from crl.answers.latex import parse_math
from crl.answers.latex_tokens import GREEK, MAX_CHARS, NotMath, Refused
from crl.answers.normalize import text_key
from crl.answers.nodes import REL_RE, Node
from crl.answers.numeric import value_at
from crl.answers.relations import interval_to_infinity, parse_relation, parse_set_like

MAX_ITEMS = 64
NUMBER_RE = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,4})?%?$")
FRACTION_RE = re.compile(r"^(-?)(?:\\frac\{(-?\d+)\}\{(\d+)\}|(\d+)/(\d+))$")
_GREEK = "|".join(sorted(GREEK, key=len, reverse=True))
_ATOM = (
    rf"(?:[A-Za-z]{{1,4}}|\\(?:{_GREEK})(?![a-zA-Z])(?: ?[A-Za-z](?![A-Za-z]))?|\\[a-zA-Z]+)"
    r"(?:_\{?\\?[A-Za-z0-9]{1,8}\}?)?'*(?:\([A-Za-z](?:, ?[A-Za-z]){0,3}\))?"
)
LABEL_RE = re.compile(
    rf"^(?:{_ATOM}|\|{_ATOM}\||\\frac\{{{_ATOM}\}}\{{{_ATOM}\}}|{_ATOM}:{_ATOM}|\(\s*{_ATOM}(?:\s*,\s*{_ATOM})+\s*\))$"
)
_GROUP_SPLIT = re.compile(r"(?<!\s)\s+(?:and|or)\s+|(?<=[)\]}])\s*(?:and|or)\s*(?=[(\[{\\])")
_MATRIX_RE = re.compile(r"^\\begin\{([pbBvV]?matrix|array)\}(?:\{[lcr|]*\})?(.*)\\end\{\1\}$", re.S)
_SPACE = re.compile(r"\s")
_IN = re.compile(r"\\in(?![a-zA-Z])")
_LITERAL_OPS = re.compile(r"\\(?:times|cdot|div|d?frac|tfrac|sqrt|left|right)(?![a-zA-Z])")
_LITERAL_ARITHMETIC = re.compile(r"^[\d\s.+\-*/^(){}\[\]!]+$")
_LITERAL = re.compile(r"\d+(?:\.\d+)?")
_NUMBER_FORMS = re.compile(  # matched without spaces
    r"^-?\d+\\frac\{\d+\}\{\d+\}$"  # mixed number 3\frac{1}{2} ("3 1/2" loses its space: one fraction)
    r"|^-?(?:\d+(?:\.\d+)?(?:\\times|\\cdot|\*))?10\^\{?-?\d+\}?$"  # 2.5\times10^{3}, 10^6
)
_REALS = {"mathbbr", "allrealnumbers", "allreals", "reals", "realnumbers", "(-infty,infty)", "(-infty,+infty)"}


def split_top(s: str, seps: str = ",;") -> list[str]:
    """Split at separators outside (), [], {} (escaped braces count too); parts stripped."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c in seps and depth == 0 and not (c == "," and s[i - 1 : i] == "{"):
            parts.append(s[start:i].strip())
            start = i + 1
    parts.append(s[start:].strip())
    return parts


def split_word(s: str, word: str) -> list[str]:
    """Split at a multi-character separator (e.g. "\\approx") outside brackets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        depth += (c in "([{") - (c in ")]}")
        if depth == 0 and s.startswith(word, i):
            parts.append(s[start:i].strip())
            i = start = i + len(word)
            continue
        i += 1
    parts.append(s[start:].strip())
    return parts


def encloses(s: str) -> bool:
    """True when the bracket opening at s[0] closes at s[-1] (so s is one bracketed group)."""
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


def is_label(s: str) -> bool:
    """Whether s names a quantity ("x", "a_{37}", "AB", "f(x)", "|AB|", "\\frac{NO}{BO}", "(p,q)")."""
    s = s.strip()
    return bool(LABEL_RE.match(s)) and not NUMBER_RE.match(s) and s not in ("\\pi", "\\infty", "e", "i")


def _number(s: str) -> Node | None:
    """A plain number (integer, decimal, scientific, a/b, \\frac{a}{b}, optional %) as an exact Fraction."""
    if NUMBER_RE.match(s):
        pct = s.endswith("%")
        body = s[:-1] if pct else s
        return Node("num", Fraction(body), s, approx="." in body or "e" in body.lower(), pct=pct)
    m = FRACTION_RE.match(s)
    if m:
        sign, a, b, c, d = m.groups()
        num, den = (int(a), int(b)) if a is not None else (int(c), int(d))
        if den == 0:
            return None
        return Node("num", Fraction(-num if sign else num, den), s)
    return None


def undone_arithmetic(s: str) -> bool:
    """Whether s is arithmetic on number literals still to be done ("9+4", "2 \\cdot 3", "\\frac{26}{2}", "5!",
    "\\sqrt{25}", "2^8"), not a number written in one of its usual forms (see the module docstring)."""
    s = _SPACE.sub("", s)
    while len(s) > 1 and s[0] in "({" and encloses(s):
        s = s[1:-1]
    m = FRACTION_RE.match(s)
    if m:
        _, a, b, c, d = m.groups()
        num, den = (int(a), int(b)) if a is not None else (int(c), int(d))
        return den == 1 or gcd(num, den) != 1  # a fraction not in lowest terms still has a division to do
    if _number(s) is not None or _NUMBER_FORMS.match(s):
        return False
    if not (_LITERAL_ARITHMETIC.match(_LITERAL_OPS.sub(" ", s)) and _LITERAL.search(s)):
        return False
    try:  # an exact irrational ("2\\sqrt{2}") has no plainer form; one with a rational value ("\\sqrt{25}") does
        return bool(parse_math(s)[0].is_Rational)
    except (NotMath, Refused):
        return True


def is_number(s: str) -> bool:
    """Whether s is one plain number (integer, decimal, scientific, a/b, \\frac{a}{b}, optional %)."""
    return _number(s.strip()) is not None


def _items(parts: list[str]) -> list[Node]:
    return [parse_node(p) for p in parts[:MAX_ITEMS] if p]


def _comma_group(s: str, parts: list[str]) -> Node:
    """Comma-separated items: a labelled tuple of assignments, or a list (a leading "n = " labels them all)."""
    first = split_top(parts[0], "=")
    if len(first) == 2 and is_label(first[0]) and not any("=" in p for p in parts[1:]):
        parts = [first[1], *parts[1:]]  # "n = 1, 2, 3"
    nodes = _items(parts)
    labels = [n.brackets for n in nodes if n.kind == "eq" and n.brackets]
    if len(labels) == len(nodes) > 1 and len(set(labels)) == len(labels):
        return Node("seq", [n.value[1] for n in nodes], s, brackets="()", labels=tuple(labels))
    flat: list[Node] = []
    for n in nodes:
        flat.extend(n.value if n.kind == "list" else [n])
    return Node("list", flat, s)


def _approximation(s: str, parts: list[str]) -> Node:
    """`a \\approx b`: a, with b as an alternative when b is a rounding of a (see module docstring)."""
    if is_label(parts[0]):  # "x \\approx 2.72": the approximation is the answer
        return parse_node(parts[-1])
    exact, rounded = parse_node(parts[0]), parse_node(parts[-1])
    if exact.kind == "eq" and exact.brackets:
        exact = exact.value[1]
    body = parts[-1].rstrip("%")
    decimals = len(body.split(".", 1)[1]) if "." in body and NUMBER_RE.match(parts[-1]) else None
    if decimals is not None and exact.kind in ("num", "expr") and rounded.kind == "num":
        e = sp.Rational(exact.value.numerator, exact.value.denominator) if exact.kind == "num" else exact.value
        v = value_at(e, 0)
        if v is not None and v.is_real and abs(v - sp.Rational(rounded.value)) <= sp.Rational(1, 2 * 10**decimals):
            return Node("alt", [exact, rounded], s)
    return exact


def _equation(s: str) -> Node | None:
    """An assignment, an "=" chain read as its last side, or an equation; None when s has no top-level "="."""
    sides = [p for p in split_top(s, "=") if p]
    if len(sides) < 2 or REL_RE.search(s):
        return None
    lhs, rhs = sides[0], sides[-1]
    if is_label(lhs) and not is_label(rhs):
        return Node("eq", (parse_node(lhs), parse_node(rhs)), s, brackets=_SPACE.sub("", lhs))
    if is_label(rhs) and not is_label(lhs) and len(sides) == 2:
        return Node("eq", (parse_node(rhs), parse_node(lhs)), s, brackets=_SPACE.sub("", rhs))
    left, right = parse_node(lhs), parse_node(rhs)
    constant = all(n.kind in ("num", "expr") and not getattr(n.value, "free_symbols", None) for n in (left, right))
    worked = left.kind == "text" and right.kind == "num"  # "\\binom83\\binom52 = 560": a computation, then its value
    if len(sides) > 2 or constant or worked:
        return right
    return Node("eq", (left, right), s)


@lru_cache(maxsize=1 << 15)
def parse_node(s: str) -> Node:
    """The structure of a normalised answer (see module docstring); raises Refused for oversized input."""
    s = s.strip()
    quick = _number(s)
    if quick is not None:
        return quick
    if len(s) > MAX_CHARS:
        raise Refused(f"answer longer than {MAX_CHARS} characters")
    if not s:
        return Node("text", "", s)
    if text_key(s) in _REALS:
        return Node("sset", sp.S.Reals, s)
    m = _IN.search(s)
    if m and (is_label(s[: m.start()]) or not s[: m.start()].strip()):
        return parse_node(s[m.end() :])
    if s[0] in "([" and s[-1] in ")]" and s[1:].lstrip().startswith("\\begin{"):
        s = s[1:-1].strip()  # [\\begin{array}...\\end{array}]
    m = _MATRIX_RE.match(s)
    if m:
        rows = [r for r in (row.strip() for row in m.group(2).split("\\\\")) if r]
        return Node("matrix", [[parse_node(c.strip()) for c in row.split("&")] for row in rows[:MAX_ITEMS]], s)
    if s[0] == "{" and encloses(s):
        return parse_node(s[1:-1])
    groups = [g.strip(" ,") for g in _GROUP_SPLIT.split(s)] if ("and" in s or "or" in s) else [s]
    groups = [g for part in groups for g in split_top(part, ";")]
    if len([g for g in groups if g]) > 1:
        nodes = _items(groups)
        flat = [x for n in nodes for x in (n.value if n.kind == "list" else [n])]
        return Node("list", flat, s)
    if "\\approx" in s:
        parts = split_word(s, "\\approx")
        if len(parts) > 1 and parts[0] and parts[-1]:
            return _approximation(s, parts)
    items = split_top(s, ",")
    if len(items) > 1 and not (s[0] in "([" and encloses(s)) and not (s.startswith("\\{") and encloses(s[1:])):
        return _comma_group(s, items)
    if "\\cup" in s:
        return parse_set_like(s, parse_node)
    equation = _equation(s) if "=" in s else None
    if equation is not None:
        return equation
    if REL_RE.search(s):
        return parse_relation(s)
    if s.count("\\pm") == 1 or s.count("\\mp") == 1:
        op = "\\pm" if "\\pm" in s else "\\mp"
        return Node("list", [parse_node(s.replace(op, "+", 1)), parse_node(s.replace(op, "-", 1))], s)
    if s.startswith("\\{") and s.endswith("\\}") and encloses(s[1:]):
        return Node("set", _items(split_top(s[2:-2])), s)
    if s[0] in "([" and s[-1] in ")]" and encloses(s):
        items = split_top(s[1:-1])
        if len(items) > 1:
            seq = Node("seq", _items(items), s, brackets=s[0] + s[-1])
            return interval_to_infinity(seq) if len(items) == 2 and "\\infty" in s else seq
    if ":" in s:
        parts = split_top(s, ":")
        if len(parts) > 1 and all(parts):
            nodes = _items(parts)
            if all(n.kind in ("num", "expr") for n in nodes):
                return Node("ratio", nodes, s)
    pct = s.endswith("%")
    try:
        expr, approx = parse_math(s[:-1].strip() if pct else s)
    except NotMath:
        return Node("text", text_key(s), s)
    return Node("expr", expr, s, approx=approx, pct=pct)
