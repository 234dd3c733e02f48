"""Equivalence of two normalised answers: cheap checks first, structure next, sympy last.

Order: identical strings; plain numbers compared as exact fractions; then the answer's structure (below);
then sympy expressions built by the bounded parser in `latex.py` (never `eval`), compared exactly when both are
constants, else at random points.

Float policy. Decimals are read exactly, so 0.5 equals 1/2 and 18.0 equals 18. When either side is written with
a decimal point (an approximation), values match within a relative tolerance of RTOL = 1e-6 (0.333333 equals
1/3, 0.3333 does not); exact values must match exactly (to 1e-12 relative at 30 digits for irrationals).
Percent: "50%" equals 50 and also 0.5 (the percent sign on one side only).

Structure and order rules:
- tuples and points "(a, b)", vectors and lists in brackets: ordered, same length;
- two-element brackets are intervals: "(1, 2]" and "[1, 2)" differ by their ends; `\\cup` unions are unordered;
- inequalities in one variable become intervals ("x > 3" equals "(3, \\infty)"), other relations compare as text;
- sets `\\{...\\}` and bare comma lists ("several answers in one box", "2, -3", "1 and 2"): unordered; a bare
  list against a tuple compares in order; `a \\pm b` is the list of both; a one-element list equals its element;
- equations: an assignment "x = 5" equals "5" (and "x = 5, y = 2" equals "(5, 2)"); two equations are equal
  when one is a non-zero constant multiple of the other, or they assign the same variable equal values;
- matrices elementwise; a one-row or one-column matrix also equals the tuple of its entries;
- anything else (words, names, letters) compares as case-insensitive text without spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import sympy as sp

from crl.verifiers.latex import MAX_CHARS, NotMath, Refused, parse_math
from crl.verifiers.normalize import text_key

RTOL = Fraction(1, 10**6)
EXACT_RTOL = 1e-12
MAX_ITEMS = 64

NUMBER_RE = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d{1,4})?%?$")
FRACTION_RE = re.compile(r"^(-?)(?:\\frac\{(-?\d+)\}\{(\d+)\}|(\d+)/(\d+))$")
_VAR_RE = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?[a-zA-Z0-9]+\}?)?(?:\([a-zA-Z]\))?$")
_REL_RE = re.compile(r"\\leq|\\geq|\\neq|<=|>=|!=|<|>|\\ne(?![a-zA-Z])")
_IN_RE = re.compile(r"\\in(?![a-zA-Z])")
_MATRIX_RE = re.compile(r"^\\begin\{([pbBvV]?matrix|array)\}(?:\{[lcr|]*\})?(.*)\\end\{\1\}$", re.S)
_REALS = {"mathbbr", "allrealnumbers", "allreals", "reals", "realnumbers", "(-infty,infty)"}
_POINTS = (Fraction(7, 13), Fraction(23, 17), Fraction(-5, 11), Fraction(31, 7))


@dataclass(frozen=True, slots=True)
class Node:
    """A parsed answer: its kind, value, normalised text, and the flags the float and percent policy need."""

    kind: str  # num | expr | text | seq | set | list | eq | rel | matrix | union
    value: Any
    text: str
    approx: bool = False
    pct: bool = False
    brackets: str = ""


def split_top(s: str, seps: str = ",;") -> list[str]:
    """Split at separators outside (), [], {} (escaped braces count too); parts stripped."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c in seps and depth == 0:
            parts.append(s[start:i].strip())
            start = i + 1
    parts.append(s[start:].strip())
    return parts


def _encloses(s: str) -> bool:
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


