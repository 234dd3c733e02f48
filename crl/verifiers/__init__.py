"""Verifiers: turn (completion, gold answer) into a reward, by name, safely and fast.

A verifier is a plain function `(completion: str, answer: str) -> Verdict`, registered under a short name with
`@register("name")`, one module per kind (`math`, `gsm8k`, `exact`, `choice`). `get_verifier` also accepts
"package.module:function" for a user verifier, whose float or bool result is wrapped in a Verdict.
`verify_many` checks a batch in worker processes with a per-item wall-clock limit (see `pool.py`), so a
pathological answer costs at most its limit and never stalls a run, and it works from any thread.

Model text is never evaluated: answers are parsed by the bounded LaTeX/plain-text parser in crl/answers/latex.py, which
builds sympy objects directly and refuses huge powers, factorials and very long inputs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from crl.errors import CrlError

@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one completion: the reward, what was read as the answer, and why."""

    reward: float  # 1.0 correct, 0.0 otherwise
    pred: str | None  # the extracted answer (normalised text), None when nothing was found
    status: str  # one of crl.data.schemas.STATUSES: "ok" | "no_answer" | "unparsable" | "timeout" | "error"


Verifier = Callable[[str, str], Verdict]
REGISTRY: dict[str, Verifier] = {}


def register(name: str) -> Callable[[Verifier], Verifier]:
    """Decorator: make a verifier function available under `name` (for `--verifier name`)."""

    def add(fn: Verifier) -> Verifier:
        if name in REGISTRY:
            raise ValueError(f"verifier {name!r} is registered twice")
        REGISTRY[name] = fn
        return fn

    return add


def _wrap_user(fn: Callable[[str, str], object], name: str) -> Verifier:
    """Adapt a user function returning a Verdict, a float or a bool to the Verdict contract."""

    def verifier(completion: str, answer: str) -> Verdict:
        out = fn(completion, answer)
        if isinstance(out, Verdict):
            return out
        if isinstance(out, (bool, int, float)):
            return Verdict(float(out), None, "ok")
        raise TypeError(f"verifier {name} returned {type(out).__name__}, expected Verdict, float or bool")

    verifier.__name__ = f"user:{name}"
    return verifier


def get_verifier(name: str) -> Verifier:
    """The verifier registered under `name`, or the user function named "package.module:function"."""
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise CrlError(f"cannot load verifier '{name}': {type(exc).__name__}: {exc}".replace("\n", " ")) from None
        if not callable(fn):
            raise CrlError(f"verifier '{name}' is not callable")
        return _wrap_user(fn, name)
    choices = ", ".join(sorted(REGISTRY))
    raise CrlError(f"unknown verifier '{name}'; choose one of: {choices}, or package.module:function")


def verify_many(
    completions: Sequence[str],
    answers: Sequence[str],
    verifier: str = "math",
    workers: int = 0,
    timeout: float = 5.0,
    progress: bool = False,
    truncated: Sequence[bool] | None = None,
) -> list[Verdict]:
    """Verify completions against gold answers in worker processes; verdicts come back in input order.

    workers=0 uses os.cpu_count(). Each item gets `timeout` seconds of wall clock: a worker that overruns is
    killed and replaced and the item gets status "timeout". `truncated` flags completions stopped by the length
    limit: verifiers that take a `truncated` keyword (math, math_boxed) then credit only a complete final answer.
    Raises CrlError when every item ends in status "error" (a broken verifier or worker, not wrong answers).
    """
    if len(completions) != len(answers):
        raise CrlError(f"verify_many: {len(completions)} completions but {len(answers)} answers")
    if truncated is not None and len(truncated) != len(completions):
        raise CrlError(f"verify_many: {len(completions)} completions but {len(truncated)} truncation flags")
    get_verifier(verifier)  # fail fast, in the caller, on an unknown name
    from crl.verifiers.pool import run_pool

    flags = None if truncated is None else [bool(t) for t in truncated]
    return run_pool(list(completions), list(answers), verifier, workers, timeout, progress, flags)


# The built-in verifiers register themselves on import.
from crl.verifiers import choice, exact, gsm8k, math  # noqa: E402,F401

__all__ = ["REGISTRY", "Verdict", "get_verifier", "register", "verify_many"]
