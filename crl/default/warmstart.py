"""Supervised warm start of the default model, and `build_default` (`crl build-default`), which writes the
shipped files (crl/default/shipped/).

In: nothing (the task, tokenizer and model are all made here from fixed seeds).
Out: `arith_train.parquet`, `arith_test.parquet` and the checkpoint directory `tiny-arith/` (safetensors,
config, generation config, tokenizer with its chat template).

Why a warm start, and why a short one: RL from verifiable rewards only learns from groups of samples that
disagree, so a policy that never answers correctly (a fresh model) or always does (a fully trained one) gives
it nothing. The warm start trains on the train split with next-token cross-entropy on the completion only
(prompt rendered with the chat template, then the target completion, then EOS) and stops early, on purpose,
at a model that often knows the answer (greedy decoding is right much of the time) while its sampling
distribution is still diffuse (sampling at T = 1 is right less often). That is the regime where a few minutes
of RL on a CPU visibly raise sampled accuracy.

Reproducibility: fixed seeds for the data, the initialisation and the batch order, deterministic algorithms,
and a fixed thread count, so a rebuild on the same machine gives the same weights bit for bit (other CPUs may
differ in the last bits, through their vector instructions).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from crl.default import task
from crl.default.model import build_model
from crl.default.tokenizer import build_tokenizer, save_tokenizer

# optimisation
STEPS = 1500
BATCH = 64
LR = 2e-3
WARMUP = 50
WEIGHT_DECAY = 0.01
# runtime
THREADS = 2


def encode(tok, problems: list[task.Problem]) -> list[tuple[list[int], int]]:
    """(token ids of prompt + completion + EOS, number of prompt tokens) for each problem."""
    out = []
    for p in problems:
        prompt = tok.apply_chat_template([{"role": "user", "content": p.prompt}], add_generation_prompt=True, tokenize=False)
        prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tok(p.completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append((prompt_ids + completion_ids, len(prompt_ids)))
    return out


def collate(examples: list[tuple[list[int], int]], pad_id: int):
    """Right-padded input ids, attention mask, and labels that are -100 on the prompt and the padding."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        mask[i, : len(ids)] = 1
    return input_ids, mask, labels


def lr_at(step: int, steps: int) -> float:
    """Linear warmup, then constant: the model after N steps of a longer run is the model of a build with N steps,
    so the step count can be tuned from the snapshots of one run."""
    return LR * min(1.0, (step + 1) / WARMUP)


def warm_start(model, tok, problems: list[task.Problem], steps: int, seed: int = 0, progress: bool = True) -> list[float]:
    """Train `model` in place for `steps` AdamW steps on batches of `problems`; return the loss of each step."""
    import torch
    import torch.nn.functional as F

    data = encode(tok, problems)
    rng = random.Random(seed)
    order: list[int] = []
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.98), weight_decay=WEIGHT_DECAY)
    model.train()
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        if len(order) < BATCH:
            perm = list(range(len(data)))
            rng.shuffle(perm)
            order += perm
        batch, order = [data[i] for i in order[:BATCH]], order[BATCH:]
        input_ids, mask, labels = collate(batch, tok.pad_token_id)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if progress and (step % 100 == 0 or step == steps - 1):
            print(f"warm start step {step:5d}/{steps}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f}s", flush=True)
    model.eval()
    return losses


def build_default(out_dir: Path, seed: int = 0, steps: int | None = None, progress: bool = True, overwrite: bool = False) -> None:
    """Write `arith_train.parquet`, `arith_test.parquet` and the warm-started checkpoint `tiny-arith/` to `out_dir`."""
    import torch

    from crl.io import atomic_path, check_output

    out_dir = Path(out_dir)
    for name in ("arith_train.parquet", "arith_test.parquet", "tiny-arith"):
        check_output(out_dir / name, kind="model" if name == "tiny-arith" else "prompts", overwrite=overwrite)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    train, _ = task.write_prompt_sets(out_dir / "arith_train.parquet", out_dir / "arith_test.parquet", seed=seed)
    tok = build_tokenizer()
    model = build_model(tok, seed=seed)
    warm_start(model, tok, train, steps=STEPS if steps is None else steps, seed=seed, progress=progress)
    with atomic_path(out_dir / "tiny-arith", kind="model") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tok, tmp)
