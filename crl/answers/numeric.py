"""Value equality of two scalar sympy expressions that cannot overflow: exact, or at bounded precision.

No value is ever converted to a Python float. Constants are evaluated by sympy's `evalf` (mpmath underneath, whose
exponent range is unbounded, so e^1000 and 10^400*pi are ordinary numbers), and expressions with variables at a few
fixed rational points (each variable gets values derived from its name, so one expression's values are cached and
reused against every other answer).

Policy:
- identical expressions are equal; anything involving nan or complex infinity is unequal; +-oo only equals itself;
- exact against exact (no decimal written on either side): equal only when the difference is zero. The values are
  first compared at `PREC` digits (a cheap rejection); a pair that agrees there must also have its exact difference
  evaluate to zero: sympy's adaptive `evalf` raises its working precision (up to `ZERO_DIGITS` plus the magnitude of
  the values) until it either finds significant digits or none are left. So e^50 is not e^50 + 1, and
  (x^2+3x+7)^3000 is not (x^2+3x+7)^2999 (x^2+3x+6), at any size;
- when either side was written with a decimal point (an approximation), values match within a relative tolerance of
  RTOL = 1e-6 (0.333333 equals 1/3, 0.3333 does not; 3.14159 equals pi).
With variables, every point where both sides are defined must agree, at least two must, and the exact test is run
at the first two.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import sympy as sp

RTOL = sp.Rational(1, 10**6)
PREC = 30  # significant digits of the values compared first
QUICK = sp.Float("1e-20", PREC)  # relative gap beyond which two PREC-digit values certainly differ
ZERO_DIGITS = 100  # digits of cancellation the exact test can see through, on top of the values' magnitude
MAX_DIGITS = 20_000
POINTS = 4
_BAD = (sp.nan, sp.zoo)
_ERRORS = (TypeError, ValueError, ZeroDivisionError, OverflowError, RecursionError, AttributeError, ArithmeticError)


def symbol_value(name: str, k: int) -> sp.Rational:
    """The value of variable `name` at point k: a non-integer rational, negative at odd k, fixed per name."""
    h = zlib.crc32(name.encode())
    value = sp.Rational(h % 97 + 11 + 37 * k, 13 + 2 * k + h % 5)
    return -value if k % 2 else value


def _subs(symbols: frozenset, k: int) -> dict:
    return {s: symbol_value(s.name, k) for s in symbols}


def _number(v: sp.Expr) -> sp.Expr | None:
    """v if it is a finite evaluated number (real or complex Floats), else None."""
    if v is None or not v.is_number or v.has(*_BAD, sp.oo, -sp.oo):
        return None
    return v


@lru_cache(maxsize=1 << 15)
def value_at(expr: sp.Expr, k: int) -> sp.Expr | None:
    """expr evaluated to PREC digits (at point k for its variables), or None when undefined or not finite."""
    try:
        syms = expr.free_symbols
        v = expr.evalf(PREC, subs=_subs(syms, k)) if syms else sp.N(expr, PREC)
    except _ERRORS:
        return None
    return _number(v)


def _abs(v: sp.Expr) -> sp.Expr:
    return sp.Abs(v) if v.is_real is not True else abs(v)


def close(a: sp.Expr, b: sp.Expr, rtol: sp.Expr) -> bool:
    """|a - b| <= rtol * max(|a|, |b|), in sympy numbers (arbitrary exponent range)."""
    try:
        gap = _abs(a - b)
        scale = max(_abs(a), _abs(b))
        return bool(gap <= rtol * scale) or gap == 0
    except _ERRORS:
        return False


def _digits(v: sp.Expr) -> int:
    """Decimal digits of the magnitude of a Float (or the larger part of a complex value)."""
    bits = 0
    for part in v.as_real_imag():
        mpf = getattr(part, "_mpf_", None)  # mpmath's (sign, mantissa, exponent, bitcount) of a sympy Float
        if mpf is not None and mpf[1]:
            bits = max(bits, abs(mpf[2] + mpf[3]))
    return bits * 30103 // 100000 + 1


def is_zero(diff: sp.Expr, magnitude: int) -> bool:
    """Whether an exact constant expression is zero, seen through `ZERO_DIGITS + magnitude` digits of cancellation."""
    if diff == 0:
        return True
    digits = min(MAX_DIGITS, ZERO_DIGITS + magnitude)
    try:
        v = diff.evalf(15, maxn=digits)
    except _ERRORS:
        return False
    if not v.is_number or v.has(*_BAD):
        return False
    # A part that evalf could not resolve comes back with precision 1: sympy's own marker for "no significant
    # digits", the same test Expr.equals uses.
    return all(p == 0 or (p.is_Float and p._prec <= 1) for p in v.as_real_imag())


def _agree_at(e1: sp.Expr, e2: sp.Expr, approx: bool, k: int) -> bool | None:
    """Whether the values agree at point k (to RTOL, or to QUICK when exact); None if either is undefined there."""
    v1, v2 = value_at(e1, k), value_at(e2, k)
    if v1 is None or v2 is None:
        return None
    return close(v1, v2, RTOL if approx else QUICK)


def scalars_equal(e1: sp.Expr, e2: sp.Expr, approx: bool) -> bool:
    """Whether two scalar expressions are equal under the module's policy."""
    if e1 == e2:
        return not e1.has(*_BAD)
    if e1.has(*_BAD) or e2.has(*_BAD) or e1.has(sp.oo, -sp.oo) or e2.has(sp.oo, -sp.oo):
        return False
    if e1.is_Rational and e2.is_Rational:
        return approx and close(e1, e2, RTOL)
    syms = e1.free_symbols | e2.free_symbols
    if not syms:
        if not _agree_at(e1, e2, approx, 0):
            return False
        return approx or is_zero(e1 - e2, max(_digits(value_at(e1, 0)), _digits(value_at(e2, 0))))
    agree: list[int] = []
    for k in range(POINTS):
        same = _agree_at(e1, e2, approx, k)
        if same is False:
            return False
        if same:
            agree.append(k)
    if len(agree) < 2:
        return False
    if approx:
        return True
    for k in agree[:2]:
        subs = _subs(syms, k)
        try:
            diff = (e1 - e2).xreplace(subs)
        except _ERRORS:
            return False
        if not is_zero(diff, max(_digits(value_at(e1, k)), _digits(value_at(e2, k)))):
            return False
    return True
