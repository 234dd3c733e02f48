"""Training objectives: pure functions of tensors, registered by name.

An objective sees a batch of whole groups (every rollout of each group it holds: one prompt's samples in one
round) as padded [B, T] tensors of per-token log-probs, and the trainer's ``Context``; it returns a ``Loss``:
the mean over its own unit (a group, a sequence or a token: whatever its equation in docs/objectives.md
averages over, so the body reads like the equation), the number of units, and its statistics as ``means``
and ``counts`` (crl/objectives/batch.py). ``crl train --option NAME=VALUE`` sets its keyword options.

- ``policy_gradient.py``: the clipped surrogate with an advantage estimator and a loss aggregation, each
  registered by name (GRPO, DAPO, Dr. GRPO, RLOO and ``pg``, which composes any of them), and RFT;
- ``contrastive.py``: ConSPO, ReNCE, DisCO, DisCO-b, CoPG, online DPO;
- ``registry.py``: the registries and the checks of the options.

Conventions shared by all objectives:

- A rollout is a positive when the verifier says so (``Batch.positive``; else ``reward > 0``).
- A group that is not mixed (crl/data/rounds.py) has no contrast: the contrastive objectives and DAPO drop
  it (``groups_dropped``); GRPO, Dr. GRPO and RLOO give it zero advantage (``groups_flat``).
- ``register`` zeroes the padded positions of every per-token tensor before the body runs, so whatever the
  padding holds (even values whose ratio would overflow) cannot reach a result or a gradient.
- An objective that needs a reference model is registered with ``reference`` and gets ``ref_logp``; without
  one, ``reference(b)`` raises instead of standing in another policy.
- Statistics are detached floats; those averaged over an empty set are 0. ``entropy`` is the mean of
  ``-logp`` over the batch's completion tokens (an estimate of the policy's entropy from the tokens it
  sampled); ``kl`` is the mean k3 estimate ``exp(ref - logp) - (ref - logp) - 1`` over those tokens.
"""

from crl.objectives.batch import Batch, Context, Loss, StepInfo
from crl.objectives.registry import (
    ADVANTAGES,
    AGGREGATIONS,
    OBJECTIVES,
    check_options,
    get_objective,
    needs_reference,
    options,
    register,
    spec,
)
from crl.objectives import contrastive, policy_gradient  # noqa: E402,F401  (registers the objectives)

__all__ = [
    "ADVANTAGES", "AGGREGATIONS", "OBJECTIVES", "Batch", "Context", "Loss", "StepInfo", "check_options",
    "get_objective", "needs_reference", "options", "register", "spec",
]
