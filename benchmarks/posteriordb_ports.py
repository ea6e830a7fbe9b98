"""Read posteriordb posteriors (models' data and reference draws) and run them as Pyro models.

posteriordb (https://github.com/stan-dev/posteriordb) stores each posterior as a Stan model,
its data and gold-standard reference draws.  `PosteriorDatabase` reads that layout
from a local folder (a full clone or a subset); :data:`PORTS` holds faithful Pyro ports of
the Stan models that have one here.  A port reproduces the Stan posterior exactly, up to a
constant: a Stan parameter with no sampling statement gets a flat prior on its constrained
support (``dist.ImproperUniform``), and bounds that depend on other parameters are written
as Stan's own transform with its log-Jacobian.

Example:
    >>> db = PosteriorDatabase("posteriordb/posterior_database")          # doctest: +SKIP
    >>> posterior = db.posterior("kidiq-kidscore_interaction")           # doctest: +SKIP
    >>> model, args = posterior.port.model, posterior.port.args(posterior.data)  # doctest: +SKIP
    >>> posterior.reference_draws().shape                                # doctest: +SKIP
    (10000, 5)
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

__all__ = ["PORTS", "Port", "Posterior", "PosteriorDatabase"]


# ---------------------------------------------------------------------------- the ports
@dataclass(frozen=True)
class Port:
    """A Pyro port of a posteriordb Stan model.

    Attributes:
        model: the Pyro model; called as ``model(*args(data))``.
        args: turns posteriordb's data dictionary into the model's arguments (tensors of
            the given dtype).
        reference_values: turns the model's latent draws ``{site: (n, *shape)}`` into the
            reference draws' columns ``{"beta[1]": (n,), ...}`` (Stan's 1-based names,
            transformed parameters included).
    """

    model: Callable[..., None]
    args: Callable[[dict[str, Any], torch.dtype], tuple[Tensor, ...]]
    reference_values: Callable[[dict[str, Tensor]], dict[str, Tensor]]


def _tensor(value: Any, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype)


def _vector_columns(name: str, value: Tensor) -> dict[str, Tensor]:
    return {f"{name}[{i + 1}]": value[:, i] for i in range(value.shape[1])}


def _eight_schools_noncentered(y: Tensor, sigma: Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(y.new_tensor(5.0)))
    with pyro.plate("schools", len(y)):
        theta_trans = pyro.sample("theta_trans", dist.Normal(y.new_tensor(0.0), 1.0))
        theta = pyro.deterministic("theta", theta_trans * tau + mu)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def _ar_k(y: Tensor, lags: Tensor) -> None:
    k = lags.shape[-1]
    alpha = pyro.sample("alpha", dist.Normal(y.new_tensor(0.0), 10.0))
    beta = pyro.sample("beta", dist.Normal(y.new_tensor(0.0), 10.0).expand([k]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(y.new_tensor(2.5)))
    with pyro.plate("time", len(y)):
        # beta * lags broadcasts over an outer particle plate as well (Pyro's batching idiom).
        mean = alpha + (beta * lags).sum(-1)
        pyro.sample("y", dist.Normal(mean, sigma), obs=y)


def _ar_k_args(data: dict[str, Any], dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    y, k = _tensor(data["y"], dtype), int(data["K"])
    # Row t holds y[t-1], ..., y[t-K]: the regressors of y[t] for t = K+1..T (1-based).
    lags = torch.stack([y[k - j : len(y) - j] for j in range(1, k + 1)], -1)
    return y[k:], lags


def _blr(x: Tensor, y: Tensor) -> None:
    beta = pyro.sample("beta", dist.Normal(y.new_tensor(0.0), 10.0).expand([x.shape[1]]).to_event(1))
    # normal(0, 10) on a parameter declared <lower=0>: a half-normal, up to a constant.
    sigma = pyro.sample("sigma", dist.HalfNormal(y.new_tensor(10.0)))
    with pyro.plate("data", len(y)):
        mean = (x * beta).sum(-1)
        pyro.sample("y", dist.Normal(mean, sigma), obs=y)


def _kidscore_interaction(kid_score: Tensor, mom_hs: Tensor, mom_iq: Tensor) -> None:
    # No sampling statement for beta in the Stan model: a flat prior.
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real_vector, (), (4,)))
    sigma = pyro.sample("sigma", dist.HalfCauchy(kid_score.new_tensor(2.5)))
    inter = mom_hs * mom_iq
    with pyro.plate("data", len(kid_score)):
        mean = beta[..., 0] + beta[..., 1] * mom_hs + beta[..., 2] * mom_iq + beta[..., 3] * inter
        pyro.sample("kid_score", dist.Normal(mean, sigma), obs=kid_score)


def _linear_recursion(inputs: Tensor, coefficient: Tensor) -> Tensor:
    """``v[t] = coefficient * v[t-1] + inputs[t]`` with ``v[-1] = 0``, along the last dim.

    Hillis-Steele scan: after the pass with shift ``d``, ``v[t]`` holds
    ``sum_{j < 2d} coefficient^j inputs[t-j]``; ``coefficient`` broadcasts against
    ``inputs[..., :1]``.
    """
    values, power, shift = inputs, coefficient, 1
    while shift < inputs.shape[-1]:
        values = torch.cat([values[..., :shift], values[..., shift:] + power * values[..., :-shift]], -1)
        power, shift = power * power, 2 * shift
    return values


def _garch11(y: Tensor, sigma1: Tensor) -> None:
    flat = dist.ImproperUniform
    mu = pyro.sample("mu", flat(constraints.real, (), ()))
    alpha0 = pyro.sample("alpha0", flat(constraints.positive, (), ()))
    alpha1 = pyro.sample("alpha1", flat(constraints.unit_interval, (), ()))
    # Stan's real<lower=0, upper=(1 - alpha1)> beta1 with no sampling statement: beta1 is
    # (1 - alpha1) times a unit-interval variable, flat on the triangle alpha1 + beta1 < 1.
    # The log-Jacobian log(1 - alpha1) is what Stan adds for that bound; a Uniform(0,
    # 1 - alpha1) prior would add -log(1 - alpha1) and be another posterior.
    beta1_fraction = pyro.sample("beta1_fraction", flat(constraints.unit_interval, (), ()))
    beta1 = pyro.deterministic("beta1", (1.0 - alpha1) * beta1_fraction)
    pyro.factor("beta1_bound_jacobian", torch.log1p(-alpha1))
    # sigma[t]^2 = alpha0 + alpha1 (y[t-1] - mu)^2 + beta1 sigma[t-1]^2, a linear recursion
    # in t with a constant coefficient, solved as a prefix scan in log2(T) vectorized steps
    # instead of T sequential ones (the same sums, in a different order).  Time runs along
    # the last dimension; length-one slices keep any outer batch dims.
    shocks = alpha0 + alpha1 * (y[:-1] - mu) ** 2
    first = sigma1.pow(2) * torch.ones_like(shocks[..., :1])
    sigma = _linear_recursion(torch.cat([first, shocks], -1), beta1).sqrt()
    with pyro.plate("time", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


def _low_dim_gauss_mix(y: Tensor) -> None:
    # ordered[2] mu ~ normal(0, 2): a flat site on ordered vectors plus the normal density.
    mu = pyro.sample("mu", dist.ImproperUniform(constraints.ordered_vector, (), (2,)))
    pyro.factor("mu_prior", dist.Normal(y.new_tensor(0.0), 2.0).log_prob(mu).sum(-1))
    sigma = pyro.sample("sigma", dist.HalfNormal(y.new_tensor(2.0)).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(y.new_tensor(5.0), 5.0))
    with pyro.plate("data", len(y)):
        # target += log_mix(theta, normal_lpdf(y | mu[1], sigma[1]), normal_lpdf(y | mu[2], sigma[2])),
        # written out: a MixtureSameFamily site would expand every parameter to the data's
        # shape inside the plate, which costs several times more per evaluation.
        first = theta.log() + dist.Normal(mu[..., 0], sigma[..., 0]).log_prob(y)
        second = torch.log1p(-theta) + dist.Normal(mu[..., 1], sigma[..., 1]).log_prob(y)
        pyro.factor("y", torch.logaddexp(first, second))


PORTS: dict[str, Port] = {
    "eight_schools_noncentered": Port(
        _eight_schools_noncentered,
        lambda data, dtype: (_tensor(data["y"], dtype), _tensor(data["sigma"], dtype)),
        lambda d: {
            **_vector_columns("theta", d["theta_trans"] * d["tau"][:, None] + d["mu"][:, None]),
            "mu": d["mu"],
            "tau": d["tau"],
        },
    ),
    "arK": Port(
        _ar_k,
        _ar_k_args,
        lambda d: {"alpha": d["alpha"], **_vector_columns("beta", d["beta"]), "sigma": d["sigma"]},
    ),
    "blr": Port(
        _blr,
        lambda data, dtype: (_tensor(data["X"], dtype), _tensor(data["y"], dtype)),
        lambda d: {**_vector_columns("beta", d["beta"]), "sigma": d["sigma"]},
    ),
    "kidscore_interaction": Port(
        _kidscore_interaction,
        lambda data, dtype: tuple(_tensor(data[k], dtype) for k in ("kid_score", "mom_hs", "mom_iq")),
        lambda d: {**_vector_columns("beta", d["beta"]), "sigma": d["sigma"]},
    ),
    "garch11": Port(
        _garch11,
        lambda data, dtype: (_tensor(data["y"], dtype), _tensor(data["sigma1"], dtype)),
        lambda d: {
            "mu": d["mu"],
            "alpha0": d["alpha0"],
            "alpha1": d["alpha1"],
            "beta1": (1.0 - d["alpha1"]) * d["beta1_fraction"],
        },
    ),
    "low_dim_gauss_mix": Port(
        _low_dim_gauss_mix,
        lambda data, dtype: (_tensor(data["y"], dtype),),
        lambda d: {**_vector_columns("mu", d["mu"]), **_vector_columns("sigma", d["sigma"]), "theta": d["theta"]},
    ),
}


# ---------------------------------------------------------------------------- the reader
def _read_zipped_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"posteriordb file {str(path)!r} is missing")
    try:
        with zipfile.ZipFile(path) as archive:
            (member,) = archive.namelist()
            return json.loads(archive.read(member))
    except (zipfile.BadZipFile, ValueError, json.JSONDecodeError) as error:
        raise ValueError(
            f"posteriordb file {str(path)!r} is not a zip archive holding one JSON file: {error}"
        ) from error


@dataclass(frozen=True)
class Posterior:
    """One posterior of a `PosteriorDatabase`.

    Attributes:
        name: e.g. ``"kidiq-kidscore_interaction"``.
        info: the posterior's JSON record (``model_name``, ``data_name``, ``dimensions``...).
        root: the database folder.
    """

    name: str
    info: dict[str, Any]
    root: Path

    @property
    def model_name(self) -> str:
        return self.info["model_name"]

    @property
    def stan_code(self) -> str:
        """The Stan model, the definition that `port` follows."""
        return (self.root / "models" / "stan" / f"{self.model_name}.stan").read_text()

    @cached_property
    def data(self) -> dict[str, Any]:
        """The model's data, as posteriordb stores it (a JSON dictionary)."""
        return _read_zipped_json(self.root / "data" / "data" / f"{self.info['data_name']}.json.zip")

    @property
    def port(self) -> Port:
        """The Pyro port of this posterior's model (see :data:`PORTS`)."""
        try:
            return PORTS[self.model_name]
        except KeyError:
            raise NotImplementedError(
                f"posterior {self.name!r}: no Pyro port of Stan model {self.model_name!r} yet "
                f"(ports exist for {sorted(PORTS)})"
            ) from None

    def model_and_args(self, dtype: torch.dtype = torch.float64) -> tuple[Callable[..., None], tuple[Tensor, ...]]:
        """The Pyro model and its arguments built from `data`."""
        return self.port.model, self.port.args(self.data, dtype)

    @cached_property
    def _reference(self) -> tuple[list[str], np.ndarray, int]:
        name = self.info.get("reference_posterior_name") or self.name
        path = self.root / "reference_posteriors" / "draws" / "draws" / f"{name}.json.zip"
        chains = _read_zipped_json(path)
        if not isinstance(chains, list) or not chains or not isinstance(chains[0], dict):
            raise ValueError(f"{str(path)!r}: expected a list of chains, each {{parameter: [draws]}}")
        names = list(chains[0])
        draws = np.concatenate([np.asarray([chain[n] for n in names], dtype=np.float64).T for chain in chains])
        return names, draws, len(chains)

    @property
    def reference_names(self) -> list[str]:
        """The reference draws' parameter names, in column order."""
        return self._reference[0]

    def reference_draws(self) -> np.ndarray:
        """Reference draws, ``(num_chains * num_draws, num_parameters)``, chains stacked."""
        return self._reference[1]

    def reference_columns(self, latent_draws: dict[str, Tensor]) -> np.ndarray:
        """A port's latent draws laid out like `reference_draws()`."""
        columns = self.port.reference_values(latent_draws)
        missing = [n for n in self.reference_names if n not in columns]
        if missing:
            raise KeyError(f"posterior {self.name!r}: the port gives no values for {missing}")
        return np.stack([columns[n].detach().cpu().double().numpy() for n in self.reference_names], -1)


