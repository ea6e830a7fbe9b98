"""Minibatches drawn at a cost independent of the number of rows."""

from __future__ import annotations

from typing import Any

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..ops.subsample import random_subset

__all__ = ["CheapSubsample"]


class CheapSubsample(Messenger):
    """Draws each subsampled plate's minibatch with `random_subset` instead of Pyro's
    ``randperm`` over all rows, so that a step's cost does not grow with the rows.  Reads
    the plate's size and subsample size at every call; a minibatch already chosen (by
    ``poutine.condition`` or the user's ``subsample=``) is kept."""

    def _pyro_sample(self, msg: Any) -> None:
        if msg["value"] is not None or not site_is_subsample(msg):
            return
        fn = msg["fn"]
        if fn.subsample_size is None or fn.subsample_size >= fn.size:
            return
        indices = random_subset(int(fn.size), int(fn.subsample_size), device=fn.device)
        msg["value"] = indices.cuda() if fn.use_cuda else indices
