"""Moved to [`pyro_stein.glue.initialization`][pyro_stein.glue.initialization] (per-site
starting values) and [`pyro_stein.ops.laplace`][pyro_stein.ops.laplace] (the Laplace fit);
this module keeps existing imports working."""

from .glue.initialization import *  # noqa: F403
from .glue.initialization import __all__ as _site_names
from .ops.laplace import *  # noqa: F403
from .ops.laplace import __all__ as _laplace_names

__all__ = [*_site_names, *_laplace_names]
