"""Where the high-dimensional regime starts.  Pure constants; no Pyro.

From about a hundred dimensions on, the Monte Carlo noise of a particle batch of a few
hundred draws, summed over all coordinates, drowns what one kernel or one network output
says about a single coordinate: the RBF Stein direction's signal about a coordinate's
scale shrinks like ``1 / D`` (the kernel's bandwidth grows like ``D``) while the noise the
other coordinates feed through the kernel distance shrinks only like ``sqrt(D) / D``, so
its signal-to-noise ratio per step is about ``(1 - s^2) N / sqrt(8 D)`` for a sampler of
scale ``s``, ``N`` particles.  Below this dimension every default is the same as it has
always been; from it on, the default sampler has no residual network (whose weights the
noisy direction cannot train), Amortized SVGD's direction gains a coordinate-wise moment
kernel, and the reliability check's log-density bands allow what a 10% scale error in
every coordinate shows (``docs/reliability.md``).
"""

from __future__ import annotations

__all__ = ["HIGH_DIMENSION"]

#: The smallest latent dimension treated as high-dimensional.
HIGH_DIMENSION = 100
