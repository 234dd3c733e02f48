"""Normalisation: rewrite an extracted answer into one canonical LaTeX-ish string before comparing.

Removes presentation only: math delimiters, `\\left`/`\\right` and sizing, `\\dfrac`/`\\tfrac` (to `\\frac`),
`\\frac12` (to `\\frac{1}{2}`), `\\text{}`/`\\mathrm{}`/`\\mathcal{}`... wrappers, units after a number, degrees
(`^\\circ`, which never takes a brace of an enclosing `\\frac` with it), currency signs, thousands separators
(`1,000`, `11,\\!111`, `14{,}916`, `1 000`), spacing commands, trailing punctuation, a trailing parenthetical in
words ("\\frac{3}{2} (about 1.5)"), number words ("twelve", "forty-two" as a whole answer), "infinity", and a "j"
imaginary unit ("3+2j"). A percent sign (or the words "percent", "pct") becomes a final "%" so that the comparison
can apply its percent policy; a plain-text mixed number "3 1/2" becomes 7/2; leading zeros are left to the number
parser ("025" reads as 25). A "0," prefix is never a thousands group ("0,111" stays, for the decimal-comma rule in
`equivalence.py`). A subscript written after a power ("v^2_0") moves before it ("v_0^2"). Results are cached: gold
answers repeat K times per prompt.

Every pattern here is linear in its input (no nested or overlapping quantifiers) and the input is bounded by
`MAX_INPUT` characters; longer answers are returned unchanged and refused by the parser.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

MAX_INPUT = 4000

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": "\\times ", "\u00b7": "\\cdot ", "\u22c5": "\\cdot ", "\u03c0": "\\pi ",
    "\u221a": "\\sqrt", "\u221e": "\\infty ", "\u2264": "\\leq ", "\u2265": "\\geq ", "\u2260": "\\neq ",
    "\u00b0": "", "\u222a": "\\cup ", "\u2229": "\\cap ", "\u00f7": "\\div ", "\u2208": "\\in ", "\u00b2": "^2",
    "\u00b3": "^3", "\u20ac": " ", "\u00a3": " ", "\u00a5": " ", "\u2248": "\\approx ", "\u00a0": " ",
}
_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|textrm|textsf|textnormal|mathrm|mathbf|mathit|mathsf|mathtt|mathcal|mathscr|"
    r"mathfrak|mbox|hbox|operatorname\*?|boldsymbol|bm|emph|underline)\s*\{"
)
_DROP = re.compile(
    r"\\left(?![a-zA-Z])\.?|\\right(?![a-zA-Z])\.?|\\[bB]igg?[lrm]?(?![a-zA-Z])|\\displaystyle|\\textstyle|"
    r"\\scriptstyle|\\limits|\\hspace\*?\{[^{}]*\}|\\vspace\*?\{[^{}]*\}|\\phantom\{[^{}]*\}|\\(?:rm|bf|it)(?![a-zA-Z])"
)
_SPACES = re.compile(r"(?<!\\)\\[,;:> ]|\\quad(?![a-zA-Z])|\\qquad(?![a-zA-Z])|~|\\enspace|\\thinspace")
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\^\s*\{\s*\}|\\circ(?![a-zA-Z])|\\degree|\^\s*\\text\{o\}")
_FRAC_SHORT = re.compile(r"\\(?:[dtc]?frac)\s*(\d|[a-zA-Z])\s*(\d|[a-zA-Z])")
_FRAC_HALF1 = re.compile(r"\\(?:[dtc]?frac)\s*(\d|[a-zA-Z])\s*\{")
_FRAC_HALF2 = re.compile(r"\\(?:[dtc]?frac)\s*(\{[^{}]*\})\s*(\d|[a-zA-Z])")
_SCI_X = re.compile(r"(\d)\s*[xX]\s*10\s*\^")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_THOUSANDS = re.compile(r"^[-+]?[1-9]\d{0,2}(?:(?:,|\{,\}| )\d{3})+(?:\.\d+)?$")
_INFINITY_WORD = re.compile(r"(?<![a-zA-Z\\])infinity(?![a-zA-Z])")
_J_COMPLEX = re.compile(r"^[-+]?(?:\d+(?:\.\d+)? ?[-+] ?)?\d*(?:\.\d+)? ?\*? ?j$")
_GLUED_THOUSANDS = re.compile(r",\\!\s*")
_SPACED_BRACE_COMMA = re.compile(r"(\d) ?\{,\} ?(\d)")
_MIXED = re.compile(r"^(-?)(\d+)\s+(\d+)/(\d+)$")
_PERCENT_WORD = re.compile(r"(?<=[\d}])\s*(?:percent(?:age)?|pct)\.?$", re.IGNORECASE)
_GLUED_UNIT = re.compile(r"^([-+]?\d[\d.,]*)\s*([a-zA-Z]{1,12})(?:\^\{?[23]\}?)?$")
_PLAIN_NUMBER = re.compile(r"[-+]?[\d.,]+")
_LE = re.compile(r"\\le(?![a-zA-Z])")
_GE = re.compile(r"\\ge(?![a-zA-Z])")
_NE = re.compile(r"\\ne(?![a-zA-Z])")
_ARTICLES = re.compile(r"\b(?:the|a|an)\b")
_KEY_DROP = re.compile(r"[\s{}\\]")
_REPEATING = re.compile(r"(?<![\d.])(-?)(\d*)\.(\d*)\\overline\{(\d+)\}")
_SUB_BRACED = re.compile(r"_\{(\w)\}")
_POWER_THEN_SUB = re.compile(r"(?<![\\A-Za-z])([A-Za-z])\^(\{[^{}]{1,12}\}|\w)_(\{[^{}]{1,12}\}|\w)")
_REMARK = re.compile(r"\s\(([^()]{0,80})\)$")
_REMARK_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_MATH_WORDS = frozenset("sin cos tan sec csc cot log exp sqrt arcsin arccos arctan sinh cosh tanh mod gcd lcm pi".split())
_TRAILING_WORDS = re.compile(r"^([-+]?[\d.,/]+)\s+[a-zA-Z][a-zA-Z ]*\.?$")

UNITS = frozenset((
    "cm mm km m meter meters metre metres centimeter centimeters millimeter millimeters kilometer kilometers in inch "
    "inches ft feet foot yd yard yards mi mile miles unit units sq square cubic degree degrees deg radian radians "
    "rad dollar dollars cent cents euro euros yuan hour hours hr hrs minute minutes min mins second seconds sec secs "
    "s day days week weeks month months year years mph kph kmh kg g gram grams kilogram kilograms lb lbs pound "
    "pounds ounce ounces oz liter liters litre litres l ml gallon gallons people person persons student students "
    "way ways point points apples marbles coins pages books cups each times side sides edge edges face faces "
    "vertices number numbers integer integers digit digits game games ticket tickets boxes children men women am pm "
    "a.m. p.m. C F K N J W V Hz kHz MHz eV keV MeV Pa atm mol nm um pc kpc Mpc AU ly erg ergs yr Myr Gyr sqft"
).split())
_ONE_LETTER = frozenset("msglCFKNJWV")
_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS = {w: i for i, w in enumerate(_SMALL)} | {t: 20 + 10 * i for i, t in enumerate(_TENS)} | {
    f"{t}{sep}{u}": 20 + 10 * i + j for i, t in enumerate(_TENS) for j, u in enumerate(_SMALL[1:10], 1)
    for sep in ("-", " ")} | {"hundred": 100, "one hundred": 100, "a hundred": 100}


def _repeating(m: re.Match[str]) -> str:
    """0.1\\overline{6} -> \\frac{1}{6}: a repeating decimal as an exact fraction."""
    sign, whole, fixed, rep = m.groups()
    value = Fraction(int(whole or "0")) + Fraction(int(fixed or "0"), 10 ** len(fixed))
    value += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    return f"{sign}\\frac{{{value.numerator}}}{{{value.denominator}}}"


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


def _is_unit(token: str, head: str) -> bool:
    """Whether a trailing token is a unit word (with an optional ^2 / ^3, or a compound "m/s"), given what precedes."""
    word = token.rstrip(".")
    for power in ("^2", "^3", "^{2}", "^{3}"):
        if word.endswith(power):
            word = word[: -len(power)]
    if "/" in word:
        return all(p in UNITS for p in word.split("/")) and bool(head)
    if word in _ONE_LETTER:
        return bool(_PLAIN_NUMBER.fullmatch(head))
    return word in UNITS and bool(head) and head[-1] in "0123456789}).abcdefghijklmnopqrstuvwxyz"


def _drop_remark(s: str) -> str:
    """Drop a trailing parenthetical in words after the value ("\\frac{3}{2} (about 1.5)"), not an argument or a tuple."""
    m = _REMARK.search(s) if s.endswith(")") else None
    if m is None or not s[: m.start()].strip():
        return s
    words = [w.lower() for w in _REMARK_WORD.findall(m.group(1))]
    return s[: m.start()].rstrip() if words and not all(w in _MATH_WORDS for w in words) else s


def strip_units(s: str) -> str:
    """Drop unit words after a value ("15 cm^2" -> "15", "5 square units" -> "5"); token by token, linear."""
    m = _GLUED_UNIT.match(s)
    if m and (m.group(2) in UNITS and m.group(2) not in _ONE_LETTER or m.group(2) in ("cm", "mm", "km", "m")):
        return m.group(1)
    tokens = s.split(" ")
    while len(tokens) > 1:
        last = tokens[-1]
        if last in ("^2", "^3", "^{2}", "^{3}") and len(tokens) > 2 and _is_unit(tokens[-2], " ".join(tokens[:-2])):
            tokens[-2:] = [tokens[-2] + last]
            continue
        if not _is_unit(last, " ".join(tokens[:-1]).rstrip()):
            break
        tokens.pop()
    return " ".join(tokens)


def strip_delimiters(s: str) -> str:
    """Remove math-mode delimiters (and one `\\boxed{}`) around the whole answer."""
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
    if not s or len(s) > MAX_INPUT:
        return s
    if s.isdigit() or (s[0] == "-" and s[1:].isdigit()):  # the common case: a plain integer
        return s
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    s = strip_delimiters(s)
    s = _GLUED_THOUSANDS.sub(",", s).replace("{, }", "{,}")  # "11,\\! 111" and "14 {, }916" are one number
    s = s.replace("\\$", " ").replace("$", " ").replace("\\!", "")
    s = _SPACED_BRACE_COMMA.sub(r"\1{,}\2", s)
    s = _DROP.sub(" ", s)
    s = _unwrap_commands(s)
    s = _SPACES.sub(" ", s)
    s = _DEGREES.sub(" ", s)
    s = s.replace("\\%", "%").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = s.replace("\\dbinom", "\\binom").replace("\\tbinom", "\\binom")
    s = s.replace("\\lt", "<").replace("\\gt", ">").replace("\\leqslant", "\\leq").replace("\\geqslant", "\\geq")
    s = _LE.sub(r"\\leq", s)
    s = _GE.sub(r"\\geq", s)
    s = _NE.sub(r"\\neq", s)
    s = s.replace("\\lbrace", "\\{").replace("\\rbrace", "\\}").replace("\\lbrack", "[").replace("\\rbrack", "]")
    s = s.replace("\\langle", "(").replace("\\rangle", ")")
    s = s.replace("\\mathbb{R}", "\\mathbb R").replace("\\emptyset", "\\varnothing")
    s = _SCI_X.sub(r"\1\\times 10^", s)
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF1.sub(r"\\frac{\1}{", s)
    s = _FRAC_HALF2.sub(r"\\frac\1{\2}", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    if "\\overline" in s:
        s = _REPEATING.sub(_repeating, s)
    if "_" in s and "^" in s:  # v^2_0 is v_0^2
        s = _POWER_THEN_SUB.sub(r"\1_\3^\2", s)
    if "_{" in s:
        s = _SUB_BRACED.sub(r"_\1", s)
    s = " ".join(s.replace("**", " ").split())
    s = s.strip().rstrip(".,;:?").strip()
    s = s.lstrip("=:").strip() if s[:1] in "=:" else s
    s = _PERCENT_WORD.sub("%", s)
    s = strip_units(s).strip()
    s = _drop_remark(s)
    m = _TRAILING_WORDS.match(s)
    if m:
        s = m.group(1)
    if _THOUSANDS.match(s):
        s = s.replace("{,}", "").replace(",", "").replace(" ", "")
    if s.lower() in NUMBER_WORDS:
        s = str(NUMBER_WORDS[s.lower()])
    s = _INFINITY_WORD.sub(r"\\infty", s)
    if _J_COMPLEX.match(s):  # engineering notation for the imaginary unit: "3+2j"
        s = s[:-1] + "i"
    m = _MIXED.match(s)
    if m and int(m.group(3)) < int(m.group(4)):
        whole = Fraction(int(m.group(2))) + Fraction(int(m.group(3)), int(m.group(4)))
        s = f"{m.group(1)}\\frac{{{whole.numerator}}}{{{whole.denominator}}}"
    return s.strip()


def text_key(answer: str) -> str:
    """A loose key for comparing plain-text answers: lower case, no spaces, braces or surrounding parens."""
    s = normalize(answer).lower()
    if " " in s:
        s = _ARTICLES.sub("", s)
    s = _KEY_DROP.sub("", s)
    if len(s) == 3 and s[0] == "(" and s[2] == ")":
        s = s[1]
    return s.rstrip(".")
