"""crl's own sampler (crl/engine/backends/sampler.py): seeds that belong to prompts, the sampling distribution,
behaviour log-probs equal to the trainer's, greedy and truncated sampling, stop strings."""

from __future__ import annotations

import pytest
import torch

from crl.config import Sampling
from crl.engine.backends.hf import HFBackend
from crl.engine.logprobs import TokenSeq, completion_logprobs

QUESTIONS = ["What is 12+3?", "What is 347-8?", "What is 5+5?", "What is 901-9?", "What is 66+7?"]


@pytest.fixture(scope="module")
def backend(tiny_model):
    return HFBackend(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def prompts(backend):
    tok = backend.tokenizer
    return [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False)
            for q in QUESTIONS]


def tokens(groups) -> list[list[tuple]]:
    """What was sampled (token ids, text, why it ended); log-probs differ in the last float bits by batch shape."""
    return [[(tuple(s.token_ids), s.text, s.finish_reason) for s in g] for g in groups]


def test_a_prompt_gets_the_same_samples_in_any_batch(backend, prompts):
    cfg = Sampling(n=4, temperature=1.0, max_new_tokens=12)
    seeds = [11, 22, 33, 44, 55]
    together = backend.sample(prompts, seeds, cfg)
    alone = [backend.sample([p], [s], cfg)[0] for p, s in zip(prompts, seeds)]
    reordered = backend.sample(prompts[::-1], seeds[::-1], cfg)[::-1]
    assert tokens(together) == tokens(alone) == tokens(reordered)
    for a, b in zip(together, alone):
        for x, y in zip(a, b):
            torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5, rtol=0)
    assert tokens(backend.sample(prompts, [s + 1 for s in seeds], cfg)) != tokens(together)
    assert len({tuple(s.token_ids) for s in together[1]}) > 1  # the n samples of a prompt differ


def test_logprobs_are_the_trainers(backend, prompts):
    cfg = Sampling(n=3, temperature=0.7, max_new_tokens=12)
    for prompt, group in zip(prompts, backend.sample(prompts, [1, 2, 3, 4, 5], cfg)):
        for s in group:
            with torch.no_grad():
                (expected,) = completion_logprobs(backend.model, [TokenSeq(prompt, s.token_ids)], cfg.temperature)
            torch.testing.assert_close(torch.tensor(s.logprobs), expected, atol=2e-5, rtol=0)


def test_first_tokens_follow_the_softmax(backend, prompts):
    """2,000 one-token samples of one prompt against softmax(logits / T): total variation under 0.05."""
    cfg = Sampling(n=2000, temperature=1.5, max_new_tokens=1)
    (group,) = backend.sample(prompts[:1], [7], cfg)
    counts = torch.bincount(torch.tensor([s.token_ids[0] for s in group]), minlength=backend.model.config.vocab_size)
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompts[0]])).logits[0, -1]
    probs = (logits / cfg.temperature).softmax(-1)
    assert 0.5 * (counts / counts.sum() - probs).abs().sum() < 0.05


def test_greedy_top_k_1_and_tiny_top_p_are_argmax(backend, prompts):
    with torch.no_grad():
        generated = backend.model.generate(torch.tensor([prompts[1]]), do_sample=False, max_new_tokens=12)[0, len(prompts[1]):]
    want = generated.tolist()
    want = want[: want.index(1) + 1] if 1 in want else want  # up to and including the end-of-sequence token
    for cfg in (Sampling(n=1, temperature=0.0, max_new_tokens=12), Sampling(n=2, top_k=1, max_new_tokens=12),
                Sampling(n=2, top_p=1e-6, max_new_tokens=12)):
        for s in backend.sample(prompts[1:2], [3], cfg)[0]:
            assert s.token_ids == want, cfg


def test_stop_strings_cut_text_and_tokens(backend, prompts):
    cfg = Sampling(n=4, temperature=1.0, max_new_tokens=12, stop=("{",))
    for group in backend.sample(prompts, [1, 2, 3, 4, 5], cfg):
        for s in group:
            assert "{" not in s.text
            full = backend.tokenizer.decode(s.token_ids, skip_special_tokens=True)
            if s.finish_reason == "stop" and s.token_ids[-1] != 1:
                assert full.startswith(s.text) and "{" in full  # the stop string's tokens are kept, the text cut
                assert "{" not in backend.tokenizer.decode(s.token_ids[:-1], skip_special_tokens=True)


def test_a_loaded_backend_takes_new_weights_and_a_live_one_needs_none(tiny_model, tmp_path, prompts):
    from safetensors.torch import load_file

    from crl.engine.backends import WeightUpdate

    cfg = Sampling(n=2, temperature=1.0, max_new_tokens=8)
    loaded = HFBackend(tiny_model, device="cpu")
    torch.manual_seed(0)
    other = {k: v + 0.05 * torch.randn_like(v) for k, v in load_file(f"{tiny_model}/model.safetensors").items()}
    before = loaded.sample(prompts, [1, 2, 3, 4, 5], cfg)
    loaded.update_weights(WeightUpdate(other))
    after = loaded.sample(prompts, [1, 2, 3, 4, 5], cfg)
    assert tokens(after) != tokens(before) and not loaded.live
    loaded.model.save_pretrained(tmp_path, state_dict=other)
    loaded.tokenizer.save_pretrained(tmp_path)
    assert tokens(HFBackend(str(tmp_path), device="cpu").sample(prompts, [1, 2, 3, 4, 5], cfg)) == tokens(after)
    live = HFBackend(loaded.model, loaded.tokenizer)
    live.update_weights(WeightUpdate({}))  # nothing to do: it samples with the module it was given
    assert live.live and tokens(live.sample(prompts, [1, 2, 3, 4, 5], cfg)) == tokens(after)
