"""Experiment trackers behind one small interface, for ``--log-to tensorboard|wandb|none``.

crl's own record of a run is its files (train_log.parquet, metrics.parquet); a tracker only mirrors the same
numbers into the tool a user already watches. Both are optional extras, imported only when asked for:

- ``tensorboard`` (``pip install 'crl[tensorboard]'``): event files in ``RUN/tensorboard/``, through
  ``torch.utils.tensorboard.SummaryWriter``; view with ``tensorboard --logdir RUN/tensorboard``.
- ``wandb`` (``pip install 'crl[wandb]'``): a W&B run in ``RUN/wandb/``. Without a login (no WANDB_API_KEY
  and WANDB_MODE unset) it runs offline; ``wandb sync RUN/wandb/offline-run-*`` uploads it later.
  WANDB_PROJECT (default ``crl``), WANDB_ENTITY and WANDB_MODE are honoured.

Usage::

    with open_tracker("tensorboard", run_dir, cfg) as tracker:
        tracker.log(step, {"train/loss": 0.3, "arith_test/avg@4": None})   # None and NaN are skipped
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any, Mapping

from crl.config.settings import TRACKERS
from crl.errors import CrlError


def scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of ``metrics`` (bools as 0/1); None, NaN, strings and lists are left out."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[k] = float(v)
    return out


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-5}}`` -> ``{"train.lr": 1e-5}``, lists and other values as strings."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_config(v, f"{key}."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


class Tracker:
    """Does nothing: ``--log-to none``. The other trackers override ``log`` and ``close``."""

    kind = "none"

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record the numeric ``metrics`` at ``step`` (a round of iterate, an optimizer step of train)."""

    def close(self) -> None:
        """Flush and release; safe to call twice."""

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _missing(kind: str) -> CrlError:
    return CrlError(f"--log-to {kind}: the {kind} package is missing (pip install 'crl[{kind}]')")


def _imported(module: str, kind: str) -> Any:
    """``module``, or one line naming the extra that installs it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise _missing(kind) from None


class TensorBoardTracker(Tracker):
    kind = "tensorboard"

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = _imported("torch.utils.tensorboard", self.kind).SummaryWriter(log_dir=str(self.log_dir))
        if config:
            text = "\n".join(f"    {k} = {v!r}" for k, v in flat_config(config).items())
            self.writer.add_text("config", text, 0)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for k, v in scalars(metrics).items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


class WandbTracker(Tracker):
    kind = "wandb"

    def __init__(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        wandb = _imported("wandb", self.kind)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "crl"),
                entity=os.environ.get("WANDB_ENTITY"),
                name=run_dir.name,
                dir=str(run_dir),
                config=flat_config(config),
                mode=mode,
            )
        except Exception as e:  # wandb raises its own errors for login and network problems
            first = (str(e).splitlines() or [type(e).__name__])[0]
            raise CrlError(f"--log-to wandb: could not start a W&B run ({first}); WANDB_MODE=offline logs locally") from None

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = scalars(metrics)
        if values:
            self.run.log(values, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def check_tracker(kind: str) -> None:
    """Refuse, before any work, a tracker that is unknown or whose package is not installed."""
    package = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb"}
    if kind not in package:
        raise CrlError(f"--log-to {kind}: unknown tracker; choose one of {', '.join(TRACKERS)}")
    if package[kind] and importlib.util.find_spec(package[kind]) is None:
        raise _missing(kind)


def open_tracker(kind: str, run_dir: str | Path, config: Mapping[str, Any] | None = None) -> Tracker:
    """A tracker of ``kind`` (none, tensorboard, wandb) writing below ``run_dir``, given the run's config."""
    kind = (kind or "none").lower()
    if kind == "none":
        return Tracker()
    if kind == "tensorboard":
        return TensorBoardTracker(Path(run_dir), config or {})
    if kind == "wandb":
        return WandbTracker(Path(run_dir), config or {})
    raise CrlError(f"--log-to {kind}: unknown tracker; choose one of {', '.join(TRACKERS)}")
