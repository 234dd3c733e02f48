"""Equivalence of two normalised answers: the structure of each (`structure.py`), compared node by node.

Scalars compare as exact fractions when both are plain numbers, else by value (`numeric.py`: exact unless a decimal
was written, never through floats). A gold written as a decimal with at least 3 significant digits is taken as
rounded at its last place: a more precise prediction (an exact value, or more decimals) within half a unit of that
place matches (gold 33.3, prediction 100/3; gold 7.78, prediction 70/9; gold 16386.17, prediction 16386.169; not
gold 2.7 against e, nor gold 0.5 against 0.54: too few digits to tell a rounding from an exact value). A prediction
written as a decimal matches a gold of another value only when it is that value rounded to the prediction's own
number of places, and within the relative tolerance (3.14159 equals pi; 13.0000001 is not 13, 0.5000001 not 0.5;
3.1416 is not pi, 0.0287 not 448/15625: too few digits to be more than an approximation). Percent: "50%" equals
50 and also 0.5 (the sign on one side only).
Structure rules:
- tuples, points, vectors "(a, b)": ordered, same length; two-element brackets are intervals when compared with a
  set, and "(1, 2]" differs from "[1, 2)"; sets of reals (relations, unions, intervals to infinity) compare as sets;
- lists (boxes joined by "and", "2, -3", "1 or 2") and `\\{...\\}` sets: unordered, as sets (a repeated answer
  counts once); a bare list against a tuple compares in order; a list whose items are all equal ("3/4, or as a
  decimal, 0.75") equals that one item, so "3 or 4" never equals 3;
- a list of two integers written "a,b" with no space also reads as the decimal "a.b" against a single number
  (decimal comma: "1000,99" equals 1000.99, "32, 349" does not equal 32349);
- labelled tuples ("x = 5, y = 2") compare by label against each other, in order against plain tuples;
- assignments: "x = 5" equals 5; two equations are equal when one is a non-zero constant multiple of the other,
  or when they assign the same name equal values;
- matrices elementwise; a one-row or one-column matrix also equals the tuple of its entries;
- ratios and times "7:32" part by part; `a \\approx b` alternatives: either may match;
- a gold numeral with a base subscript ("2516_8") also matches its bare digits: the question names the base (a
  prediction's own subscript is kept: "1011_2" is not the gold 1011);
- anything else (words, names, letters) compares as case-insensitive text without spaces.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

import sympy as sp

from crl.answers.latex_tokens import Refused
from crl.answers.normalize import text_key
from crl.answers.numeric import RTOL, scalars_equal, value_at
from crl.answers.nodes import Node
from crl.answers.relations import as_set, sets_equal
from crl.answers.structure import parse_node

_RTOL = Fraction(int(RTOL.p), int(RTOL.q))
_DECIMAL_COMMA = re.compile(r"^(-?\d+),(\d+)$")
_PLAIN_DECIMAL = re.compile(r"^-?(\d*)\.(\d+)$")
_BASE_NUMERAL = re.compile(r"^([0-9A-Za-z]{1,64})_\{?(\d{1,2})\}?$")
SCALAR = ("num", "expr")


def numbers_equal(a: Fraction, b: Fraction, approx: bool, pa: bool = False, pb: bool = False) -> bool:
    """Exact fractions; within RTOL when either was a decimal; percent on one side may also be divided by 100."""
    candidates = [(a, b)]
    if pa != pb:
        candidates.append((a / 100, b) if pa else (a, b / 100))
    for x, y in candidates:
        if x == y or (approx and abs(x - y) <= _RTOL * max(abs(x), abs(y))):
            return True
    return False


def _as_expr(n: Node) -> sp.Expr:
    return sp.Rational(n.value.numerator, n.value.denominator) if n.kind == "num" else n.value


def _written_decimals(n: Node) -> int | None:
    """Decimal places of a number written as a plain decimal with at least 3 significant digits, else None."""
    m = _PLAIN_DECIMAL.match(n.text.strip()) if n.kind == "num" and n.approx else None
    if m is None or len((m.group(1) + m.group(2)).lstrip("0")) < 3:
        return None
    return len(m.group(2))


def _rounds_to_gold(p: Node, g: Node) -> bool:
    """A gold written as a rounded decimal (k places) matches a more precise prediction within half a unit of it."""
    k = _written_decimals(g)
    if k is None or p.pct or g.pct or (p.approx and (_written_decimals(p) or 0) <= k):
        return False
    value = _as_expr(p) if p.kind == "num" else value_at(p.value, 0)
    if value is None or not value.is_real or getattr(p.value, "free_symbols", None):
        return False
    return bool(abs(value - _as_expr(g)) < sp.Rational(1, 2 * 10**k))


def _places(n: Node) -> int | None:
    """Decimal places of a number written as a plain decimal ("13.0000001": 7), else None."""
    m = _PLAIN_DECIMAL.match(n.text.strip().rstrip("%")) if n.kind == "num" and n.approx else None
    return None if m is None else len(m.group(2))


def _is_rounding(p: Node, g: Node) -> bool:
    """Whether a decimal prediction is the gold's value rounded to the prediction's own number of places."""
    k = _places(p)
    if k is None:
        return True  # not a plain decimal (scientific notation): the tolerance alone decides
    value = _as_expr(g) if g.kind == "num" else value_at(g.value, 0)
    if value is None or not value.is_real:
        return False
    scale = 100 if (p.pct and not g.pct) else (sp.Rational(1, 100) if (g.pct and not p.pct) else 1)
    return bool(abs(_as_expr(p) - value * scale) <= sp.Rational(1, 2 * 10**k))


def _scalars_equal(p: Node, g: Node) -> bool:
    approx = p.approx or g.approx
    if p.kind == "num" and g.kind == "num":
        if p.value == g.value and p.pct == g.pct:
            return True
        if _rounds_to_gold(p, g):
            return True
        close = numbers_equal(p.value, g.value, approx, p.pct, g.pct)
        return close and (not p.approx or _is_rounding(p, g))
    e1, e2 = _as_expr(p), _as_expr(g)
    if _rounds_to_gold(p, g):
        return True
    close = scalars_equal(e1, e2, approx)
    if not close and p.pct != g.pct:
        close = scalars_equal(e1 / 100, e2, approx) if p.pct else scalars_equal(e1, e2 / 100, approx)
    return close and (not p.approx or p.kind != "num" or _is_rounding(p, g))


def _ordered(ps: list[Node], gs: list[Node]) -> bool:
    return len(ps) == len(gs) and all(nodes_equal(a, b) for a, b in zip(ps, gs))


def _unordered(ps: list[Node], gs: list[Node]) -> bool:
    """Set equality: every predicted item equals some gold item and every gold item some predicted item."""
    if not ps or not gs:
        return not ps and not gs
    return all(any(nodes_equal(a, b) for b in gs) for a in ps) and all(any(nodes_equal(a, b) for a in ps) for b in gs)


def _assignment(n: Node) -> bool:
    return n.kind == "eq" and bool(n.brackets)


def _equations_equal(p: Node, g: Node) -> bool:
    (pl, pr), (gl, gr) = p.value, g.value
    if _assignment(p) and _assignment(g) and p.brackets == g.brackets:
        return nodes_equal(pr, gr)
    if not all(n.kind in SCALAR for n in (pl, pr, gl, gr)):
        return text_key(p.text) == text_key(g.text)
    a, b = _as_expr(pl) - _as_expr(pr), _as_expr(gl) - _as_expr(gr)
    if a == 0 or b == 0:
        return a == b
    try:
        ratio = sp.cancel(a / b)
    except (sp.PolynomialError, TypeError, ValueError):
        return False
    return bool(ratio.is_number and not ratio.free_symbols and ratio != 0 and ratio.is_finite)


def _vector(n: Node) -> list[Node] | None:
    if n.kind == "matrix" and (len(n.value) == 1 or all(len(r) == 1 for r in n.value)):
        return [c for row in n.value for c in row]
    if n.kind in ("seq", "list"):
        return n.value
    return None


def _decimal_comma(n: Node) -> Node | None:
    """The decimal reading of a list written "a,b" (no space), or None."""
    m = _DECIMAL_COMMA.match(n.text.strip())
    if n.kind != "list" or m is None:
        return None
    return Node("num", Fraction(f"{m.group(1)}.{m.group(2)}"), n.text, approx=True)


def _seqs_equal(p: Node, g: Node) -> bool:
    if p.labels and g.labels and sorted(p.labels) == sorted(g.labels):
        values = dict(zip(g.labels, g.value))
        return all(nodes_equal(v, values[k]) for k, v in zip(p.labels, p.value))
    if len(p.value) == 2 and p.brackets != g.brackets and not (p.labels or g.labels):
        return False
    return _ordered(p.value, g.value)


def _single(n: Node) -> Node | None:
    """The one distinct item of a list or set ("3/4, 0.75" restates one value), or None."""
    if n.kind not in ("set", "list") or not n.value or len(n.value) > 8:
        return None
    first = n.value[0]
    return first if all(nodes_equal(x, first) for x in n.value[1:]) else None


def _unwrap(p: Node, g: Node) -> tuple[Node, Node] | None:
    """Rewrite a pair that compares through one side's inner node (assignment value, single item), or None."""
    if _assignment(p) and g.kind != "eq":
        return p.value[1], g
    if _assignment(g) and p.kind != "eq":
        return p, g.value[1]
    if g.kind not in ("set", "list") and _single(p) is not None:
        return _single(p), g
    if p.kind not in ("set", "list") and _single(g) is not None:
        return p, _single(g)
    if g.kind in SCALAR and _decimal_comma(p) is not None:
        return _decimal_comma(p), g
    if p.kind in SCALAR and _decimal_comma(g) is not None:
        return p, _decimal_comma(g)
    return None


