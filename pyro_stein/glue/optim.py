"""A ``pyro.optim`` optimizer's learning rate, set from outside its schedule.

Pyro's optimizers keep one PyTorch optimizer per parameter (``PyroOptim.optim_objs``);
`fit()`'s convergence ladder lowers the rate of all of them at once.
"""

from __future__ import annotations

import pyro.optim

__all__ = ["set_learning_rate"]


def set_learning_rate(optim: pyro.optim.PyroOptim, learning_rate: float) -> None:
    """Set the learning rate of every parameter group ``optim`` has made so far (those it
    makes later start from its constructor's rate, or from the state it was given)."""
    for optimizer in optim.optim_objs.values():
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
