"""``crl generate``: sample K completions per prompt into rollouts.parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crl.cli import app
from crl.engine.backends import SamplingConfig
from crl.progress import console

Model = Annotated[str, typer.Option("--model", "-m", help="Model folder or hub name; 'tiny-arith' is the shipped one.")]
Template = Annotated[str, typer.Option(help="auto (the chat template when the tokenizer has one), chat, or plain.")]
Instruction = Annotated[str, typer.Option(help="Text appended to every problem, e.g. the \\boxed{} instruction.")]
Backend = Annotated[str, typer.Option(help="auto (vLLM when importable), hf (transformers) or vllm.")]


@app.command("generate")
def generate_cmd(
    prompts: Annotated[str, typer.Argument(help="Prompt set: .parquet/.jsonl file or a named set (see `crl data list`).")],
    model: Model = "tiny-arith",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (a folder of shards with --shard).")] = Path("rollouts.parquet"),
    n: Annotated[int, typer.Option("--n", "-k", min=1, help="Samples per prompt (K).")] = 8,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature; 0 is greedy.")] = 1.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling mass.")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Generation limit per completion.")] = 256,
    seed: Annotated[int, typer.Option(help="Base seed; prompt i uses seed + i.")] = 0,
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop string (repeatable).")] = None,
    template: Template = "auto",
    instruction: Instruction = "",
    limit: Annotated[Optional[int], typer.Option(min=1, help="Use only the first N prompts.")] = None,
    shard: Annotated[Optional[str], typer.Option(help="i/n: take every n-th prompt from the i-th, write one shard.")] = None,
    backend: Backend = "auto",
    round: Annotated[int, typer.Option(help="Round number recorded in the rows.")] = 0,
) -> None:
    """Sample K completions per prompt and write rollouts.parquet (token ids and behaviour log-probs kept)."""
    from crl.engine.checkpoint import resolve_model
    from crl.stages.generate import GenerateConfig, generate

    sampling = SamplingConfig(n, temperature, top_p, max_new_tokens, seed, tuple(stop or ()))
    cfg = GenerateConfig(resolve_model(model), sampling, template, instruction, limit, shard, backend, round)
    path = generate(prompts, out, cfg)
    console.print(f"wrote {path}")
