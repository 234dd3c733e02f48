"""Padded and packed, chunked log-probs equal those of a plain forward pass over each sequence alone."""

import pytest
import torch

from crl.engine.checkpoint import load_model
from crl.engine.logprobs import TokenSeq, completion_logprobs, pack, padded


def plain(model, seq: TokenSeq) -> torch.Tensor:
    ids = torch.tensor([list(seq.prompt_ids) + list(seq.completion_ids)])
    logp = model(ids).logits[0].log_softmax(-1)
    n = len(seq.prompt_ids)
    return logp[n - 1 : -1].gather(-1, ids[0, n:, None]).squeeze(-1)


@pytest.mark.parametrize("packed", [False, True])
def test_chunked_logprobs_match_plain_forward(tiny_model, packed):
    model = load_model(tiny_model, "cpu").eval()
    g = torch.Generator().manual_seed(0)
    seqs = [
        TokenSeq(torch.randint(3, 60, (p,), generator=g).tolist(), torch.randint(3, 60, (c,), generator=g).tolist())
        for p, c in [(7, 5), (3, 9), (12, 1), (5, 4)]
    ]
    with torch.no_grad():
        batched = completion_logprobs(model, seqs, chunk=3, packed=packed)
        alone = [plain(model, s) for s in seqs]
    for a, b in zip(batched, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("packed", [False, True])
def test_gradient_through_chunks_matches_plain(tiny_model, packed):
    model = load_model(tiny_model, "cpu", torch.float64)  # float64: the comparison is not at float32 noise
    seqs = [TokenSeq([5, 6, 7], [8, 9, 10, 11]), TokenSeq([12, 13], [14, 15])]
    loss = sum(lp.sum() for lp in completion_logprobs(model, seqs, chunk=2, packed=packed))
    loss.backward()
    packed_grad = model.model.embed_tokens.weight.grad.clone()
    model.zero_grad()
    sum(plain(model, s).sum() for s in seqs).backward()
    torch.testing.assert_close(packed_grad, model.model.embed_tokens.weight.grad, atol=1e-10, rtol=1e-9)


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
