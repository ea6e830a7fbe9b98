"""Checkpoints of a `fit()` run: everything a resumed run needs to repeat an
uninterrupted one exactly (guide, optimizer, engine run, history, average, generators).

A checkpoint holds tensors and plain Python values only, under a header that names what
wrote it, so it loads with ``torch.load(..., weights_only=True)``: a file that holds
anything else (a pickle that would run code when loaded, say) is refused, not loaded.
`write_state()` and `read_state()` are the one way the package writes and reads such
files (the case studies' training loop uses them too).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.util
import torch

from ..glue.autoguide import guide_param_prefix
from ..glue.params import load_model_params, model_params
from .averaging import TailAverage
from .convergence import ConvergenceMonitor
from .result import FitResult

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint",
    "read_checkpoint",
    "read_state",
    "refuse_other_run",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "write_state",
]

#: The header of every checkpoint this package writes: ``{"format": ..., "version": ...,
#: "kind": ..., "state": ...}``.
CHECKPOINT_FORMAT = "pyro_stein.checkpoint"
#: Version 2 records what the run depends on (its fingerprint) and the model's parameters;
#: version 3: from 100 latent dimensions on, the default sampler has no residual network, so
#: a version-2 checkpoint of such a guide does not fit the guide built now.
CHECKPOINT_VERSION = 3
#: The kind of the checkpoints `pyro_stein.fit` writes.
FIT_CHECKPOINT = "pyro_stein.fit"


def write_state(path: str | os.PathLike, state: dict[str, Any], kind: str) -> None:
    """Write ``state`` (tensors and plain values) under the checkpoint header, atomically
    (a crash mid-write leaves the previous checkpoint in place)."""
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": kind, "state": state}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def read_state(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """The state a `write_state()` of this ``kind`` wrote to ``path``.

    Raises:
        ValueError: naming the file and what is wrong with it: a directory, a truncated,
            corrupted or unrelated file, a file holding Python objects other than tensors
            and plain values (refused unread: loading it could run code), or a checkpoint
            of another kind or format version.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    if path.is_dir():
        raise ValueError(f"{where} is a directory, not a checkpoint file; pass a file path")
    unreadable = f"{where} is not a readable checkpoint"
    try:
        # torch.load does not check the archive's CRC-32s: corrupted tensor bytes would load.
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except Exception as error:  # whatever a damaged or foreign file makes the zip reader raise
        raise ValueError(
            f"{unreadable} (truncated, corrupted or another kind of file: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); delete it to start afresh"
        ) from None
    if damaged is not None:
        raise ValueError(
            f"{unreadable} (corrupted: the checksum of its record {damaged!r} does not match); "
            "delete it to start afresh"
        )
    try:
        payload = torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        # The weights-only unpickler names the global it refused ("unsupported GLOBAL ...");
        # any other failure is a file that is no pickle of ours at all.
        if "global" in str(error).lower():
            raise ValueError(
                f"{where} holds Python objects other than tensors and plain values, so it was not "
                "written by this version of pyro_stein (or it was altered); it is refused unread, "
                "since loading it could run arbitrary code. Delete it to start afresh."
            ) from None
        raise ValueError(f"{unreadable} (corrupted: {str(error).splitlines()[-1]}); delete it to start afresh") from None
    except (EOFError, RuntimeError, OSError) as error:
        raise ValueError(
            f"{unreadable} (truncated or corrupted: {str(error).splitlines()[0]}); delete it to start afresh"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{where} was not written by pyro_stein (it has no pyro_stein checkpoint header)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{where} has checkpoint format version {payload.get('version')!r}; this pyro_stein reads "
            f"version {CHECKPOINT_VERSION}. Delete it (or pass another path) to start afresh."
        )
    if payload.get("kind") != kind:
        raise ValueError(f"{where} was written by {payload.get('kind')!r}, not by {kind!r}")
    return payload["state"]


