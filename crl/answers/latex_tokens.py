"""The vocabulary and the bounds of the LaTeX parser (`latex.py`): tokens, known words, refused sizes.

Tokens: numbers (decimals, scientific), commands (`\\frac`), letter runs (split into known function names and
single-letter symbols), operators. The token pattern is matched at one position at a time after whitespace is
skipped by hand, and no part of it can match a run of characters in two ways, so tokenizing is linear.
Bounds, so a hostile answer is refused in microseconds instead of hanging a worker: at most `MAX_CHARS`
characters and `MAX_TOKENS` tokens, nesting depth `MAX_DEPTH`, numeric exponents up to `MAX_EXPONENT` in
magnitude with integer powers up to `MAX_BITS` bits, factorials and binomials of at most `MAX_FACTORIAL`.
"""

from __future__ import annotations

import re

import sympy as sp

MAX_CHARS = 1000
MAX_TOKENS = 400
MAX_DEPTH = 60
MAX_EXPONENT = 10_000
MAX_BITS = 100_000
MAX_FACTORIAL = 1000


class NotMath(ValueError):
    """The string is not in the math grammar (it may still be a plain-text answer)."""


class Refused(ValueError):
    """The string is math but too large to evaluate safely (huge power, factorial, length)."""


_TOKEN = re.compile(
    r"(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+(?![a-zA-Z]))?)|(?P<cmd>\\[a-zA-Z]+|\\[{}|])"
    r"|(?P<word>[a-zA-Z]+)|(?P<op>[-+*/^_()\[\]{}|!,'=<>])"
)
FUNCS = {
    "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sec": sp.sec, "csc": sp.csc, "cot": sp.cot,
    "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh,
    "tanh": sp.tanh, "ln": sp.log, "log": sp.log, "exp": sp.exp, "sqrt": sp.sqrt,
}
INVERSE = {"sin": sp.asin, "cos": sp.acos, "tan": sp.atan}
WORDS = {"pi": sp.pi, "infty": sp.oo, "inf": sp.oo, "oo": sp.oo}
_WORD_SPLIT = re.compile("|".join(sorted([*FUNCS, *WORDS], key=len, reverse=True)) + "|[a-zA-Z]")
GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi",
    "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}
MUL = {"*", "\\cdot", "\\times", "\\ast"}
DIV = {"/", "\\div"}
START = {"(", "{", "|", "\\frac", "\\sqrt", "\\pi", "\\infty", "\\binom", "\\lfloor", "\\lceil", "\\exp",
          "\\imath", "\\vert", "\\lvert"}


def tokenize(s: str) -> list[tuple[str, str]]:
    """(kind, text) tokens; letter runs split into known words and single letters; NotMath on other text."""
    if len(s) > MAX_CHARS:
        raise Refused(f"answer longer than {MAX_CHARS} characters")
    out: list[tuple[str, str]] = []
    pos, n = 0, len(s)
    while pos < n:
        while pos < n and s[pos].isspace():
            pos += 1
        if pos == n:
            break
        m = _TOKEN.match(s, pos)
        if not m:
            raise NotMath(f"unexpected {s[pos:pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup
        text = m.group(kind)
        if kind == "word":
            parts = _WORD_SPLIT.findall(text)
            if len(text) >= 3 and all(len(p) == 1 for p in parts):
                raise NotMath(f"word {text!r}")
            out.extend(("word" if len(p) > 1 else "letter", p) for p in parts)
        else:
            out.append((kind, text))
        if len(out) > MAX_TOKENS:
            raise Refused(f"answer longer than {MAX_TOKENS} tokens")
    return out


def checked_pow(base: sp.Expr, exp: sp.Expr) -> sp.Expr:
    """base**exp, refused when a numeric power would be astronomically large."""
    if exp.is_Number and base.is_Number and base not in (sp.S.Zero, sp.S.One, sp.S.NegativeOne):
        if abs(exp) > MAX_EXPONENT:
            raise Refused("exponent too large")
        if exp.is_Integer and base.is_Rational:
            bits = abs(int(exp)) * max(int(base.p).bit_length(), int(base.q).bit_length())
            if bits > MAX_BITS:
                raise Refused("power too large")
    elif exp.is_Number and abs(exp) > MAX_EXPONENT:
        raise Refused("exponent too large")
    return sp.Pow(base, exp)


def checked_factorial(arg: sp.Expr) -> sp.Expr:
    """arg!, refused for integers above MAX_FACTORIAL."""
    if arg.is_Number:
        if not arg.is_Integer or arg < 0:
            raise NotMath("factorial of a non-integer")
        if arg > MAX_FACTORIAL:
            raise Refused("factorial too large")
    return sp.factorial(arg)
