"""Padded, shared-prompt and packed, chunked log-probs (and their gradients) equal those of a plain forward
pass over each sequence alone."""

import logging
import warnings

import pytest
import torch

from crl.engine.checkpoint import load_model
from crl.engine.logprobs import TokenSeq, completion_logprobs, pack, padded


def plain(model, seq: TokenSeq) -> torch.Tensor:
    ids = torch.tensor([list(seq.prompt_ids) + list(seq.completion_ids)])
    logp = model(ids).logits[0].log_softmax(-1)
    n = len(seq.prompt_ids)
    return logp[n - 1 : -1].gather(-1, ids[0, n:, None]).squeeze(-1)


LAYOUTS = {"padded": {}, "shared": {"share_prompts": True}, "packed": {"packed": True}}


def groups_of_samples(generator: torch.Generator) -> list[TokenSeq]:
    """Prompts of several lengths, most with several completions (as a round's groups), one completion of
    a single token, one empty (imported rollouts may hold one)."""
    prompts = [torch.randint(3, 60, (p,), generator=generator).tolist() for p in (7, 3, 12, 5)]
    return [
        TokenSeq(prompts[k], torch.randint(3, 60, (c,), generator=generator).tolist())
        for k, c in [(0, 5), (1, 9), (2, 1), (3, 4), (0, 2), (1, 6), (0, 7), (2, 3), (3, 0)]
    ]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_chunked_logprobs_match_plain_forward(tiny_model, layout):
    model = load_model(tiny_model, "cpu").eval()
    seqs = groups_of_samples(torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = completion_logprobs(model, seqs, chunk=3, **LAYOUTS[layout])
        alone = [plain(model, s) for s in seqs]
    for a, b in zip(batched, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradient_through_chunks_matches_plain(tiny_model, layout):
    """Every parameter's gradient of a weighted sum of log-probs. In float64, except that the model's RMSNorm
    computes in float32: a shared prompt sums its completions' gradients in another order, so it agrees
    to float32 rounding (1e-6 relative), the other layouts to float64's."""
    model = load_model(tiny_model, "cpu", torch.float64)
    seqs = groups_of_samples(torch.Generator().manual_seed(1))
    weights = [float(i + 1) for i in range(len(seqs))]  # unequal, so a row's gradient sent to another row shows
    loss = sum(w * lp.sum() for w, lp in zip(weights, completion_logprobs(model, seqs, chunk=2, **LAYOUTS[layout])))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    sum(w * plain(model, s).sum() for w, s in zip(weights, seqs)).backward()
    tolerance = {"atol": 1e-4, "rtol": 1e-5} if layout == "shared" else {"atol": 1e-10, "rtol": 1e-9}
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, **tolerance, msg=name)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_micro_batch_of_empty_completions_has_no_log_prob_and_a_gradient_path(tiny_model, layout):
    model = load_model(tiny_model, "cpu")
    out = completion_logprobs(model, [TokenSeq([5, 6, 7], []), TokenSeq([5, 6], [])], **LAYOUTS[layout])
    assert [len(lp) for lp in out] == [0, 0]
    sum(lp.sum() for lp in out).backward()  # a zero gradient, but a backward pass (the other ranks' collectives)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_the_shared_prompt_forward_uses_nothing_transformers_deprecates(tiny_model, caplog):
    """The shared-prompt layout hands its prompts' keys and values to the decoder through ``past_key_values``,
    transformers' one way to do so up to 5.19; pyproject.toml bounds transformers below 5.40, the release an
    audit reported as removing it. A deprecation on the installed version fails here, not on a user's run."""
    model = load_model(tiny_model, "cpu")
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(caplog.handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            out = completion_logprobs(model, groups_of_samples(torch.Generator().manual_seed(2)), share_prompts=True)
            sum(lp.sum() for lp in out).backward()
    finally:
        hf_logger.removeHandler(caplog.handler)
    assert not [r.getMessage() for r in caplog.records if "deprecat" in r.getMessage().lower()]


def test_temperature_divides_logits(tiny_model):
    model = load_model(tiny_model, "cpu").eval()
    seq = TokenSeq([5, 6, 7], [8, 9])
    with torch.no_grad():
        hot = completion_logprobs(model, [seq], temperature=2.0)[0]
        ids = torch.tensor([[5, 6, 7, 8, 9]])
        expected = (model(ids).logits[0] / 2.0).log_softmax(-1)[2:4].gather(-1, ids[0, 3:, None]).squeeze(-1)
    torch.testing.assert_close(hot, expected, atol=1e-5, rtol=1e-5)


def test_pack_keeps_order_and_budget():
    assert pack([[3], [3], [3], [5], [1]], budget=6) == [[0, 1], [2], [3, 4]]
    assert pack([[10], [2]], budget=4) == [[0], [1]]  # an oversize item gets a bin of its own
    # padded rows cost rows x longest: [2, 5] and [3] cost 3 x 5 = 15 together, over a budget of 12
    assert pack([[2, 5], [3], [4]], budget=12, packed=False) == [[0], [1, 2]]
    assert pack([[2, 5], [3], [4]], budget=12, packed=True) == [[0, 1], [2]]


def test_padded_mask():
    values, mask = padded([torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
    assert values.tolist() == [[1.0, 2.0], [3.0, 0.0]]
    assert mask.tolist() == [[1.0, 1.0], [1.0, 0.0]]
