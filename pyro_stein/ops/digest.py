"""Short, stable descriptions of values (tensors, arrays, numbers, containers), so that a
checkpoint can record what its run depended on and a resumed run can name what differs.

A tensor is described by its dtype, shape and a SHA-256 of its bytes: two tensors with the
same description hold the same numbers.  Plain values are described by their ``repr``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["describe", "digest_of_bytes"]

# Containers longer than this are described by one digest of their items' descriptions.
_MAX_LISTED_ITEMS = 8


def digest_of_bytes(data: bytes) -> str:
    """The first 16 hex digits of the SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()[:16]


def _tensor_bytes(value: torch.Tensor) -> bytes:
    value = value.detach()
    if value.layout != torch.strided:
        value = value.to_dense()
    # A conjugated or negated view holds its flag, not its numbers: resolve it first.
    value = value.resolve_conj().resolve_neg().cpu().contiguous().reshape(-1)
    if value.dtype == torch.bfloat16 or value.is_complex() or value.dtype == torch.bool:
        return value.view(torch.uint8).numpy().tobytes() if value.numel() else b""
    return value.numpy().tobytes()


# Object attributes are followed this deep; deeper ones count as not compared.
_MAX_DEPTH = 4


def describe(value: Any, _depth: int = 0) -> str:
    """A one-line description of ``value`` that changes when its contents change.

    Tensors and arrays are described by dtype, shape (and device, if not the CPU) and a
    SHA-256 of their numbers; containers by their items (a mapping's keys sorted, a set's
    items sorted); dataclasses and other objects by their class and attributes; functions
    and classes by their qualified name.

    Example:
        >>> describe(torch.zeros(3))
        'tensor float32 (3,) sha256 ...'
        >>> describe(torch.zeros(3)) == describe(torch.zeros(3)), describe(torch.zeros(3)) == describe(torch.ones(3))
        (True, False)
        >>> describe({"scale": 2.0, "n": 5})
        "{'n': 5, 'scale': 2.0}"
    """
    if isinstance(value, torch.Tensor):
        device = "" if value.device.type == "cpu" else f" {value.device}"
        return (
            f"tensor {str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}{device} "
            f"sha256 {digest_of_bytes(_tensor_bytes(value))}"
        )
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return _listed("array(", [describe(item, _depth + 1) for item in value.reshape(-1)], f") of shape {value.shape}")
        return f"array {value.dtype} {value.shape} sha256 {digest_of_bytes(np.ascontiguousarray(value).tobytes())}"
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, torch.dtype, torch.device)):
        return repr(value)
    if isinstance(value, type) or inspect.isroutine(value):
        return f"{getattr(value, '__module__', None) or '?'}.{getattr(value, '__qualname__', repr(value))}"
    if isinstance(value, torch.nn.Module):
        parts = [f"{name}={describe(tensor)}" for name, tensor in value.state_dict().items()]
        return f"{type(value).__name__} module with state sha256 {digest_of_bytes(repr(parts).encode())}"
    if isinstance(value, Mapping):
        items = sorted(f"{key!r}: {describe(item, _depth + 1)}" for key, item in value.items())
        return _listed("{", items, "}")
    if isinstance(value, (set, frozenset)):
        return _listed("{", sorted(describe(item, _depth + 1) for item in value), "}")
    if isinstance(value, list):
        return _listed("[", [describe(item, _depth + 1) for item in value], "]")
    if isinstance(value, tuple):
        return _listed("(", [describe(item, _depth + 1) for item in value], ",)" if len(value) == 1 else ")")
    if isinstance(value, functools.partial):
        return f"partial({describe(value.func)}, {describe(value.args, _depth + 1)}, {describe(value.keywords, _depth + 1)})"
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    if dataclasses.is_dataclass(value) and _depth < _MAX_DEPTH:
        fields = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
        return f"{name}{describe(fields, _depth + 1)}"
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict) and _depth < _MAX_DEPTH:
        # Its attributes, not its repr: a repr may round or summarize the numbers it holds.
        return f"{name}{describe(attributes, _depth + 1)}"
    if type(value).__repr__ is not object.__repr__:
        text = repr(value)
        if " at 0x" not in text:  # a repr of its contents, not of its memory address
            return text
    return f"{name} object (contents not compared)"


def _listed(opening: str, items: list[str], closing: str) -> str:
    if len(items) <= _MAX_LISTED_ITEMS and all(len(item) < 80 for item in items):
        return opening + ", ".join(items) + closing
    return f"{len(items)} items sha256 {digest_of_bytes(repr(items).encode())}"
