"""Training objectives: one short pure function of tensors per method, registered by name.

Every objective sees a batch of whole groups (all K rollouts of each prompt it contains) as padded
[B, T] tensors of per-token log-probs, and returns ``(loss, stats)``:

- ``loss`` is the mean over the objective's own *unit* (a group, a sequence or a token, whatever the
  equation in docs/objectives.md averages over), so the function reads like its equation;
- ``stats["units"]`` is how many units that mean was taken over. The trainer back-propagates
  ``loss * units`` per micro-batch and divides the accumulated gradient by the total, which makes the
  result exact however the groups are split into micro-batches. A batch with no usable unit returns a
  loss of 0 that still has a grad path, with ``units`` 0.

Options are keyword arguments with the paper's defaults; ``crl train -o NAME=VALUE`` sets them.
Context the trainer knows (``progress`` in [0, 1], ``max_new_tokens``) is passed to the functions that
name it in their signature.

Conventions shared by all objectives:

- A rollout is a positive when ``reward > 0`` and a negative otherwise.
- A group with no positive or no negative has no contrast: the contrastive objectives (conspo, rence,
  disco, disco-b, copg, online-dpo) and DAPO drop it and report ``groups_dropped``; GRPO and Dr. GRPO give
  it zero advantage and report it as ``groups_flat``.
- ``register`` zeroes the padded positions of ``logp``/``old_logp``/``ref_logp`` before the body runs,
  so whatever the padding holds (even values whose ratio would overflow) cannot reach a result or a
  gradient, and the bodies can ignore it.
- Where an objective needs a reference model and the batch has no ``ref_logp``, the behaviour policy
  (``old_logp``) stands in for it, so the term becomes a trust region around the sampler.
- Stats are detached floats; those averaged over an empty set are 0. ``entropy`` is the mean of
  ``-logp`` over the batch's completion tokens (an estimate of the policy's entropy from the tokens it
  sampled); ``kl`` is the mean k3 estimate ``exp(ref - logp) - (ref - logp) - 1`` over those tokens.
"""

from crl.objectives.registry import (
    CONTEXT,
    OBJECTIVES,
    Batch,
    Objective,
    Stats,
    StepInfo,
    check_options,
    get_objective,
    needs_reference,
    options,
    register,
    spec,
)
from crl.objectives import advantage, contrastive  # noqa: E402,F401  (registers the objectives)

__all__ = [
    "CONTEXT", "OBJECTIVES", "Batch", "Objective", "Stats", "StepInfo", "check_options", "get_objective",
    "needs_reference", "options", "register", "spec",
]
