"""A bounded parser from (normalised) LaTeX or plain-text math to sympy, that never evaluates model text.

A small recursive-descent parser over a restricted grammar builds sympy objects directly (no `eval`, no
`sympify` of model text): numbers, single-letter and Greek symbols (with subscripts), + - * / ^ and implicit
products, `\\frac`, `\\sqrt[n]`, `\\binom`, `!`, `|x|`, floor/ceil, `\\pi`, `e`, `i`, `\\infty`, and the usual
functions (`\\sin`, `\\ln`, `\\log_b`, `\\exp`, ... also as plain words). Mixed numbers ("2\\frac{1}{2}") read as
2 + 1/2. Decimals are read exactly (0.5 is 1/2) and mark the result approximate, which selects the float
tolerance in `equivalence.py`.

The tokens, known words and size bounds (a hostile answer is refused in microseconds) are in `latex_tokens.py`.
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from crl.answers.latex_tokens import (
    DIV,
    FUNCS,
    GREEK,
    INVERSE,
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_FACTORIAL,
    MUL,
    START,
    WORDS,
    NotMath,
    Refused,
    checked_factorial,
    checked_pow,
    tokenize,
)

class _Parser:
    """Recursive descent over the token list; one instance per string."""

    def __init__(self, tokens: list[tuple[str, str]]):
        self.toks = tokens
        self.i = 0
        self.depth = 0
        self.abs_depth = 0
        self.approx = False

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.toks[j][1] if j < len(self.toks) else None

    def kind(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.toks[j][0] if j < len(self.toks) else None

    def take(self) -> str:
        if self.i >= len(self.toks):
            raise NotMath("unexpected end")
        self.i += 1
        return self.toks[self.i - 1][1]

    def expect(self, text: str) -> None:
        if self.take() != text:
            raise NotMath(f"expected {text}")

    def parse(self) -> sp.Expr:
        e = self.expr()
        if self.i != len(self.toks):
            raise NotMath(f"unexpected {self.peek()!r}")
        return e

    def expr(self) -> sp.Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Refused("nesting too deep")
        left = self.term()
        while self.peek() in ("+", "-", "\\pm", "\\mp"):
            op = self.take()
            if op in ("\\pm", "\\mp"):
                raise NotMath("plus-minus")
            right = self.term()
            left = left + right if op == "+" else left - right
        self.depth -= 1
        return left

    def term(self) -> sp.Expr:
        left = self.unary()
        while True:
            tok = self.peek()
            if tok in MUL:
                self.take()
                left = left * self.unary()
            elif tok in DIV:
                self.take()
                left = left / self.unary()
            elif self.starts_primary():
                left = left * self.power()
            else:
                return left

    def starts_primary(self) -> bool:
        tok, kind = self.peek(), self.kind()
        if tok is None:
            return False
        if kind in ("num", "letter", "word"):
            return True
        if tok == "|":
            return self.abs_depth == 0
        if kind == "cmd":
            name = tok[1:]
            return tok in START or name in FUNCS or name in GREEK
        return tok in ("(", "{")

    def unary(self) -> sp.Expr:
        tok = self.peek()
        if tok == "-":
            self.take()
            return -self.unary()
        if tok == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> sp.Expr:
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            return checked_pow(base, self.exponent())
        return base

    def exponent(self) -> sp.Expr:
        if self.peek() in ("-", "+"):
            sign = -1 if self.take() == "-" else 1
            return sign * self.exponent()
        return self.power()

    def postfix(self) -> sp.Expr:
        e = self.primary()
        while self.peek() == "!":
            self.take()
            e = checked_factorial(e)
        if self.peek() == "'":
            raise NotMath("prime")
        return e

    def group(self) -> sp.Expr:
        """A `{...}` argument, or a single token written without braces."""
        if self.peek() == "{":
            self.take()
            e = self.expr()
            self.expect("}")
            return e
        return self.postfix()

    def number(self, text: str) -> sp.Expr:
        if "e" in text or "E" in text:
            mant, _, ex = text.replace("E", "e").partition("e")
            if abs(int(ex)) > MAX_EXPONENT:
                raise Refused("exponent too large")
            self.approx = self.approx or "." in mant
            return sp.Rational(mant) * sp.Integer(10) ** int(ex)
        if "." in text:
            self.approx = True
        return sp.Rational(text) if "." in text else sp.Integer(text)

    def mixed_fraction(self, whole: sp.Expr) -> sp.Expr | None:
        """2\\frac{1}{2} -> 5/2 when an integer is directly followed by a fraction of integer literals."""
        t = self.toks[self.i : self.i + 7]
        if len(t) == 7 and [x[1] for x in t[:2]] == ["\\frac", "{"] and t[2][0] == "num" and t[3][1] == "}" \
                and t[4][1] == "{" and t[5][0] == "num" and t[6][1] == "}" and self.peek(7) != "^" \
                and whole.is_Integer and t[2][1].isdigit() and t[5][1].isdigit():
            self.i += 7
            return whole + sp.Rational(int(t[2][1]), int(t[5][1]))
        return None

    def func_arg(self) -> sp.Expr:
        if self.peek() in ("(", "{", "["):
            return self.primary()
        return self.power()

    def apply(self, name: str) -> sp.Expr:
        """A function application: optional `_base` (log), optional `^p` (sin^2 x), then the argument."""
        base = None
        if name == "log" and self.peek() == "_":
            self.take()
            base = self.group()
        power = None
        if self.peek() == "^":
            self.take()
            power = self.group()
        if name == "sqrt" and self.peek() == "[":
            self.take()
            index = self.expr()
            self.expect("]")
            arg = self.group()
            if not (index.is_Integer and 1 < index <= 100):
                raise NotMath("root index")
            value = sp.root(arg, index)
        else:
            arg = self.group() if name == "sqrt" else self.func_arg()
            if power == -1 and name in INVERSE:  # \\tan^{-1} x is arctan x
                return INVERSE[name](arg)
            value = sp.log(arg, base) if base is not None else FUNCS[name](arg)
        return checked_pow(value, power) if power is not None else value

    def primary(self) -> sp.Expr:
        kind, tok = self.kind(), self.take()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Refused("nesting too deep")
        try:
            return self._primary(kind, tok)
        finally:
            self.depth -= 1

    def _primary(self, kind: str | None, tok: str) -> sp.Expr:
        if kind == "num":
            if self.peek() == "_":
                raise NotMath("number with a base subscript")
            value = self.number(tok)
            mixed = self.mixed_fraction(value) if self.peek() == "\\frac" else None
            return mixed if mixed is not None else value
        if kind == "letter":
            return self.symbol(tok)
        if kind == "word":
            return WORDS[tok] if tok in WORDS else self.apply(tok)
        if tok in ("(", "[", "{"):
            close = {"(": ")", "[": "]", "{": "}"}[tok]
            saved, self.abs_depth = self.abs_depth, 0
            e = self.expr()
            self.abs_depth = saved
            self.expect(close)
            return e
        if tok in ("|", "\\vert", "\\lvert"):
            self.abs_depth += 1
            e = self.expr()
            self.abs_depth -= 1
            if self.take() not in ("|", "\\vert", "\\rvert"):
                raise NotMath("unclosed |")
            return sp.Abs(e)
        if tok in ("\\lfloor", "\\lceil"):
            e = self.expr()
            self.expect("\\rfloor" if tok == "\\lfloor" else "\\rceil")
            return sp.floor(e) if tok == "\\lfloor" else sp.ceiling(e)
        if tok == "\\frac":
            num = self.group()
            return num / self.group()
        if tok == "\\binom":
            n, k = self.group(), self.group()
            if (n.is_Number and abs(n) > MAX_FACTORIAL * 10) or (k.is_Number and abs(k) > MAX_FACTORIAL * 10):
                raise Refused("binomial too large")
            return sp.binomial(n, k)
        if tok in ("\\pi",):
            return sp.pi
        if tok == "\\infty":
            return sp.oo
        if tok == "\\imath":
            return sp.I
        if kind == "cmd" and tok[1:] in FUNCS:
            return self.apply(tok[1:])
        if kind == "cmd" and tok[1:] in GREEK:
            return self.symbol(tok[1:])
        raise NotMath(f"unexpected {tok!r}")

    def symbol(self, name: str) -> sp.Expr:
        if self.peek() == "_":
            self.take()
            if self.peek() == "{":
                self.take()
                parts = []
                while self.peek() not in ("}", None):
                    parts.append(self.take())
                self.expect("}")
                sub = "".join(parts)
            else:
                sub = self.take()
            return sp.Symbol(f"{name}_{sub}")
        if name == "e":
            return sp.E
        if name == "i":
            return sp.I
        return sp.Symbol(name)


@lru_cache(maxsize=1 << 15)
def _parse_cached(s: str) -> tuple[str, object, bool]:
    try:
        p = _Parser(tokenize(s))
        return "ok", p.parse(), p.approx
    except Refused as exc:
        return "refused", str(exc), False
    except (NotMath, TypeError, ValueError, ZeroDivisionError, RecursionError) as exc:
        return "notmath", str(exc), False


def parse_math(s: str) -> tuple[sp.Expr, bool]:
    """(sympy expression, approximate?) for a normalised answer; raises NotMath or Refused."""
    status, value, approx = _parse_cached(s)
    if status == "ok":
        return value, approx  # type: ignore[return-value]
    raise (Refused if status == "refused" else NotMath)(value)
