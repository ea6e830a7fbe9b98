"""A model's ``pyro.param`` values in Pyro's parameter store: what a fit hands back to the
global store, keeps as its own copy, and writes to (and reads from) a checkpoint.

A model's parameters are the store's entries outside the guide's own prefix (see
[`guide_param_prefix()`][pyro_stein.glue.autoguide.guide_param_prefix]).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from pyro.params.param_store import ParamStoreDict, StateDict
from torch import Tensor

from .layout import feasible_trace

__all__ = ["load_model_params", "model_param_state", "model_params"]


def model_param_state(state: StateDict, guide_prefix: str) -> StateDict:
    """A copy of the model's parameters in a store ``state`` (``ParamStoreDict.get_state()``
    or the state a ``scope()`` yields): new tensors, so that later training of the store's
    own cannot change it; usable as ``pyro.get_param_store().scope(copy)``."""
    names = [name for name in state["params"] if not (guide_prefix and name.startswith(guide_prefix))]
    return {
        "params": {name: state["params"][name].detach().clone() for name in names},
        "constraints": {name: state["constraints"][name] for name in names},
    }


def model_params(store: ParamStoreDict, guide_prefix: str) -> dict[str, Tensor]:
    """``{name: unconstrained value}`` of the model's parameters in ``store`` (copies)."""
    return model_param_state(store.get_state(), guide_prefix)["params"]


@torch.no_grad()
def load_model_params(
    store: ParamStoreDict, saved: Mapping[str, Tensor], model: Callable[..., Any], args: tuple, kwargs: dict
) -> None:
    """Set the model's parameters in ``store`` to the unconstrained values ``saved`` (from
    `model_params()`), in place, so that an optimizer holding them keeps them.  Parameters
    the store does not hold yet are created first by one run of the model."""
    if any(name not in store for name in saved):
        feasible_trace(model, args, kwargs)
    params = store.get_state()["params"]
    for name, value in saved.items():
        if name not in params:
            raise ValueError(
                f"the checkpoint holds the model parameter {name!r}, which the model does not create"
            )
        params[name].copy_(value)