def refuse_other_run(path: str | os.PathLike, recorded: Mapping[str, str] | None, current: Mapping[str, str]) -> None:
    """Refuse to resume from ``path`` unless the run it recorded is this one.

    Args:
        path: the checkpoint (for the message).
        recorded: the fingerprint the checkpoint holds, ``{what: description}``.
        current: this run's fingerprint.

    Raises:
        ValueError: naming every entry that differs, with both descriptions.
    """
    recorded = dict(recorded or {})
    differences = []
    for what in [*recorded, *(key for key in current if key not in recorded)]:
        before, now = recorded.get(what), current.get(what)
        if before == now:
            continue
        if before is None:
            differences.append(f"{what}: absent from the checkpoint's run, {now} in this one")
        elif now is None:
            differences.append(f"{what}: {before} in the checkpoint's run, absent from this one")
        else:
            differences.append(f"{what}: {before} in the checkpoint's run, {now} in this one")
    if differences:
        listed = "; ".join(differences[:_MAX_LISTED_DIFFERENCES])
        more = len(differences) - _MAX_LISTED_DIFFERENCES
        raise ValueError(
            f"checkpoint {str(path)!r} belongs to another run, so it cannot be resumed: {listed}"
            + (f"; and {more} more differences" if more > 0 else "")
            + ". Pass another checkpoint path (or delete this one) to start afresh."
        )


_MAX_LISTED_DIFFERENCES = 6
# Stands for the guide's own parameter-name prefix in a checkpoint: a guide object made in
# another process (or later in this one) has another prefix.
_GUIDE = "<guide>."


def _relabel(named: Mapping[str, Any], old: str, new: str) -> dict[str, Any]:
    if not old:
        return dict(named)
    return {new + name[len(old):] if name.startswith(old) else name: value for name, value in named.items()}


def _optimizer_state(optim: Any) -> dict[str, Any]:
    """The optimizer's state of this run's parameters: an optimizer object used by an
    earlier fit too also holds state of parameters that are gone (Pyro names them None)."""
    store = pyro.get_param_store()
    return {name: state for name, state in optim.get_state().items() if name is not None and name in store}


def rng_state() -> dict[str, Any]:
    """Every generator a step may draw from: Python's, NumPy's, torch's CPU and CUDA ones,
    as tensors and plain values (NumPy's key array becomes an int64 tensor)."""
    state = pyro.util.get_rng_state()
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    state["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian)
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from `rng_state()`."""
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    numpy_state = (name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian)
    pyro.util.set_rng_state({**state, "numpy": numpy_state})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path, result: FitResult, run: Any, generators: dict[str, Any], average: TailAverage,
    fingerprint: Mapping[str, str], monitor: ConvergenceMonitor | None = None,
) -> None:
    prefix = guide_param_prefix(result.guide)
    state = {
        "fingerprint": dict(fingerprint),
        "guide": result.guide.state_dict(),
        "model_params": model_params(pyro.get_param_store(), prefix),
        "optim": _relabel(_optimizer_state(result.optim), prefix, _GUIDE),
        "engine": run.state_dict(),
        "history": result.history,
        "num_steps": result.num_steps,
        "average": average.state_dict(),
        "convergence": None if monitor is None else monitor.state_dict(),
        # The generators as they were when the next step to run began, so that a resumed
        # run repeats an uninterrupted one exactly.
        "rng": generators,
    }
    write_state(path, state, FIT_CHECKPOINT)


def read_checkpoint(path: Path, fingerprint: Mapping[str, str]) -> dict[str, Any]:
    """The state of the `fit()` checkpoint at ``path``, after checking that its run is this
    one (see `refuse_other_run()`); cheap, so that a mismatch is refused before any work."""
    state = read_state(path, FIT_CHECKPOINT)
    refuse_other_run(path, state.get("fingerprint"), fingerprint)
    return state


def load_checkpoint(
    path: Path, state: dict[str, Any], result: FitResult, run: Any, average: TailAverage,
    monitor: ConvergenceMonitor | None = None,
) -> None:
    """Resume ``result``, ``run``, ``average`` and ``monitor`` from the `read_checkpoint()` state."""
    try:
        result.guide.load_state_dict(state["guide"])
    except (RuntimeError, KeyError) as error:
        raise ValueError(
            f"Cannot resume from checkpoint {str(path)!r}: {error}. It was written for "
            "another model or guide; delete it or pass another checkpoint path."
        ) from error
    load_model_params(pyro.get_param_store(), state["model_params"], result.model, result.args, result.kwargs)
    result.optim.set_state(_relabel(state["optim"], _GUIDE, guide_param_prefix(result.guide)))
    run.load_state_dict(state["engine"])
    result.history = state["history"]
    result.num_steps = state["num_steps"]
    average.load_state_dict(state["average"])
    if monitor is not None and state.get("convergence") is not None:
        monitor.load_state_dict(state["convergence"])
    set_rng_state(state["rng"])
