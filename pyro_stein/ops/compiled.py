"""A function of one tensor, captured as a graph of tensor operations and compiled.

A model written with broadcasting, ``(x * beta).sum(-1)`` say, evaluated for 512 particles
at once builds a ``(512, rows, features)`` product and its backward: in eager PyTorch each
operation reads and writes its whole operand, so the density's cost is memory traffic.
Compiled, the product and its sum become one loop that never stores the product.  On the
breast-cancer logistic regression (``(512, 569, 30)``, one thread) the log density and its
score took 41.4 ms eager and 3.4 ms compiled; on the diabetes regression 9.7 and 2.0 ms
(``benchmarks/step_cost.py``, docs/benchmarks.md).

`CompiledFunction` captures ``f`` once per input shape with
``torch.fx.experimental.proxy_tensor.make_fx`` (so only tensor operations remain: any
Python around them, such as Pyro's tracing, runs once at capture), compiles that graph with
``torch.compile``, and checks the compiled function against ``f`` at a second input before
using it.  Compiling takes seconds (on this project's 2-core machine a default fit of that
logistic regression took 8.8 s longer with an empty compiler cache than with a warm one), so
it pays only where the eager evaluation is slow;
`graph_elements()` measures that, as the number of tensor elements the captured graph's
operations produce.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from .caller import warn

__all__ = ["CompiledFunction", "graph_elements"]


def _capture(function: Callable[[Tensor], Tensor], example: Tensor) -> torch.fx.GraphModule:
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(function)(example)


def graph_elements(function: Callable[[Tensor], Tensor], example: Tensor) -> int:
    """Tensor elements produced by the operations of ``function`` at ``example``, views
    excepted: the forward pass's memory traffic, which its backward roughly doubles.

    Example:
        >>> import torch
        >>> graph_elements(lambda z: (z * z).sum(-1), torch.zeros(4, 3))
        16
    """
    graph = _capture(function, example)
    total = 0
    for node in graph.graph.nodes:
        value = node.meta.get("val")
        # A view (expand, reshape, ...) moves no data, however large its shape.
        if node.op == "call_function" and isinstance(value, Tensor) and not getattr(node.target, "is_view", False):
            total += value.numel()
    return total


class CompiledFunction:
    """``function`` compiled for each of the named input shapes, or ``function`` itself for
    other shapes and where compiling fails or disagrees.

    Args:
        function: a function of one tensor whose tensor operations do not depend on the
            input's values (no Python branch on them): captured once per shape, it runs
            those operations only.  Everything else it reads (data) is frozen at capture.
        agree: ``agree(compiled_output, eager_output)``, whether the compiled function may
            be used; checked once per shape, at an input other than the capture's.
        what: names the function in the warning when compiling fails or disagrees.
        shapes: the input shapes to compile; other shapes run ``function`` itself.

    Each of these shapes' first call captures, compiles and checks (seconds); later calls of that
    shape run the compiled graph.  Gradients flow through it as through ``function``.

    Example:
        >>> import torch
        >>> square_norm = CompiledFunction(lambda z: (z * z).sum(-1), agree=torch.allclose, shapes=[(2, 3)])
        >>> square_norm(torch.ones(2, 3)).tolist()
        [3.0, 3.0]
    """

    def __init__(
        self,
        function: Callable[[Tensor], Tensor],
        *,
        agree: Callable[[Tensor, Tensor], bool],
        what: str = "the function",
        shapes: Iterable[Sequence[int]],
    ) -> None:
        self.function = function
        self.agree = agree
        self.what = what
        self.shapes = {torch.Size(shape) for shape in shapes}
        #: Per input shape: the compiled function, or ``None`` where it is not used.
        self.compiled: dict[torch.Size, Callable[[Tensor], Tensor] | None] = {}

    def __call__(self, latent: Tensor) -> Tensor:
        shape = latent.shape
        if shape not in self.shapes:
            return self.function(latent)
        if shape not in self.compiled:
            self.compiled[shape] = self._compile(latent)
        compiled = self.compiled[shape]
        return self.function(latent) if compiled is None else compiled(latent)

    def _compile(self, latent: Tensor) -> Callable[[Tensor], Tensor] | None:
        example = latent.detach()
        # A second input, so that a value frozen into the graph shows up as a disagreement.
        generator = torch.Generator(device="cpu").manual_seed(0)
        probe = example + 0.1 * torch.randn(example.shape, generator=generator).to(example)
        try:
            with torch.no_grad():
                graph = _capture(self.function, example)
            compiled = torch.compile(graph, dynamic=False)
            with torch.enable_grad():
                inputs = [probe.clone().requires_grad_(True) for _ in range(2)]
                outputs = [compiled(inputs[0]), self.function(inputs[1])]
                scores = [
                    torch.autograd.grad(out[torch.isfinite(out)].sum(), inp, allow_unused=True)[0]
                    for out, inp in zip(outputs, inputs)
                ]
        except Exception as error:  # no compiler, an operation the compiler lacks, ...
            warn(
                f"Compiling {self.what} failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "it is evaluated eagerly, which is correct but slower.",
                RuntimeWarning,
            )
            return None
        same_scores = (scores[0] is None) == (scores[1] is None) and (
            scores[0] is None or self.agree(scores[0], scores[1])
        )
        if not (self.agree(outputs[0].detach(), outputs[1].detach()) and same_scores):
            warn(
                f"Compiled, {self.what} differs from its eager evaluation (a random draw or a value read inside "
                "it?); it is evaluated eagerly, which is correct but slower.",
                RuntimeWarning,
            )
            return None
        return compiled
