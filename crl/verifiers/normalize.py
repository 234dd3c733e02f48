"""Normalisation: rewrite an extracted answer into one canonical LaTeX-ish string before comparing.

Removes presentation only: math delimiters, `\\left`/`\\right` and sizing, `\\dfrac`/`\\tfrac` (to `\\frac`),
`\\frac12` (to `\\frac{1}{2}`), `\\text{}`/`\\mathrm{}` wrappers, units after a number, degrees (`^\\circ`),
dollar signs, thousands separators, spacing commands (`\\!`, `\\,`, `~`, `\\quad`), trailing punctuation.
A percent sign is kept as a final "%" so the comparison can apply its percent policy; leading zeros are left
to the number parser ("025" reads as 25). Results are cached: gold answers repeat K times per prompt.
"""

from __future__ import annotations

import re
from functools import lru_cache

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u22c5": "\\cdot ", "\u03c0": "\\pi ",
    "\u221a": "\\sqrt", "\u221e": "\\infty ", "\u2264": "\\leq ", "\u2265": "\\geq ", "\u2260": "\\neq ",
    "\u00b0": "", "\u222a": "\\cup ", "\u2229": "\\cap ", "\u00f7": "\\div ", "\u2208": "\\in ",
}
_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|textrm|textsf|textnormal|mathrm|mathbf|mathit|mathsf|mathtt|mbox|hbox|"
    r"operatorname\*?|boldsymbol|bm|emph)\s*\{"
)
_DROP = re.compile(
    r"\\left\b\.?|\\right\b\.?|\\[bB]igg?[lrm]?\b|\\displaystyle|\\textstyle|\\scriptstyle|\\limits|"
    r"\\hspace\*?\{[^{}]*\}|\\vspace\*?\{[^{}]*\}|\\phantom\{[^{}]*\}|\\(?:rm|bf|it)\b"
)
_SPACES = re.compile(r"(?<!\\)\\[,;:> ]|\\quad\b|\\qquad\b|~|\\enspace\b|\\thinspace\b")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\^\s*\{\s*\}|\\circ\b|\\degree\b|\^\s*\\text\{o\}")
_FRAC_SHORT = re.compile(r"\\(?:[dtc]?frac)\s*(\d|[a-zA-Z])\s*(\d|[a-zA-Z])")
_FRAC_HALF1 = re.compile(r"\\(?:[dtc]?frac)\s*(\d|[a-zA-Z])\s*\{")
_FRAC_HALF2 = re.compile(r"\\(?:[dtc]?frac)\s*(\{[^{}]*\})\s*(\d|[a-zA-Z])")
_SCI_X = re.compile(r"(\d)\s*[xX]\s*10\s*\^")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:(?:,|\{,\}| )\d{3})+(?:\.\d+)?$")
_UNITS = (
    "cm|mm|km|m|meters?|metres?|centimeters?|millimeters?|kilometers?|in|inch|inches|ft|feet|foot|yd|yards?|"
    "mi|miles?|units?|sq|square|cubic|degrees?|deg|radians?|rad|dollars?|cents?|hours?|hrs?|minutes?|mins?|"
    "seconds?|secs?|s|days?|weeks?|months?|years?|mph|kph|kg|g|grams?|kilograms?|lbs?|pounds?|ounces?|oz|"
    "liters?|litres?|l|ml|gallons?|people|persons?|students?|ways|points?|apples|marbles|coins|pages|books|"
    "cups|feet\\^2|m\\^2|cm\\^2|cm\\^3|m\\^3|ft\\^2|in\\^2|percent|per|each|times|sides?|edges?|faces?|"
    "vertices|numbers?|integers?|digits?|games?|tickets?|boxes|children|men|women|hrs|min|sec|am|pm|a\\.m\\.|p\\.m\\.|"
    "C|F|K|N|J|W|V|Hz|kHz|MHz|eV|keV|MeV|Pa|atm|mol|nm|um|pc|kpc|Mpc|AU|ly|erg|ergs|yr|Myr|Gyr"
)
_TRAILING_UNITS = re.compile(
    r"(?<=[\d}).a-zA-Z])\s+(?:(?:" + _UNITS + r")(?:\s*\^\s*\{?-?\d\}?)?(?:\s*/\s*|\s+|\.)?)+$"
)
_REPEATING = re.compile(r"(-?)(\d*)\.(\d*)\\overline\{(\d+)\}")
_SUB_BRACED = re.compile(r"_\{(\w)\}")