class PosteriorDatabase:
    """A local posteriordb folder (``.../posterior_database``): a clone or a subset.

    Args:
        path: the ``posterior_database`` folder, or the repository root that contains it.

    Raises:
        FileNotFoundError: ``path`` has no ``posteriors`` folder.
    """

    def __init__(self, path: str | Path) -> None:
        root = Path(path)
        if not (root / "posteriors").is_dir() and (root / "posterior_database" / "posteriors").is_dir():
            root = root / "posterior_database"
        if not (root / "posteriors").is_dir():
            raise FileNotFoundError(
                f"{str(path)!r} is not a posteriordb folder: expected {str(root / 'posteriors')!r}. "
                "Pass the posterior_database folder of a posteriordb clone."
            )
        self.root = root

    def names(self, *, with_reference: bool = True, with_port: bool = False) -> list[str]:
        """Posterior names, sorted; by default only those with reference draws."""
        names = []
        for path in sorted((self.root / "posteriors").glob("*.json")):
            info = json.loads(path.read_text())
            ref = info.get("reference_posterior_name")
            if with_reference and not ref:
                continue
            if with_port and info["model_name"] not in PORTS:
                continue
            names.append(path.stem)
        return names

    def posterior(self, name: str) -> Posterior:
        """The posterior called ``name``."""
        path = self.root / "posteriors" / f"{name}.json"
        if not path.is_file():
            raise KeyError(f"no posterior {name!r} in {str(self.root)!r}; available: {self.names(with_reference=False)}")
        return Posterior(name, json.loads(path.read_text()), self.root)
