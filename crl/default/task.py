"""The synthetic arithmetic task: a number of up to three digits plus or minus one digit, exactly answered.

A problem is `a + b` or `a - b` with `a` of 1 to 3 digits (the digit count drawn first, so short and long
numbers are equally common) and `b` a single digit; differences may be negative. One-digit right operands
keep the task learnable by a tiny model in a few minutes of CPU (each answer digit depends on a carry or a
borrow from the digit to its right), while the 20,000 distinct problems make held-out problems genuinely new.

Prompt: "What is 347-8?"   answer: "339"   target completion: "\\boxed{339}"

The completion is the boxed answer alone, for the `math` verifier, which reads the last `\\boxed{}`: at most
12 tokens, because sampling is the slow part of an RL round on a CPU.

Splits are made by the project's own code from fixed seeds: the test split first, then the train split drawn
with a different seed and without any problem of the test split, so they are disjoint by construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

MAX_DIGITS = 3
OPS = ("+", "-")
SOURCE = "arith"
TRAIN_SIZE = 10_000
TEST_SIZE = 500


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def expression(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def prompt(self) -> str:
        return f"What is {self.expression}?"

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    @property
    def completion(self) -> str:
        """The target the warm start learns (without the end-of-sequence token)."""
        return f"\\boxed{{{self.answer}}}"


def _operand(rng: random.Random) -> int:
    digits = rng.randint(1, MAX_DIGITS)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def sample_problems(n: int, seed: int, exclude: set[Problem] | frozenset[Problem] = frozenset()) -> list[Problem]:
    """`n` distinct problems, none in `exclude`, the same list for the same arguments."""
    rng = random.Random(seed)
    seen: set[Problem] = set(exclude)
    out: list[Problem] = []
    while len(out) < n:
        p = Problem(_operand(rng), rng.choice(OPS), rng.randint(0, 9))
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def splits(seed: int = 0, train_size: int = TRAIN_SIZE, test_size: int = TEST_SIZE) -> tuple[list[Problem], list[Problem]]:
    """(train, test): disjoint, deterministic in `seed`; the test split does not depend on `train_size`."""
    test = sample_problems(test_size, seed=2 * seed + 1)
    train = sample_problems(train_size, seed=2 * seed, exclude=set(test))
    return train, test


def to_rows(problems: list[Problem], split: str) -> dict[str, list[str]]:
    """Prompt-set columns: `id`, `prompt`, `answer` (the exact integer as a string), `source`."""
    return {
        "id": [f"arith-{split}-{i:05d}" for i in range(len(problems))],
        "prompt": [p.prompt for p in problems],
        "answer": [str(p.answer) for p in problems],
        "source": [SOURCE] * len(problems),
    }


def write_prompt_sets(train_path: Path, test_path: Path, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """Write both splits as Parquet prompt sets (with crl's marker of a prompt set); return (train, test)."""
    import polars as pl

    from crl.io import write_parquet

    train, test = splits(seed)
    for problems, split, path in ((train, "train", train_path), (test, "test", test_path)):
        write_parquet(pl.DataFrame(to_rows(problems, split)), path, kind="prompts")
    return train, test


def parse_prompt(prompt: str) -> Problem:
    """The problem behind a prompt of this task ("What is 347-8?")."""
    expr = prompt.removeprefix("What is ").removesuffix("?")
    for i in range(1, len(expr)):
        if expr[i] in OPS:
            return Problem(int(expr[:i]), expr[i], int(expr[i + 1 :]))
    raise ValueError(f"not an arithmetic prompt: {prompt!r}")
