"""The parsed form of an answer, shared by the modules that build and compare it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

REL_RE = re.compile(r"\\leq|\\geq|\\neq|<=|>=|!=|<|>")


@dataclass(frozen=True, slots=True)
class Node:
    """A parsed answer: its kind, value, normalised text, and the flags the float and percent policy need."""

    kind: str  # num | expr | text | seq | set | list | eq | rel | matrix | ratio | alt | sset
    value: Any
    text: str
    approx: bool = False
    pct: bool = False
    brackets: str = ""  # "()" "[)" ... for seq; the label for an assignment (kind eq)
    labels: tuple[str, ...] = ()  # names of a labelled tuple ("x = 5, y = 2")
