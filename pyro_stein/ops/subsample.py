"""Uniform random subsets of ``range(size)`` at a cost that does not grow with ``size``.

``torch.randperm(size)[:count]`` (what ``pyro.plate(..., subsample_size=count)`` draws)
permutes every row to keep ``count`` of them: 14 ms a step at a million rows and 280 ms at
ten million on two CPU threads, where the model's own minibatch costs a few milliseconds.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["random_subset"]

#: Above ``count / size`` of this, a permutation is as cheap as rejection and has no loop.
_PERMUTE_ABOVE = 0.25


def random_subset(size: int, count: int, *, device: torch.device | str | None = None) -> Tensor:
    """``count`` distinct indices drawn uniformly from ``range(size)``, in random order.

    Draws ``count`` indices with replacement and redraws the duplicates until none are
    left: every step of that process is symmetric under relabelling the rows, so the
    subset is uniform over all subsets of its size, like ``randperm``'s, at
    ``O(count log count)`` instead of ``O(size)``.  (At ``count / size`` above a quarter,
    ``randperm`` itself.)

    Args:
        size: rows to choose from.
        count: rows to choose; all of them, in order, if ``count >= size``.
        device: where the indices live.

    Returns:
        A ``(count,)`` long tensor.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> rows = random_subset(1_000_000, 1000)
        >>> rows.shape, len(rows.unique()), bool((rows >= 0).all() and (rows < 1_000_000).all())
        (torch.Size([1000]), 1000, True)
    """
    if count >= size:
        return torch.arange(size, device=device)
    if count > _PERMUTE_ABOVE * size:
        return torch.randperm(size, device=device)[:count].clone()
    chosen = torch.randint(size, (count,), device=device)
    while True:
        distinct = torch.unique(chosen)
        missing = count - len(distinct)
        if missing == 0:
            break
        chosen = torch.cat([distinct, torch.randint(size, (missing,), device=device)])
    return distinct[torch.randperm(count, device=device)]