def nodes_equal(p: Node, g: Node) -> bool:
    """Whether a predicted answer node equals the gold node under the module's rules."""
    kp, kg = p.kind, g.kind
    if kp == "alt":
        return any(nodes_equal(x, g) for x in p.value)
    if kg == "alt":
        return any(nodes_equal(p, x) for x in g.value)
    if kp in SCALAR and kg in SCALAR:
        return _scalars_equal(p, g)
    if kp == "eq" and kg == "eq":
        return _equations_equal(p, g)
    inner = _unwrap(p, g)
    if inner is not None:
        return nodes_equal(*inner)
    if "sset" in (kp, kg):
        a, b = as_set(p), as_set(g)
        return a is not None and b is not None and sets_equal(a, b, p.approx or g.approx)
    if kp == "seq" and kg == "seq":
        return _seqs_equal(p, g)
    if kp in ("set", "list") and kg in ("set", "list"):
        return _unordered(p.value, g.value)
    if kp == "matrix" and kg == "matrix":
        return len(p.value) == len(g.value) and all(_ordered(a, b) for a, b in zip(p.value, g.value))
    if {kp, kg} <= {"seq", "list", "matrix"}:
        vp, vg = _vector(p), _vector(g)
        return vp is not None and vg is not None and _ordered(vp, vg)
    if kp == "ratio" and kg == "ratio":
        return _ordered(p.value, g.value)
    if kp == "rel" and kg == "rel":
        return relations_equal(p, g)
    return text_key(p.text) == text_key(g.text)


