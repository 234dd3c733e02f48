"""The default model: a standard Qwen2 causal LM of about 0.9 M parameters, built from scratch.

Qwen2 (the architecture of Qwen2.5-Math, the flagship model of the GPU recipes) so the default exercises the same
code paths in transformers and vLLM. Hidden 128, 4 layers, 2 heads of 64 (head_dim a multiple of 16, which vLLM's
attention kernels want), MLP 384, tied embeddings, float32, 256 positions (prompt and completion together are
under 50 tokens). The vocabulary is padded to 128 rows; ids past the tokenizer's 103 are never produced by it,
and the warm start teaches the model never to emit them.
"""

from __future__ import annotations

HIDDEN = 128
LAYERS = 4
HEADS = 2
MLP = 384
VOCAB = 128
MAX_POSITIONS = 256


def model_config(tok):
    from transformers import Qwen2Config

    assert len(tok) <= VOCAB
    return Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=MLP,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        head_dim=HIDDEN // HEADS,
        max_position_embeddings=MAX_POSITIONS,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        max_window_layers=LAYERS,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        torch_dtype="float32",
    )


def build_model(tok, seed: int = 0):
    """A freshly initialised model (deterministic in `seed`) with a generation config that stops at EOS."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(model_config(tok))
    model.generation_config = GenerationConfig(
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        max_new_tokens=32,
    )
    return model
