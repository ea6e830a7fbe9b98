"""How to run a Pyro model for a whole batch of latent draws at once: the one probe.

Three ways, tried in this order and each checked against one draw at a time:

``"plate"``
    the model runs once inside an outer particle plate, placed left of all the model's
    own batch dimensions: Pyro's own vectorization, for models whose tensors broadcast
    over a leading batch dimension;
``"vmap"``
    ``torch.func.vmap`` over a one-draw evaluation, for models written for a single
    draw (say ``X @ beta``); as fast, and no code changes;
``"loop"``
    one model run per draw, with a warning: correct for any model, but slow.

The log density ([`UnconstrainedLogDensity`][pyro_stein.glue.density.UnconstrainedLogDensity])
and the per-draw model outputs of the ArviZ adapter
([`ModelRunner`][pyro_stein.glue.model_outputs.ModelRunner]) both choose through
`choose_batching()`, with one agreement rule, `agree()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ..ops.caller import warn

__all__ = ["BATCHING", "agree", "choose_batching"]

#: The accepted values of a ``batching`` argument.
BATCHING = ("auto", "plate", "vmap", "loop")

Output = Tensor | Mapping[str, Tensor]


def _agree_tensors(batched: Tensor, reference: Tensor) -> bool:
    if batched.shape != reference.shape or batched.dtype != reference.dtype:
        return False
    if not reference.is_floating_point():  # integers, booleans: exactly
        return torch.equal(batched, reference)
    finite = torch.isfinite(reference)
    nan = torch.isnan(reference)
    if not (torch.equal(finite, torch.isfinite(batched)) and torch.equal(nan, torch.isnan(batched))):
        return False
    infinite = ~finite & ~nan
    if not torch.equal(batched[infinite], reference[infinite]):  # the same signs of infinity
        return False
    if not finite.any():
        return True
    # Round-off of a reordered reduction: relative to the dtype and to the largest value.
    rtol = 1e-8 if reference.dtype == torch.float64 else 1e-4
    scale = 1.0 + reference[finite].abs().max().item()
    return torch.allclose(batched[finite], reference[finite], rtol=rtol, atol=rtol * scale)


def agree(batched: Output, reference: Output, *, ignore: Sequence[str] = ()) -> bool:
    """Whether a batched evaluation equals the one-draw-at-a-time reference: same shapes and
    dtypes, the same non-finite entries (NaN where NaN, the same infinities), integer and
    boolean entries equal, and the finite ones equal up to round-off (relative ``1e-8`` in
    float64, ``1e-4`` otherwise, scaled by the largest value).  For mappings, every key
    but those starting with a prefix in ``ignore`` (random outputs, say) is compared.

    Example:
        >>> import torch
        >>> agree(torch.tensor([1.0, float("-inf")]), torch.tensor([1.0 + 1e-6, float("-inf")]))
        True
        >>> agree({"a": torch.ones(2), "noise/b": torch.zeros(2)}, {"a": torch.ones(2), "noise/b": torch.ones(2)},
        ...       ignore=("noise/",))
        True
    """
    if isinstance(reference, Tensor):
        return isinstance(batched, Tensor) and _agree_tensors(batched, reference)
    if set(batched) != set(reference):
        return False
    return all(
        batched[key].shape == reference[key].shape
        and (key.startswith(tuple(ignore)) or _agree_tensors(batched[key], reference[key]))
        for key in reference
    )


def choose_batching(
    evaluate: Callable[[str], Output],
    *,
    candidates: Sequence[str] = ("plate", "vmap"),
    what: str,
    unit: str = "particle",
    advice: str = "",
    ignore: Sequence[str] = (),
) -> str:
    """The first of ``candidates`` whose evaluation agrees with ``evaluate("loop")``, else
    ``"loop"`` with a warning that names why each candidate was refused.

    Args:
        evaluate: runs the probe batched in the named way.
        candidates: the batched ways to try, in order.
        what: names the evaluation in the warning.
        unit: what one row of the batch is called there ("particle", "draw").
        advice: what the user can change so that the model runs batched.
        ignore: key prefixes of random outputs that are not compared (see `agree()`).
    """
    reference = evaluate("loop")
    reasons = []
    for batching in candidates:
        try:
            batched = evaluate(batching)
            agrees = agree(batched, reference, ignore=ignore)
        except Exception as error:  # any failure of the model's own code when batched
            reasons.append(f"{batching}: it raised {type(error).__name__}: {error}")
            continue
        if agrees:
            return batching
        shown = f" ({batched.tolist()} vs {reference.tolist()})" if isinstance(batched, Tensor) else ""
        reasons.append(f"{batching}: {what} differs from one {unit} at a time{shown}")
    if candidates:
        warn(
            f"The model cannot be evaluated for all {unit}s at once ({'; '.join(reasons)}). Falling back to a "
            f"per-{unit} loop, one {unit} at a time, which is correct but slower. {advice}".rstrip(),
            RuntimeWarning,
        )
    return "loop"
