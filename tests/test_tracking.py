"""Experiment trackers: none, TensorBoard event files read back, W&B in offline mode."""

from __future__ import annotations

import builtins
import importlib.util
import sys

import pytest

from crl.errors import CrlError
from crl.views.tracking import Tracker, flat_config, open_tracker, scalars

CONFIG = {"rounds": 2, "train": {"objective": "conspo", "lr": 2e-4}, "eval_tasks": ["arith_test"]}


def test_scalars_and_flat_config():
    assert scalars({"a": 1, "b": 0.5, "c": None, "d": float("nan"), "e": "x", "f": True}) == {"a": 1.0, "b": 0.5, "f": 1.0}
    assert flat_config(CONFIG) == {"rounds": 2, "train.objective": "conspo", "train.lr": 2e-4, "eval_tasks": "['arith_test']"}


def test_none_and_unknown(tmp_path):
    with open_tracker("none", tmp_path, CONFIG) as tracker:
        assert type(tracker) is Tracker
        tracker.log(1, {"train/loss": 0.5})
    assert list(tmp_path.iterdir()) == []  # writes nothing
    with pytest.raises(CrlError, match="--log-to mlflow: unknown tracker"):
        open_tracker("mlflow", tmp_path, CONFIG)


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb" or name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    with pytest.raises(CrlError, match=r"pip install 'crl\[wandb\]'"):
        open_tracker("wandb", tmp_path, CONFIG)
    with pytest.raises(CrlError, match=r"pip install 'crl\[tensorboard\]'"):
        open_tracker("tensorboard", tmp_path, CONFIG)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_tracker("tensorboard", tmp_path, CONFIG) as tracker:
        for step in (1, 2, 3):
            tracker.log(step, {"train/loss": 1.0 / step, "arith_test/avg@4": None if step == 2 else 0.1 * step})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3] and loss[-1].value == pytest.approx(1 / 3)
    assert [e.step for e in events.Scalars("arith_test/avg@4")] == [1, 3]  # None left out


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
@pytest.mark.timeout(120)
def test_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    tracker = open_tracker("wandb", tmp_path / "run", CONFIG)
    assert tracker.run.config["train.objective"] == "conspo"
    tracker.log(1, {"train/loss": 0.5, "skip": None})
    tracker.log(2, {"train/loss": 0.25})
    tracker.close()
    tracker.close()  # twice is fine
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


class Recorder(Tracker):
    def __init__(self) -> None:
        self.calls: list[tuple[int, dict]] = []

    def log(self, step, metrics) -> None:
        self.calls.append((step, dict(metrics)))


def test_iterate_streams_each_optimiser_step_before_the_round_summary(tmp_path, monkeypatch):
    """Trackers used to get the train log only after a round; each optimiser step now reaches them as it ends."""
    import crl.stages.iterate as iterate_module
    from conftest import crl_main

    recorder = Recorder()
    monkeypatch.setattr(iterate_module, "open_tracker", lambda kind, run_dir, config: recorder)
    args = ["--rounds", "1", "--set", "prompts_per_round=4", "--set", "eval.limit=2", "--set", "generate.n=4"]
    assert crl_main("iterate", "--out", tmp_path / "run", *args) == 0
    kinds = ["step" if "step/loss" in m else "round" for _, m in recorder.calls]
    assert kinds == ["round", "step", "step", "round"]  # round 0's evaluation, round 1's two steps, its summary
    assert [s for s, m in recorder.calls if "step/loss" in m] == [1, 2]
    assert recorder.calls[-1][1]["round"] == 1 and recorder.calls[-1][0] == 2