def _repeating(m: re.Match[str]) -> str:
    """0.1\\overline{6} -> \\frac{1}{6}: a repeating decimal as an exact fraction."""
    from fractions import Fraction

    sign, whole, fixed, rep = m.groups()
    value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
    value += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"
_TRAILING_WORDS = re.compile(r"^([-+]?[\d.,/]+)\s+[a-zA-Z][a-zA-Z ]*\.?$")


def _unwrap_commands(s: str) -> str:
    """Replace `\\text{...}` (and `\\mathrm{...}`, ...) with its content, innermost braces kept balanced."""
    for _ in range(20):
        m = _WRAPPERS.search(s)
        if not m:
            return s
        depth, i = 1, m.end()
        while i < len(s) and depth:
            if s[i] == "\\":
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(s[i], 0)
            i += 1
        s = s[: m.start()] + " " + s[m.end() : i - 1] + " " + s[i:]
    return s


def strip_delimiters(s: str) -> str:
    """Remove math-mode delimiters around the whole answer (and a leading 'x =' is left alone)."""
    s = s.strip()
    for _ in range(4):
        before = s
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("\\boxed{", "}")):
            if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
                s = s[len(left) : len(s) - len(right)].strip()
        if s == before:
            break
    return s


@lru_cache(maxsize=1 << 16)
def normalize(answer: str) -> str:
    """The canonical form of an answer string (see module docstring); idempotent and cached."""
    s = answer.strip()
    if not s:
        return s
    if s.isdigit() or (s[0] == "-" and s[1:].isdigit()):  # the common case: a plain integer
        return s
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    s = strip_delimiters(s)
    s = s.replace("\\$", " ").replace("$", " ")
    s = _DROP.sub(" ", s)
    s = _unwrap_commands(s)
    s = _SPACES.sub(" ", s.replace("\\!", ""))
    s = _DEGREES.sub(" ", s)
    s = s.replace("\\%", "%").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = s.replace("\\dbinom", "\\binom").replace("\\tbinom", "\\binom")
    s = s.replace("\\lt", "<").replace("\\gt", ">").replace("\\leqslant", "\\leq").replace("\\geqslant", "\\geq")
    s = re.sub(r"\\le(?![a-zA-Z])", r"\\leq", s)
    s = re.sub(r"\\ge(?![a-zA-Z])", r"\\geq", s)
    s = s.replace("\\ne ", "\\neq ").replace("\\lbrace", "\\{").replace("\\rbrace", "\\}")
    s = s.replace("\\lbrack", "[").replace("\\rbrack", "]").replace("\\langle", "(").replace("\\rangle", ")")
    s = s.replace("\\mathbb{R}", "\\mathbb R").replace("\\emptyset", "\\varnothing")
    if "\\approx" in s:
        s = s.rsplit("\\approx", 1)[1]
    s = _SCI_X.sub(r"\1\\times 10^", s)
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF1.sub(r"\\frac{\1}{", s)
    s = _FRAC_HALF2.sub(r"\\frac\1{\2}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    if "\\overline" in s:
        s = _REPEATING.sub(_repeating, s)
    if "_{" in s:
        s = _SUB_BRACED.sub(r"_\1", s)
    s = s.replace("**", " ")
    s = " ".join(s.split())
    s = s.strip().rstrip(".,;:?").strip()
    s = s.lstrip("=:").strip() if s[:1] in "=:" else s
    s = _TRAILING_UNITS.sub("", s).strip()
    m = _TRAILING_WORDS.match(s)
    if m:
        s = m.group(1)
    if _THOUSANDS.match(s):
        s = s.replace("{,}", "").replace(",", "").replace(" ", "")
    return s.strip()


def text_key(answer: str) -> str:
    """A loose key for comparing plain-text answers: lower case, no spaces, braces or surrounding parens."""
    s = normalize(answer).lower()
    if " " in s:
        s = re.sub(r"\b(?:the|a|an)\b", "", s)
    s = re.sub(r"[\s{}\\]", "", s)
    if len(s) == 3 and s[0] == "(" and s[2] == ")":
        s = s[1]
    return s.rstrip(".")
