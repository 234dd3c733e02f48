"""Prompt sets from reasoning-gym's task generators: ``crl data import reasoning-gym:TASK --rows N --seed S``.

reasoning-gym (Apache-2.0, ``pip install 'crl[tasks]'``) holds about a hundred procedural task families (counting,
number theory, logic, string manipulation, ...), each a seeded generator with an exact answer. A task is named as
reasoning-gym names it (``reasoning-gym:letter_counting``), its generator options are ``--param KEY=VALUE``
(values read as JSON where they parse: ``--param min_words=5``), and the same task, options, seed and row count
give the same set on any machine. The library draws problem i from seed + i, so a held-out split takes a seed far
from the training rows, and ``--exclude`` keeps the problems it shares with them out of the training set. Rows become
``id`` ``TASK-SSSS-NNNNN``, ``prompt`` (the generator's question, which says how to answer), ``answer`` and
``source`` ``reasoning-gym:TASK``; grading is crl's own verifier, not the library's ``score_answer``.
"""

from __future__ import annotations

import json
from typing import Any

from crl.config.resolve import assignments
from crl.errors import CrlError

PREFIX = "reasoning-gym:"


def is_generator(source: str) -> bool:
    """Whether an import source names a reasoning-gym task rather than a file."""
    return str(source).startswith(PREFIX)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["min_words=5", "letters=ab"]`` as ``{"min_words": 5, "letters": "ab"}``: JSON values where they parse."""
    out: dict[str, Any] = {}
    for _, key, value in assignments(items, "--param", "KEY=VALUE"):
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def generate_rows(source: str, rows: int, seed: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    """``rows`` problems of the task named in ``source``, as prompt-set rows."""
    task = source[len(PREFIX):]
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise CrlError(f"{source}: reasoning-gym is not installed (pip install 'crl[tasks]')") from None
    if task not in DATASETS:
        raise CrlError(f"{source}: reasoning-gym has no task {task!r} (it has {len(DATASETS)}, e.g. {', '.join(sorted(DATASETS)[:6])}, ...)")
    try:
        dataset = reasoning_gym.create_dataset(task, size=rows, seed=seed, **params)
    except (TypeError, ValueError, AssertionError) as e:
        raise CrlError(f"{source}: the generator refused --param {params}: {str(e).splitlines()[0]}") from None
    return [
        {"id": f"{task}-{seed:04d}-{i:05d}", "prompt": item["question"], "answer": str(item["answer"]), "source": source}
        for i, item in enumerate(dataset)
    ]
