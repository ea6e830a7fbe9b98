"""The posteriordb reader and the Pyro ports of its Stan models.

Needs the shared posteriordb folder (``../shared/posteriordb/posterior_database`` beside
the checkout, or the path in ``PYRO_STEIN_POSTERIORDB``); skipped when it is absent.

Each port is checked against an independent NumPy/SciPy transcription of its Stan model:
the two log densities, taken in Stan's parameter space at reference draws, must differ
by the same constant at every draw.
"""

import os
from pathlib import Path

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from posteriordb_ports import PORTS, PosteriorDatabase
from scipy import stats
from scipy.special import logsumexp

from pyro_stein.glue.density import UnconstrainedLogDensity
from pyro_stein.glue.layout import LatentLayout

ROOT = Path(os.environ.get("PYRO_STEIN_POSTERIORDB", Path(__file__).resolve().parents[3] / "shared" / "posteriordb"))
FOLDER = ROOT / "posterior_database" if (ROOT / "posterior_database").is_dir() else ROOT
pytestmark = pytest.mark.skipif(not (FOLDER / "posteriors").is_dir(), reason=f"no posteriordb folder at {FOLDER}")

NAMES = [
    "arK-arK",
    "eight_schools-eight_schools_noncentered",
    "garch-garch11",
    "kidiq-kidscore_interaction",
    "low_dim_gauss_mix-low_dim_gauss_mix",
    "sblrc-blr",
]


@pytest.fixture(scope="module")
def db():
    return PosteriorDatabase(FOLDER)


def test_reader_lists_the_shared_posteriors_with_reference_draws(db):
    assert db.names(with_port=True) == NAMES
    for name in NAMES:
        posterior = db.posterior(name)
        draws = posterior.reference_draws()
        assert draws.shape == (10000, sum(posterior.info["dimensions"].values()))
        assert np.isfinite(draws).all()
    with pytest.raises(KeyError, match="no posterior 'nope'"):
        db.posterior("nope")
    with pytest.raises(FileNotFoundError, match="not a posteriordb folder"):
        PosteriorDatabase(FOLDER / "models")


# -------------------------------------------- independent transcriptions of the Stan models
def _normal(x, loc, scale):
    return stats.norm.logpdf(x, loc, scale).sum()


def stan_ark(data, p):
    y, k = np.asarray(data["y"]), data["K"]
    beta = np.array([p[f"beta[{i}]"] for i in range(1, k + 1)])
    mu = p["alpha"] + np.array([beta @ y[t - k : t][::-1] for t in range(k, len(y))])
    lp = _normal(p["alpha"], 0, 10) + _normal(beta, 0, 10) + stats.cauchy.logpdf(p["sigma"], 0, 2.5)
    return lp + _normal(y[k:], mu, p["sigma"])


def stan_eight_schools(data, p):
    theta = np.array([p[f"theta[{j}]"] for j in range(1, 9)])
    theta_trans = (theta - p["mu"]) / p["tau"]  # the Stan parameter
    lp = _normal(theta_trans, 0, 1) + _normal(np.asarray(data["y"]), theta, np.asarray(data["sigma"]))
    return lp + _normal(p["mu"], 0, 5) + stats.cauchy.logpdf(p["tau"], 0, 5)


def stan_garch(data, p):
    y = np.asarray(data["y"])
    sigma = [data["sigma1"]]
    for t in range(1, len(y)):
        sigma.append(np.sqrt(p["alpha0"] + p["alpha1"] * (y[t - 1] - p["mu"]) ** 2 + p["beta1"] * sigma[-1] ** 2))
    return _normal(y, p["mu"], np.array(sigma))


def stan_kidiq(data, p):
    beta = [p[f"beta[{i}]"] for i in range(1, 5)]
    hs, iq = np.asarray(data["mom_hs"]), np.asarray(data["mom_iq"])
    mu = beta[0] + beta[1] * hs + beta[2] * iq + beta[3] * hs * iq
    return stats.cauchy.logpdf(p["sigma"], 0, 2.5) + _normal(np.asarray(data["kid_score"]), mu, p["sigma"])


def stan_gauss_mix(data, p):
    y = np.asarray(data["y"])
    mu, sigma = [p["mu[1]"], p["mu[2]"]], [p["sigma[1]"], p["sigma[2]"]]
    lp = _normal(np.array(sigma), 0, 2) + _normal(np.array(mu), 0, 2) + stats.beta.logpdf(p["theta"], 5, 5)
    parts = np.stack(
        [np.log(p["theta"]) + stats.norm.logpdf(y, mu[0], sigma[0]), np.log1p(-p["theta"]) + stats.norm.logpdf(y, mu[1], sigma[1])]
    )
    return lp + logsumexp(parts, axis=0).sum()


