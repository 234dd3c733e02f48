"""The embedded default: a tiny causal LM and a synthetic arithmetic task that ship with crl.

A fresh machine has no GPU and no model weights, so `crl iterate` with no flags trains this instead: a
character-level Qwen2 model of about 0.9 M parameters (small enough that a 2-core CPU samples and trains
it several times a minute), warm-started by supervised training on arithmetic problems
(`crl.default.warmstart`) until it is partially capable, so that a few minutes of RL on a laptop CPU visibly
raise its held-out accuracy. Everything here is built by the project's own code from fixed seeds:

- `task.py`: the problems, their exact answers and the target completions.
- `tokenizer.py`: the character-level tokenizer and its chat template.
- `model.py`: the model configuration.
- `warmstart.py`: the supervised warm start and `build_default`, which writes all of `shipped/`.

This module only names the shipped files, so importing it costs nothing.
"""

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
DEFAULT_MODEL = SHIPPED_DIR / "tiny-arith"
TRAIN_PROMPTS = SHIPPED_DIR / "arith_train.parquet"
TEST_PROMPTS = SHIPPED_DIR / "arith_test.parquet"

__all__ = ["SHIPPED_DIR", "DEFAULT_MODEL", "TRAIN_PROMPTS", "TEST_PROMPTS"]
