"""Relations, intervals and unions as sets of reals, so that "x > 3", "-x < -3", "(3, \\infty)" are one answer.

A relation in one variable (a chain like "-2 < x \\le 5" included) whose sides are polynomials of degree at most 2
in it, or absolute values of linear ones, is solved with sympy's `solveset` over the reals. A label standing for
the variable ("f(x)" in "0 < f(x) < 1") is the variable. Other relations (two variables, higher degree) keep their
parts and operators and compare part by part, also mirrored ("a < b" is "b > a"). Intervals with an infinite end,
unions (`\\cup`) and "all real numbers" are sets; a two-element tuple "(1, 2)" becomes the open interval only when
compared against a set. Endpoints compare like any scalar (the decimal tolerance included).
"""

from __future__ import annotations

import re
from typing import Callable

import sympy as sp

from crl.answers.latex import parse_math
from crl.answers.latex_tokens import NotMath, Refused
from crl.answers.numeric import scalars_equal
from crl.answers.normalize import text_key
from crl.answers.nodes import REL_RE, Node

_OPS = {"<": sp.StrictLessThan, ">": sp.StrictGreaterThan, "\\leq": sp.LessThan, "\\geq": sp.GreaterThan,
        "<=": sp.LessThan, ">=": sp.GreaterThan, "\\neq": sp.Ne, "!=": sp.Ne}
_CANON = {"<=": "\\leq", ">=": "\\geq", "!=": "\\neq"}
_FUNCTION = re.compile(r"^[A-Za-z]\([A-Za-z]\)$")
_VARIABLE = sp.Symbol("_t")


def split_relations(s: str) -> tuple[list[str], list[str]]:
    """Parts and relation operators at the top level of s."""
    parts, ops, depth, start, i = [], [], 0, 0, 0
    while i < len(s):
        c = s[i]
        depth += (c in "([{") - (c in ")]}")
        if depth == 0:
            m = REL_RE.match(s, i)
            if m:
                parts.append(s[start:i].strip())
                ops.append(_CANON.get(m.group(0), m.group(0)))
                i = start = m.end()
                continue
        i += 1
    parts.append(s[start:].strip())
    return parts, ops


def _solvable(expr: sp.Expr, x: sp.Symbol) -> bool:
    """Polynomial of degree <= 2 in x, or linear once absolute values are dropped (a bound on solveset's work)."""
    plain = expr.replace(sp.Abs, lambda u: u) if expr.has(sp.Abs) else expr
    try:
        degree = sp.Poly(plain, x).degree()
    except (sp.PolynomialError, sp.GeneratorsNeeded, ValueError, TypeError):
        return False
    return degree <= (1 if expr.has(sp.Abs) else 2)


def parse_relation(s: str) -> Node:
    """A relation as a set of reals (kind "sset"), or its parts and operators (kind "rel"), or text."""
    parts, ops = split_relations(s)
    if not ops or not all(parts):
        return Node("text", text_key(s), s)
    try:
        exprs, approx = [], False
        for p in parts:
            if _FUNCTION.match(p):
                exprs.append(_VARIABLE)
                continue
            e, a = parse_math(p)
            exprs.append(e)
            approx = approx or a
    except (NotMath, Refused):
        return Node("rel", (parts, ops), s)
    symbols = set().union(*(e.free_symbols for e in exprs))
    if len(symbols) == 1:
        x = symbols.pop()
        solved = sp.S.Reals
        try:
            for (a, b), op in zip(zip(exprs, exprs[1:]), ops):
                if not _solvable(a - b, x):
                    return Node("rel", (parts, ops), s)
                solved = solved.intersect(sp.solveset(_OPS[op](a, b), x, sp.S.Reals))
        except (NotImplementedError, TypeError, ValueError):
            return Node("rel", (parts, ops), s)
        return Node("sset", solved, s, approx=approx)
    return Node("rel", (parts, ops), s)


def parse_set_like(s: str, parse_node: Callable[[str], Node]) -> Node:
    """Unions of intervals/sets and intervals with an infinite end, as a sympy Set (kind "sset"); each piece is
    read by ``parse_node`` (the structure reader, passed in because it reads unions with this function)."""
    pieces = [p.strip() for p in s.split("\\cup")]
    result, approx = sp.S.EmptySet, False
    for p in pieces:
        if p.startswith("{") and p.endswith("}"):  # a plain-brace set inside a union: "{1,3} \\cup {2,4}"
            p = "\\" + p[:-1] + "\\}"
        node = parse_node(p) if p else Node("text", "", p)
        piece = as_set(node)
        if piece is None:
            return Node("text", s, s)
        result, approx = result.union(piece), approx or node.approx or _approx_seq(node)
    return Node("sset", result, s, approx=approx)


def interval_to_infinity(seq: Node) -> Node:
    """A two-element bracket pair with an infinite end as a set (kind "sset"), or the pair unchanged."""
    as_interval = as_set(seq)
    return seq if as_interval is None else Node("sset", as_interval, seq.text, approx=_approx_seq(seq))


def _approx_seq(node: Node) -> bool:
    return node.kind == "seq" and any(n.approx for n in node.value)


def _scalar(n: Node) -> sp.Expr | None:
    if n.kind == "num":
        return sp.Rational(n.value.numerator, n.value.denominator)
    return n.value if n.kind == "expr" else None


def as_set(node: Node) -> sp.Set | None:
    """The set of reals a node stands for (interval, finite set, solved relation), or None."""
    if node.kind == "sset":
        return node.value
    if node.kind == "seq" and len(node.value) == 2 and len(node.brackets) == 2:
        lo, hi = (_scalar(n) for n in node.value)
        if lo is None or hi is None:
            return None
        try:
            return sp.Interval(lo, hi, node.brackets[0] == "(", node.brackets[1] == ")")
        except (TypeError, ValueError):
            return None
    if node.kind == "set":
        values = [_scalar(n) for n in node.value]
        return None if any(v is None for v in values) else sp.FiniteSet(*values)
    if node.kind == "list" and node.value and all(n.kind == "sset" for n in node.value):  # "x < -1 or x > 1"
        return sp.Union(*(n.value for n in node.value))
    if node.kind == "text" and node.text.strip() in ("\\varnothing", "\\{\\}", "\\emptyset"):
        return sp.S.EmptySet
    return None


def _pieces(s: sp.Set) -> list[sp.Set]:
    return list(s.args) if isinstance(s, sp.Union) else [s]


def sets_equal(a: sp.Set, b: sp.Set, approx: bool) -> bool:
    """Equal sets: structurally (sympy canonical form), or piece by piece with endpoints compared as scalars."""
    if a == b:
        return True
    pa, pb = _pieces(a), _pieces(b)
    if len(pa) != len(pb):
        return False
    for x, y in zip(pa, pb):
        if isinstance(x, sp.Interval) and isinstance(y, sp.Interval):
            if (x.left_open, x.right_open) != (y.left_open, y.right_open):
                return False
            ends = ((x.start, y.start), (x.end, y.end))
        elif isinstance(x, sp.FiniteSet) and isinstance(y, sp.FiniteSet) and len(x) == len(y):
            ends = tuple(zip(sorted(x, key=sp.default_sort_key), sorted(y, key=sp.default_sort_key)))
        else:
            return False
        if not all(scalars_equal(u, v, approx) for u, v in ends):
            return False
    return True