def stan_blr(data, p):
    x, y = np.asarray(data["X"]), np.asarray(data["y"])
    beta = np.array([p[f"beta[{i}]"] for i in range(1, x.shape[1] + 1)])
    return _normal(beta, 0, 10) + _normal(p["sigma"], 0, 10) + _normal(y, x @ beta, p["sigma"])


def _vector(p, name, size):
    return torch.tensor([p[f"{name}[{i}]"] for i in range(1, size + 1)], dtype=torch.float64)


def _scalar(p, name):
    return torch.tensor(p[name], dtype=torch.float64)


# Stan's parameters (from a reference draw) -> the port's latent values, and the
# log-Jacobian of that map where the port is parameterized differently.
CASES = {
    "arK-arK": (stan_ark, lambda p: ({"alpha": _scalar(p, "alpha"), "beta": _vector(p, "beta", 5), "sigma": _scalar(p, "sigma")}, 0.0)),
    "eight_schools-eight_schools_noncentered": (
        stan_eight_schools,
        lambda p: (
            {
                "mu": _scalar(p, "mu"),
                "tau": _scalar(p, "tau"),
                "theta_trans": (_vector(p, "theta", 8) - p["mu"]) / p["tau"],
            },
            0.0,
        ),
    ),
    # The port draws beta1 = (1 - alpha1) u with u on (0, 1): its density in (alpha1, u) is
    # Stan's in (alpha1, beta1) times (1 - alpha1).
    "garch-garch11": (
        stan_garch,
        lambda p: (
            {
                "mu": _scalar(p, "mu"),
                "alpha0": _scalar(p, "alpha0"),
                "alpha1": _scalar(p, "alpha1"),
                "beta1_fraction": _scalar(p, "beta1") / (1 - p["alpha1"]),
            },
            np.log1p(-p["alpha1"]),
        ),
    ),
    "kidiq-kidscore_interaction": (stan_kidiq, lambda p: ({"beta": _vector(p, "beta", 4), "sigma": _scalar(p, "sigma")}, 0.0)),
    "low_dim_gauss_mix-low_dim_gauss_mix": (
        stan_gauss_mix,
        lambda p: ({"mu": _vector(p, "mu", 2), "sigma": _vector(p, "sigma", 2), "theta": _scalar(p, "theta")}, 0.0),
    ),
    "sblrc-blr": (stan_blr, lambda p: ({"beta": _vector(p, "beta", 5), "sigma": _scalar(p, "sigma")}, 0.0)),
}


@pytest.mark.parametrize("name", NAMES)
def test_port_log_density_equals_the_stan_models_up_to_a_constant(db, name):
    posterior = db.posterior(name)
    model, args = posterior.model_and_args(torch.float64)
    stan_log_density, to_port = CASES[name]
    draws = posterior.reference_draws()[::2000]
    differences = []
    for row in draws:
        params = dict(zip(posterior.reference_names, row.tolist()))
        values, log_jacobian = to_port(params)
        trace = poutine.trace(poutine.condition(model, data=values)).get_trace(*args)
        port = trace.log_prob_sum().item() - log_jacobian
        differences.append(port - stan_log_density(posterior.data, params))
    # Log densities here are O(1e2-1e3); float64 agrees to far better than 1e-6.
    assert np.ptp(differences) < 1e-6, differences


@pytest.mark.parametrize("name", NAMES)
def test_port_maps_its_latents_to_the_reference_columns(db, name):
    posterior = db.posterior(name)
    model, args = posterior.model_and_args(torch.float64)
    layout = LatentLayout(model, *args)
    latent = 0.1 * torch.randn(7, layout.latent_dim, dtype=torch.float64)
    values = layout.unpack(latent)
    columns = posterior.reference_columns(values)
    assert columns.shape == (7, len(posterior.reference_names))
    assert np.isfinite(columns).all()
    # Packing the values back gives the latent vectors again.
    assert {n: v.shape[1:] for n, v in values.items()} == layout.site_shapes
    torch.testing.assert_close(layout.pack(values), latent)


def test_every_port_has_a_model_name_of_the_shared_folder(db):
    assert {db.posterior(n).model_name for n in NAMES} == set(PORTS)
    pyro.clear_param_store()


@pytest.mark.parametrize("name", NAMES)
def test_port_runs_batched_over_an_outer_particle_plate(db, name):
    # The engines' fast path: a port written in Pyro's broadcasting idiom gives, for a
    # batch of particles at once, the same log densities as one particle at a time.
    model, args = db.posterior(name).model_and_args(torch.float64)
    density = UnconstrainedLogDensity(model, LatentLayout(model, *args))
    density.setup(args, {})
    assert density.batching == "plate"