def _split_relations(s: str) -> tuple[list[str], list[str]]:
    """Parts and relation operators at the top level of s."""
    parts, ops, depth, start, i = [], [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            m = _REL_RE.match(s, i)
            if m and not (c == "\\" and s.startswith("\\left", i)):
                parts.append(s[start:i].strip())
                ops.append({"<=": "\\leq", ">=": "\\geq", "!=": "\\neq", "\\ne": "\\neq"}.get(m.group(0), m.group(0)))
                i = start = m.end()
                continue
        i += 1
    parts.append(s[start:].strip())
    return parts, ops


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


def _interval_from_relation(parts: list[str], ops: list[str], text: str) -> Node | None:
    """x > 3 -> (3, oo); -2 < x <= 5 -> (-2, 5]; None when it is not one variable against bounds."""
    less = {"<": ("(", ")"), "\\leq": ("[", "]")}
    more = {">": ("(", ")"), "\\geq": ("[", "]")}
    inf, neg_inf = Node("expr", sp.oo, "\\infty"), Node("expr", -sp.oo, "-\\infty")
    if len(parts) == 2 and all(op in less or op in more for op in ops):
        (a, b), op = parts, ops[0]
        if _VAR_RE.match(a) and not _VAR_RE.match(b):
            bound = parse_node(b)
            if op in less:
                return Node("seq", [neg_inf, bound], text, brackets="(" + less[op][1])
            return Node("seq", [bound, inf], text, brackets=more[op][0] + ")")
        if _VAR_RE.match(b) and not _VAR_RE.match(a):
            return _interval_from_relation([b, a], [{"<": ">", ">": "<", "\\leq": "\\geq", "\\geq": "\\leq"}[op]], text)
    if len(parts) == 3 and _VAR_RE.match(parts[1]):
        if all(op in less for op in ops):
            lo, hi = parse_node(parts[0]), parse_node(parts[2])
            return Node("seq", [lo, hi], text, brackets=less[ops[0]][0] + less[ops[1]][1])
        if all(op in more for op in ops):
            lo, hi = parse_node(parts[2]), parse_node(parts[0])
            return Node("seq", [lo, hi], text, brackets=more[ops[1]][0] + more[ops[0]][1])
    return None


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
        return Node("seq", [Node("expr", -sp.oo, "-\\infty"), Node("expr", sp.oo, "\\infty")], s, brackets="()")
    m = _IN_RE.search(s)
    if m and (_VAR_RE.match(s[: m.start()].strip()) or not s[: m.start()].strip()):
        return parse_node(s[m.end() :].strip())
    if s[0] in "([" and s[-1] in ")]" and s[1:].lstrip().startswith("\\begin{"):
        s = s[1:-1].strip()  # [\\begin{array}...\\end{array}]
    m = _MATRIX_RE.match(s)
    if m:
        rows = [r for r in (row.strip() for row in m.group(2).split("\\\\")) if r]
        cells = [[parse_node(c.strip()) for c in row.split("&")] for row in rows[:MAX_ITEMS]]
        return Node("matrix", cells, s)
    if "\\cup" in s:
        parts = [p.strip() for p in s.split("\\cup")]
        if all(parts):
            return Node("union", [parse_node(p) for p in parts[:MAX_ITEMS]], s)
    if s.count("\\pm") == 1 or s.count("\\mp") == 1:
        op = "\\pm" if "\\pm" in s else "\\mp"
        return Node("list", [parse_node(s.replace(op, "+", 1)), parse_node(s.replace(op, "-", 1))], s)
    if s.startswith("\\{") and s.endswith("\\}") and _encloses(s[1:]):
        return Node("set", [parse_node(p) for p in split_top(s[2:-2])[:MAX_ITEMS] if p], s)
    listed = re.sub(r"\s+(?:and|or)\s+", ",", s) if (" and " in s or " or " in s) else s
    if s[0] in "([" and s[-1] in ")]" and _encloses(s):
        items = split_top(s[1:-1])
        if len(items) > 1:
            return Node("seq", [parse_node(p) for p in items[:MAX_ITEMS]], s, brackets=s[0] + s[-1])
    items = split_top(listed)
    if len(items) > 1:
        return Node("list", [parse_node(p) for p in items[:MAX_ITEMS] if p], s)
    if "=" in s:
        sides = [p for p in split_top(s, "=") if p]
        if len(sides) >= 2 and not _REL_RE.search(s):
            lhs, rhs = sides[0], sides[-1]
            if _VAR_RE.match(rhs) and not _VAR_RE.match(lhs):  # "5 = x" reads as "x = 5"
                lhs, rhs = rhs, lhs
            return Node("eq", (parse_node(lhs), parse_node(rhs)), s, brackets=lhs)
    if _REL_RE.search(s):
        parts, ops = _split_relations(s)
        if ops and all(parts):
            interval = _interval_from_relation(parts, ops, s)
            if interval is not None:
                return interval
            return Node("rel", (parts, ops), s)
    pct = s.endswith("%")
    try:
        expr, approx = parse_math(s[:-1].strip() if pct else s)
    except NotMath:
        return Node("text", text_key(s), s)
    return Node("expr", expr, s, approx=approx, pct=pct)


def _close(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= RTOL * max(abs(a), abs(b))


def numbers_equal(a: Fraction, b: Fraction, approx: bool, pa: bool = False, pb: bool = False) -> bool:
    """Exact fractions; within RTOL when either was a decimal; percent on one side may also be divided by 100."""
    candidates = [(a, b)]
    if pa != pb:
        candidates.append((a / 100, b) if pa else (a, b / 100))
    for x, y in candidates:
        if x == y or (approx and _close(x, y)):
            return True
    return False


def _numeric(e: sp.Expr, subs: dict | None = None) -> sp.Expr | None:
    """e evaluated to 30 digits (at `subs`), or None when it is not a finite number."""
    try:
        v = e.evalf(30, subs=subs) if subs else sp.N(e, 30)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError, AttributeError):
        return None
    if not v.is_number or v.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        return None
    return v


def _values_close(v1: sp.Expr, v2: sp.Expr, rtol: float) -> bool:
    try:
        diff = abs(complex(v1 - v2))
        scale = max(abs(complex(v1)), abs(complex(v2)))
    except (TypeError, OverflowError, ValueError):
        return False
    return diff <= rtol * scale or diff < 1e-20


def exprs_equal(e1: sp.Expr, e2: sp.Expr, approx: bool) -> bool:
    """Symbolic equality: structural, then numeric (constants) or at random points (with variables)."""
    if e1 == e2:
        return True
    rtol = float(RTOL) if approx else EXACT_RTOL
    if e1.is_Rational and e2.is_Rational:
        return approx and _close(Fraction(int(e1.p), int(e1.q)), Fraction(int(e2.p), int(e2.q)))
    if e1.has(sp.oo, -sp.oo, sp.zoo) or e2.has(sp.oo, -sp.oo, sp.zoo):
        return False
    syms = e1.free_symbols | e2.free_symbols
    if not syms:
        v1, v2 = _numeric(e1), _numeric(e2)
        return v1 is not None and v2 is not None and _values_close(v1, v2, rtol)
    ordered = sorted(syms, key=lambda x: x.name)
    agree = 0
    for k in range(len(_POINTS)):
        subs = {x: sp.Rational(_POINTS[(k + j) % len(_POINTS)]) for j, x in enumerate(ordered)}
        v1, v2 = _numeric(e1, subs), _numeric(e2, subs)
        if v1 is None or v2 is None:
            continue
        if not _values_close(v1, v2, max(rtol, 1e-10)):
            return False
        agree += 1
    return agree >= 2


def _as_expr(n: Node) -> sp.Expr:
    return sp.Rational(n.value.numerator, n.value.denominator) if n.kind == "num" else n.value


def _scalars_equal(p: Node, g: Node) -> bool:
    approx = p.approx or g.approx
    if p.kind == "num" and g.kind == "num":
        return numbers_equal(p.value, g.value, approx, p.pct, g.pct)
    e1, e2 = _as_expr(p), _as_expr(g)
    if exprs_equal(e1, e2, approx):
        return True
    if p.pct != g.pct:
        return exprs_equal(e1 / 100, e2, approx) if p.pct else exprs_equal(e1, e2 / 100, approx)
    return False


def _ordered(ps: list[Node], gs: list[Node]) -> bool:
    return len(ps) == len(gs) and all(nodes_equal(a, b) for a, b in zip(ps, gs))


def _unordered(ps: list[Node], gs: list[Node]) -> bool:
    if len(ps) != len(gs):
        return False
    free = list(gs)
    for a in ps:
        for j, b in enumerate(free):
            if nodes_equal(a, b):
                del free[j]
                break
        else:
            return False
    return True


def _is_assignment(n: Node) -> bool:
    return n.kind == "eq" and bool(_VAR_RE.match(n.brackets.strip()))


def _equations_equal(p: Node, g: Node) -> bool:
    (pl, pr), (gl, gr) = p.value, g.value
    if _is_assignment(p) and _is_assignment(g) and p.brackets.replace(" ", "") == g.brackets.replace(" ", ""):
        return nodes_equal(pr, gr)
    if not all(n.kind in ("num", "expr") for n in (pl, pr, gl, gr)):
        return text_key(p.text) == text_key(g.text)
    a, b = _as_expr(pl) - _as_expr(pr), _as_expr(gl) - _as_expr(gr)
    if a == 0 or b == 0:
        return a == b
    ratio = sp.simplify(a / b) if (a.free_symbols | b.free_symbols) else a / b
    return bool(ratio.free_symbols == set() and ratio.is_number and ratio != 0 and ratio.is_finite)


def _vector(n: Node) -> list[Node] | None:
    if n.kind == "matrix" and (len(n.value) == 1 or all(len(r) == 1 for r in n.value)):
        return [c for row in n.value for c in row]
    if n.kind in ("seq", "list"):
        return n.value
    return None


def nodes_equal(p: Node, g: Node) -> bool:
    """Whether a predicted answer node equals the gold node under the module's rules."""
    kp, kg = p.kind, g.kind
    scalar = ("num", "expr")
    if kp in scalar and kg in scalar:
        return _scalars_equal(p, g)
    if kp == "eq" and kg == "eq":
        return _equations_equal(p, g)
    if kp == "eq" and _is_assignment(p):
        return nodes_equal(p.value[1], g)
    if kg == "eq" and _is_assignment(g):
        return nodes_equal(p, g.value[1])
    if kp in ("set", "list") and len(p.value) == 1 and kg not in ("set", "list"):
        return nodes_equal(p.value[0], g)
    if kg in ("set", "list") and len(g.value) == 1 and kp not in ("set", "list"):
        return nodes_equal(p, g.value[0])
    if kp == "seq" and kg == "seq":
        if len(p.value) == 2 and p.brackets != g.brackets:
            return False
        return _ordered(p.value, g.value)
    if kp in ("set", "list", "union") and kg in ("set", "list", "union"):
        return _unordered(p.value, g.value)
    if kp == "matrix" and kg == "matrix":
        return len(p.value) == len(g.value) and all(_ordered(a, b) for a, b in zip(p.value, g.value))
    if {kp, kg} <= {"seq", "list", "matrix"}:
        vp, vg = _vector(p), _vector(g)
        return vp is not None and vg is not None and _ordered(vp, vg)
    if kp == "rel" and kg == "rel":
        return _relations_equal(p, g)
    return text_key(p.text) == text_key(g.text)


def _relations_equal(p: Node, g: Node) -> bool:
    """Relations with the same operators and equal parts (also read mirrored: a < b is b > a)."""
    (pp, po), (gp, go) = p.value, g.value
    flip = {"<": ">", ">": "<", "\\leq": "\\geq", "\\geq": "\\leq", "\\neq": "\\neq"}
    for parts, ops in ((pp, po), (pp[::-1], [flip[o] for o in po[::-1]])):
        if ops == go and len(parts) == len(gp):
            if all(nodes_equal(parse_node(a), parse_node(b)) for a, b in zip(parts, gp)):
                return True
    return False


@lru_cache(maxsize=1 << 16)
def equivalent(pred: str, gold: str) -> bool:
    """Whether two normalised answers are equal; raises Refused when the prediction is oversized."""
    if pred == gold:
        return True
    try:
        g = parse_node(gold)
    except Refused:
        return text_key(pred) == text_key(gold)
    return nodes_equal(parse_node(pred), g)
