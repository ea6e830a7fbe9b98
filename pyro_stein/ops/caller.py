"""Warnings that point at the user's line, whatever the depth of the call.

A hard-coded ``stacklevel`` is right for one call path only: a warning issued under
``SVI.step`` sits three frames deeper than the same warning under `pyro_stein.fit`.
`warn()` counts the frames instead: it attributes the warning to the innermost frame
that belongs to neither this package nor the libraries it drives (Pyro, PyTorch).
"""

from __future__ import annotations

import sys
import warnings

__all__ = ["INTERNAL_PACKAGES", "warn"]

#: Top-level packages whose frames are never the user's.
INTERNAL_PACKAGES = ("pyro_stein", "pyro", "torch", "contextlib", "functools")


def _is_internal(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in INTERNAL_PACKAGES)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` attributed to the user's frame (see the module docstring).

    Example:
        >>> import warnings
        >>> from pyro_stein.ops.caller import warn
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn("careful", RuntimeWarning)
        >>> caught[0].category.__name__, caught[0].filename.endswith("caller.py")
        ('RuntimeWarning', False)
    """
    frame = sys._getframe(1)
    level = 2  # warnings.warn's caller is this function; level 2 is our caller
    while frame is not None and _is_internal(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
