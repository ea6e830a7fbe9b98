"""Checkpoints of a `fit()` run: everything a resumed run needs to repeat an
uninterrupted one exactly (guide, optimizer, engine run, history, average, generators)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyro
import pyro.util
import torch

from .averaging import TailAverage
from .result import FitResult

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]


def rng_state() -> dict[str, Any]:
    """Every generator a step may draw from: Python's, NumPy's, torch's CPU and CUDA ones."""
    state = pyro.util.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    pyro.util.set_rng_state(state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, result: FitResult, run: Any, generators: dict[str, Any], average: TailAverage) -> None:
    state = {
        "guide": result.guide.state_dict(),
        "optim": result.optim.get_state(),
        "engine": run.state_dict(),
        "history": result.history,
        "num_steps": result.num_steps,
        "average": average.state_dict(),
        # The generators as they were when the next step to run began, so that a resumed
        # run repeats an uninterrupted one exactly.
        "rng": generators,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, result: FitResult, run: Any, average: TailAverage) -> None:
    try:
        state = torch.load(path, weights_only=False)
        result.guide.load_state_dict(state["guide"])
    except Exception as error:
        raise ValueError(
            f"Cannot resume from checkpoint {str(path)!r}: {error}. It was written for "
            "another model or guide; delete it or pass another checkpoint path."
        ) from error
    result.optim.set_state(state["optim"])
    run.load_state_dict(state["engine"])
    result.history = state["history"]
    result.num_steps = state["num_steps"]
    average.load_state_dict(state["average"])
    set_rng_state(state["rng"])
