"""The embedded default: the arithmetic task, the character tokenizer, and the shipped warm-started checkpoint."""

import re
import shutil

import polars as pl
import pytest

from crl.default import DEFAULT_MODEL, TEST_PROMPTS, TRAIN_PROMPTS, task
from crl.default.tokenizer import CHARACTERS, build_tokenizer, save_tokenizer


def test_task_is_deterministic_in_its_seed():
    assert task.sample_problems(200, seed=3) == task.sample_problems(200, seed=3)
    assert task.sample_problems(200, seed=3) != task.sample_problems(200, seed=4)


def test_splits_are_disjoint_and_distinct():
    train, test = task.splits(seed=0, train_size=5000, test_size=500)
    assert len(set(train)) == 5000 and len(set(test)) == 500
    assert not set(train) & set(test)
    assert task.splits(seed=0, train_size=100)[1] == test  # the test split does not depend on the train size


def test_answers_and_completions_are_exact():
    for p in task.sample_problems(500, seed=0):
        expected = eval(p.expression)  # noqa: S307 - our own digits and +/- only
        assert p.answer == expected
        assert task.parse_prompt(p.prompt) == p
        assert p.completion.endswith(f"\\boxed{{{expected}}}")
        assert len(p.completion) <= 15


def test_shipped_prompt_sets_match_the_generator():
    train, test = (pl.read_parquet(p) for p in (TRAIN_PROMPTS, TEST_PROMPTS))
    assert train.columns == test.columns == ["id", "prompt", "answer", "source"]
    assert all(dtype == pl.String for dtype in train.dtypes)
    assert (train.height, test.height) == (task.TRAIN_SIZE, task.TEST_SIZE)
    assert not set(train["prompt"]) & set(test["prompt"])
    assert train["id"].n_unique() == train.height and set(train["source"]) == {"arith"}
    gen_train, gen_test = task.splits(seed=0)
    assert test.to_dict(as_series=False) == task.to_rows(gen_test, "test")
    assert train.head(1000).to_dict(as_series=False) == {k: v[:1000] for k, v in task.to_rows(gen_train, "train").items()}
    for prompt, answer in zip(test["prompt"], test["answer"]):
        assert str(task.parse_prompt(prompt).answer) == answer


def test_tokenizer_round_trip_and_chat_template(tmp_path):
    from transformers import AutoTokenizer

    built = build_tokenizer()
    save_tokenizer(built, tmp_path)
    shutil.copy(DEFAULT_MODEL / "config.json", tmp_path)  # with a qwen2 config beside it, as in a checkpoint
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text = "What is 47-85? -38 \\boxed{-38}\n" + CHARACTERS
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert ids == built(text, add_special_tokens=False)["input_ids"]  # the class transformers picks agrees
    assert all(len(tok(d, add_special_tokens=False)["input_ids"]) == 1 for d in "0123456789")
    messages = [{"role": "user", "content": "What is 2+3?"}]
    rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == "<|user|>What is 2+3?<|assistant|>"
    assert tok(rendered, add_special_tokens=False)["input_ids"][-1] == tok.convert_tokens_to_ids("<|assistant|>")
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": "5"}], tokenize=False)
    assert full == "<|user|>What is 2+3?<|assistant|>5<|endoftext|>"
    assert (tok.pad_token, tok.eos_token, tok.unk_token) == ("<|pad|>", "<|endoftext|>", "<unk>")


def test_shipped_checkpoint_loads_and_answers_in_format():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL).eval()
    assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
    assert model.config.hidden_size // model.config.num_attention_heads % 16 == 0
    assert 5e5 < sum(p.numel() for p in model.parameters()) < 1e7
    prompts = pl.read_parquet(TEST_PROMPTS).head(8)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False) for p in prompts["prompt"]]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=32)
    completions = out[:, enc["input_ids"].shape[1] :]
    assert all(tok.eos_token_id in row.tolist() for row in completions)  # every answer stops by itself
    texts = tok.batch_decode(completions, skip_special_tokens=True)
    boxed = [re.search(r"\\boxed\{(-?\d+)\}$", t) for t in texts]  # what the math verifier reads
    assert all(boxed), texts


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"])
def test_shipped_checkpoint_is_complete_and_small(name):
    path = DEFAULT_MODEL / name
    assert path.is_file()
    if name == "model.safetensors":
        assert path.stat().st_size < 15 * 2**20
