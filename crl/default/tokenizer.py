"""The character-level tokenizer of the default model.

One token per printable ASCII character (plus tab and newline), so every digit is its own token and any text
tokenizes: each byte of a character outside that set becomes `<unk>`. It is a `tokenizers` BPE model with no merges (which
splits a string into its characters) over GPT-2's byte-level alphabet (a space is stored as "Ġ"), with the
ByteLevel pre-tokenizer and decoder. Byte-level matters: transformers 5 loads a checkpoint whose model type is
`qwen2` with `Qwen2Tokenizer`, which puts its own ByteLevel pre-tokenizer in front of the model; a plain
character vocabulary would then lose every space, while this one encodes the same ids either way. Wrapped as a
`transformers.PreTrainedTokenizerFast` so `AutoTokenizer.from_pretrained` loads it and vLLM can use it.

Special tokens: `<|pad|>` (padding), `<|endoftext|>` (end of sequence), `<unk>`, and the chat markers `<|system|>`,
`<|user|>`, `<|assistant|>`. The chat template renders `[{"role": "user", "content": "What is 2+3?"}]` with a
generation prompt as `<|user|>What is 2+3?<|assistant|>`; an assistant turn ends with `<|endoftext|>`.
"""

from __future__ import annotations

import string

PAD, EOS, UNK = "<|pad|>", "<|endoftext|>", "<unk>"
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [PAD, EOS, UNK, SYSTEM, USER, ASSISTANT]
CHARACTERS = "\t\n" + "".join(chr(c) for c in range(32, 127))  # printable ASCII, space included

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}" + SYSTEM + "{{ message['content'] }}"
    "{%- elif message['role'] == 'user' -%}" + USER + "{{ message['content'] }}"
    "{%- else -%}" + ASSISTANT + "{{ message['content'] }}" + EOS + "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}" + ASSISTANT + "{%- endif -%}"
)

assert set(string.digits) <= set(CHARACTERS)


def _byte_level() -> dict[int, str]:
    """GPT-2's byte-to-character table: printable bytes stand for themselves, the others (space, newline,
    tab, ...) for characters from 256 on."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(shifted)) for b in range(256)}


BYTE_LEVEL = _byte_level()


def build_tokenizer():
    """A fresh `PreTrainedTokenizerFast`; ids: the special tokens first (pad = 0, eos = 1, unk = 2), then characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + [BYTE_LEVEL[ord(c)] for c in CHARACTERS])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK, fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        model_max_length=256,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(tok, out_dir) -> None:
    """`save_pretrained`, then make `tokenizer_config.json` readable by transformers 4.x as well as 5.x.

    transformers 5 names the class `TokenizersBackend` and writes the chat template only to
    `chat_template.jinja`; vLLM may run against transformers 4, which knows neither. The config written here
    names `PreTrainedTokenizerFast` (both versions load it), lists the chat markers under
    `additional_special_tokens`, and carries the chat template inline too.
    """
    import json
    from pathlib import Path

    tok.save_pretrained(out_dir)
    path = Path(out_dir) / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.pop("extra_special_tokens", None)
    config.pop("backend", None)
    config.update(
        tokenizer_class="PreTrainedTokenizerFast",
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
    )
    path.write_text(json.dumps(config, indent=2) + "\n")