_FLIP = {"<": ">", ">": "<", "\\leq": "\\geq", "\\geq": "\\leq", "\\neq": "\\neq"}


def relations_equal(p: Node, g: Node) -> bool:
    """Unsolved relations: same operators and equal parts, also read mirrored (a < b is b > a)."""
    (pp, po), (gp, go) = p.value, g.value
    for parts, ops in ((pp, po), (pp[::-1], [_FLIP[o] for o in po[::-1]])):
        if ops == go and len(parts) == len(gp) and all(nodes_equal(parse_node(a), parse_node(b)) for a, b in zip(parts, gp)):
            return True
    return False


def _gold_base_digits(pred: str, gold: str) -> bool:
    """A gold numeral with a base subscript ("2516_8") and a prediction of its bare digits ("2516")."""
    m = _BASE_NUMERAL.match(gold)
    return bool(m) and m.group(1) == pred and all(int(c, 36) < int(m.group(2)) for c in pred) and 2 <= int(m.group(2)) <= 36


@lru_cache(maxsize=1 << 16)
def equivalent(pred: str, gold: str) -> bool:
    """Whether two normalised answers are equal; raises Refused when the prediction is oversized."""
    if pred == gold or _gold_base_digits(pred, gold):
        return True
    try:
        g = parse_node(gold)
    except Refused:
        return text_key(pred) == text_key(gold)
    return nodes_equal(parse_node(pred), g)
