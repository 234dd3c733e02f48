"""crl data: import of the files in ../shared/data and of other shapes (JSON array, Parquet, verl RL Parquet,
saved `datasets` folders), pull failing fast offline, the catalogue, and list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from crl.errors import CrlError
from crl.data import catalogue, hub, importers
from crl.data.prompts import load_prompts, resolve

ROWS = {  # rows written per file of ../shared/data (math_train: 4 rows without a gold answer are left out)
    "math500": 500, "gsm8k_test": 1319, "gsm8k_train": 7473, "aime24": 30, "aime25": 30, "amc23": 40,
    "minerva_math": 272, "olympiadbench": 675, "math_train": 7470, "aime_1983_2023": 975,
}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CRL_DATA_DIR", str(tmp_path / "home"))
    return tmp_path / "home"


def test_import_shared_data_folder(shared_data, home, cli):
    code, out, err = cli("data", "import", shared_data)
    assert code == 0, err
    assert "math_train: 7470 prompts" in out and "4 rows without a problem or gold answer left out" in out
    for name, n in ROWS.items():
        df = pl.read_parquet(home / f"{name}.parquet")
        assert df.columns == ["id", "prompt", "answer", "source"] and df.height == n, name
        assert df["id"].n_unique() == n and df["answer"].str.len_chars().min() > 0, name
    # named sets resolve from the data home, so `crl eval math500` finds them
    assert resolve("math500") == home / "math500.parquet"
    answers = {name: load_prompts(name)["answer"].to_list() for name in ("gsm8k_test", "amc23", "minerva_math", "olympiadbench", "aime24")}
    assert answers["gsm8k_test"][0] == "18"  # after '####'
    assert answers["amc23"][0] == "27"  # 27.0 in the file
    assert answers["minerva_math"][0] == "1.6"  # last \boxed{} of the solution
    assert answers["olympiadbench"][:2] == ["2", "\\frac{1}{2 n+2}"]  # final_answer list, '$' stripped
    assert answers["aime24"][0] == "204"
    assert load_prompts("math500")["id"][0] == "test/precalculus/807.json"  # unique_id kept as id


def test_import_one_file_with_name_and_out(shared_data, tmp_path, cli):
    code, _, err = cli("data", "import", shared_data / "aime25.jsonl", "--name", "aime-2025", "--out", tmp_path / "sets")
    assert code == 0, err
    df = pl.read_parquet(tmp_path / "sets" / "aime-2025.parquet")
    assert df.height == 30 and set(df["source"]) == {"aime-2025"} and df["answer"][0] == "70"
    assert "\x0c" not in "".join(df["prompt"])


def test_json_array_and_parquet(tmp_path, home):
    rows = [{"Question": "1+1?", "Answer": 2}, {"Question": "2+2?", "Answer": 4.0}, {"Question": " ", "Answer": 1}]
    (tmp_path / "caps.json").write_text(json.dumps(rows))
    [w] = importers.import_path(tmp_path / "caps.json")
    assert (w.name, w.rows, w.skipped) == ("caps", 2, 1)
    df = pl.read_parquet(w.path)
    assert df["prompt"].to_list() == ["1+1?", "2+2?"] and df["answer"].to_list() == ["2", "4"]
    pl.DataFrame({"problem": ["p"], "solution": ["so \\boxed{\\frac{1}{2}}"], "id": [7]}).write_parquet(tmp_path / "plain.parquet")
    [w] = importers.import_path(tmp_path / "plain.parquet")
    assert pl.read_parquet(w.path).row(0) == ("7", "p", "\\frac{1}{2}", "plain")


def verl_table() -> pa.Table:
    return pa.Table.from_pylist([
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": f"What is {i}+1? Let's think step by step."}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
            "extra_info": {"split": "train", "index": i},
        }
        for i in range(3)
    ])


def test_verl_parquet(tmp_path, home, cli):
    import pyarrow.parquet as pq

    pq.write_table(verl_table(), tmp_path / "train.parquet")
    code, _, err = cli("data", "import", tmp_path / "train.parquet", "--name", "verl_gsm8k")
    assert code == 0, err
    df = load_prompts("verl_gsm8k")
    assert df["answer"].to_list() == ["1", "2", "3"] and df["id"].to_list() == ["0", "1", "2"]
    assert set(df["source"]) == {"openai/gsm8k"}
    messages = json.loads(df["prompt"][0])  # chat messages are kept, rendered later with the chat template
    assert messages == [{"role": "user", "content": "What is 0+1? Let's think step by step."}]
    code, _, _ = cli("data", "import", tmp_path / "train.parquet", "--name", "verl_plain", "--plain")
    assert code == 0 and load_prompts("verl_plain")["prompt"][0] == "What is 0+1? Let's think step by step."


def save_to_disk_like(folder: Path, table: pa.Table, split: str) -> None:
    """What `datasets.Dataset.save_to_disk` writes: Arrow stream shards, dataset_info.json, state.json."""
    folder.mkdir(parents=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (folder / "dataset_info.json").write_text(json.dumps({"features": {}}))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": split}))


def test_saved_datasets_folders(tmp_path, home):
    table = pa.Table.from_pylist([{"problem": "3*3?", "answer": "9"}, {"problem": "5-1?", "answer": "4"}])
    save_to_disk_like(tmp_path / "ds", table, "test")
    [w] = importers.import_path(tmp_path / "ds", name="saved")
    assert w.rows == 2 and pl.read_parquet(w.path)["answer"].to_list() == ["9", "4"]
    # a DatasetDict: one subfolder per split; test is the default, --split picks another
    dd = tmp_path / "dd"
    save_to_disk_like(dd / "train", verl_table(), "train")
    save_to_disk_like(dd / "test", table, "test")
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    assert importers.import_path(dd, name="dd")[0].rows == 2
    assert importers.import_path(dd, name="dd_train", split="train")[0].rows == 3
    with pytest.raises(CrlError, match="no split 'valid'"):
        importers.import_path(dd, name="x", split="valid")


def test_import_errors_are_one_line(tmp_path, home, cli):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "answer": "1"}\n{oops\n')
    (tmp_path / "noanswer.jsonl").write_text('{"prompt": "x"}\n')
    (tmp_path / "table.csv").write_text("a,b\n")
    for path, message in (("bad.jsonl", "bad.jsonl:2: not valid JSON"), ("noanswer.jsonl", "no answer field"),
                          ("table.csv", "expected .jsonl"), ("missing.jsonl", "no such file")):
        code, _, err = cli("data", "import", tmp_path / path)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_pull_offline_fails_fast_naming_import(home, monkeypatch, cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code, _, err = cli("data", "pull", "math500")
    assert code == 2 and "HF_HUB_OFFLINE" in err and "crl data import PATH --name math500" in err
    assert len(err.strip().splitlines()) == 1 and time.perf_counter() - start < 5
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    with pytest.raises(CrlError, match="not reachable.*crl data import"):
        hub.pull("aime24")
    with pytest.raises(CrlError, match="not a known set"):
        hub.pull("imagenet")
    assert not home.exists() or not list(home.iterdir())


def test_pull_as_a_command_prints_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CRL_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "crl", "data", "pull", "gsm8k"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "crl data import" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_pull_converts_hub_rows(home, monkeypatch):
    """The download itself needs the hub; what pull does with the rows it gets is checked here."""
    rows = [
        {"ID": "1983-1", "Year": 1983, "Question": "First?", "Answer": "60"},
        {"ID": "2024-I-1", "Year": 2024, "Question": "Later?", "Answer": "204"},
    ]
    monkeypatch.setattr(hub, "offline_reason", lambda: None)
    monkeypatch.setattr(hub, "_hub_rows", lambda entry: rows if entry.name == "aime_1983_2023" else [])
    w = hub.pull("aime_1983_2023_train")  # an alias
    df = pl.read_parquet(w.path)
    assert w.path == home / "aime_1983_2023.parquet" and df.rows() == [("1983-1", "First?", "60", "aime_1983_2023")]
    from crl.io import read_metadata

    assert read_metadata(w.path)["origin"] == "hf://datasets/gneubig/aime-1983-2024"


def test_catalogue_knows_the_common_math_benchmarks_with_hub_ids():
    names = {k.name for k in catalogue.CATALOGUE}
    assert {"math500", "gsm8k_test", "gsm8k_train", "aime24", "aime25", "amc23", "minerva_math", "olympiadbench",
            "math_train", "aime_1983_2023", "deepscaler"} <= names
    assert all("/" in k.hub_id and k.split for k in catalogue.CATALOGUE)
    assert catalogue.known("AIME-2024").name == "aime24" and catalogue.known("nope") is None


def test_list_shows_present_sets(shared_data, home, cli):
    importers.import_path(shared_data / "amc23.jsonl")
    pl.DataFrame({"prompt": ["q"], "answer": ["a"]}).write_parquet(home / "mine.parquet")
    code, out, _ = cli("data", "list")
    assert code == 0
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "data home" in lines["amc23"] and " 40 " in lines["amc23"]
    assert " no " in lines["math500"] and "HuggingFace" in lines["math500"]
    assert "imported" in lines["mine"] and " 1 " in lines["mine"]


def test_reasoning_gym_tasks_import_reproducibly_and_grade_like_the_library(tmp_path, cli):
    """A reasoning-gym task imported twice with one seed gives the same set, the next seed the same problems moved
    by one (the library draws problem i from seed + i: why held-out sets need --exclude); crl's math verifier agrees
    with the library's own scorer on each gold answer and on an answer off by one."""
    reasoning_gym = pytest.importorskip("reasoning_gym")
    from crl.verifiers import get_verifier

    for out, seed in (("a", 3), ("b", 3), ("c", 4)):
        code, _, err = cli("data", "import", "reasoning-gym:letter_counting", "--rows", 30, "--seed", seed,
                           "--param", "max_words=6", "--out", tmp_path / out)
        assert code == 0, err
    a, b, c = (pl.read_parquet(tmp_path / f / "letter_counting.parquet") for f in "abc")
    assert a.height == 30 and a.equals(b) and a["prompt"][1:].equals(c["prompt"][:-1]) and not a["prompt"].equals(c["prompt"])
    assert a["id"][0] == "letter_counting-0003-00000" and set(a["source"]) == {"reasoning-gym:letter_counting"}
    library = reasoning_gym.create_dataset("letter_counting", size=30, seed=3, max_words=6)
    math = get_verifier("math")
    for row, entry in zip(a.iter_rows(named=True), library):
        assert row["prompt"] == entry["question"]
        for answer in (row["answer"], str(int(row["answer"]) + 1)):
            assert math(f"The letter appears \\boxed{{{answer}}} times.", row["answer"]).reward == library.score_answer(answer, entry)


def test_import_exclude_keeps_a_held_out_set_out_of_a_training_set(tmp_path, cli):
    """--exclude drops every problem the named set holds, says how many, and records it; the held-out set itself is
    an input, so it cannot be the output."""
    pytest.importorskip("reasoning_gym")
    task = ("reasoning-gym:chain_sum", "--param", "max_terms=2", "--param", "max_digits=1")
    code, _, err = cli("data", "import", *task, "--rows", 20, "--seed", 1, "--name", "held", "--out", tmp_path)
    assert code == 0, err
    held = pl.read_parquet(tmp_path / "held.parquet")
    code, out, err = cli("data", "import", *task, "--rows", 200, "--seed", 0, "--name", "train", "--out", tmp_path,
                         "--exclude", tmp_path / "held.parquet")
    assert code == 0, err
    train = pl.read_parquet(tmp_path / "train.parquet")
    dropped, said = 200 - train.height, " ".join(out.split())
    assert dropped >= 19 and f"{train.height} prompts" in said and f"({dropped} problems an --exclude set holds left out)" in said
    assert not set(train["prompt"]) & set(held["prompt"])
    code, _, err = cli("data", "import", *task, "--rows", 5, "--name", "held", "--out", tmp_path, "--overwrite",
                       "--exclude", tmp_path / "held.parquet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert pl.read_parquet(tmp_path / "held.parquet").equals(held)


def test_reasoning_gym_mistakes_are_one_line(tmp_path, cli):
    pytest.importorskip("reasoning_gym")
    for args, words in (
        (["reasoning-gym:no_such_task"], "has no task 'no_such_task'"),
        (["reasoning-gym:letter_counting", "--param", "max_words"], "expected KEY=VALUE"),
        (["reasoning-gym:letter_counting", "--param", "colour=red"], "the generator refused"),
        (["reasoning-gym:letter_counting", "--param", "min_words=9", "--param", "max_words=2"], "the generator refused"),
        ([str(tmp_path / "x.jsonl"), "--rows", "5"], "--rows: only for a reasoning-gym:TASK source"),
        (["reasoning-gym:letter_counting", "--exclude", "no_such_set"], "no_such_set: no such file"),
    ):
        code, _, err = cli("data", "import", *args, "--out", tmp_path / "out")
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
