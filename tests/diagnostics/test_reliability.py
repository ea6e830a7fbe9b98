"""The reliability verdict: right draws pass, wrong draws and wrong fits are flagged, each
by the check that should see them.

Exact draws give the false-alarm side (the checks' noise allowances are set for a 0.1%
family-wise rate, and ``benchmarks/hard_targets.py`` measured 0 flags in 240 sets of exact
draws); the wrong draws are the ways the hard targets' fits went wrong, with margins of at
least twice the threshold.  The fits are short versions of the benchmark's targets.
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Predictive
from pyro.infer.reparam import LocScaleReparam

import pyro_stein
from pyro_stein import AutoNeuralSampler, UnreliableFitWarning
from tests.models import NORMAL_DATA, hard_wall_model, normal_model

MIXTURE = dist.MixtureSameFamily(dist.Categorical(torch.tensor([0.3, 0.7])), dist.Normal(torch.tensor([-4.0, 4.0]), 1.0))


def normal():
    pyro.sample("x", dist.Normal(0.0, 1.0))


def cauchy():
    pyro.sample("z", dist.Cauchy(0.0, 1.0))


def funnel():
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    pyro.sample("x", dist.Normal(0.0, torch.exp(v / 2)).expand([4]).to_event(1))


def mixture():
    pyro.sample("x", MIXTURE)


def funnel_draws(v: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"v": v, "x": torch.randn(len(v), 4) * torch.exp(v / 2).unsqueeze(-1)}


@pytest.mark.parametrize(
    "model, draw",
    [
        (normal, lambda n: {"x": torch.randn(n)}),
        (cauchy, lambda n: {"z": dist.Cauchy(0.0, 1.0).sample((n,))}),
        (funnel, lambda n: funnel_draws(3.0 * torch.randn(n))),
        (mixture, lambda n: {"x": MIXTURE.sample((n,))}),
    ],
    ids=["normal", "cauchy", "funnel", "mixture"],
)
def test_exact_draws_pass_every_check(model, draw):
    torch.manual_seed(0)
    report = pyro_stein.check_reliability(model, draw(2000))
    assert report.reliable, report.message()
    assert [check.name for check in report.checks] == ["support", "stationarity", "modes"]
    assert report.seconds < 10


@pytest.mark.parametrize(
    "model, draw, check, phrase",
    [
        # too narrow, and too wide: the sds of a sampler 20% off
        (normal, lambda n: {"x": 0.8 * torch.randn(n)}, "stationarity", "Langevin"),
        (normal, lambda n: {"x": 1.2 * torch.randn(n)}, "stationarity", "Langevin"),
        # light tails where the posterior's are polynomial
        (cauchy, lambda n: {"z": 2.0 * torch.randn(n)}, "stationarity", "99% interval"),
        # stuck in the funnel's neck (the default fit of the 10-D funnel: v mean -5.3, sd 0.7)
        (funnel, lambda n: funnel_draws(-5.0 + 0.7 * torch.randn(n)), "stationarity", "in v"),
        # one mode of two: the 30% mode has no draws
        (mixture, lambda n: {"x": 4.0 + torch.randn(n)}, "modes", "holding 30%"),
        # both modes, weights 50/50 instead of 30/70
        (mixture, lambda n: {"x": 4.0 * torch.sign(torch.rand(n) - 0.5) + torch.randn(n)}, "modes", "2 modes"),
    ],
    ids=["narrow", "wide", "light-tails", "funnel-neck", "missing-mode", "misweighted-modes"],
)
def test_wrong_draws_fail_the_check_that_sees_them(model, draw, check, phrase):
    torch.manual_seed(0)
    report = pyro_stein.check_reliability(model, draw(2000))
    assert not report.reliable
    assert report[check].passed is False, report.message()
    assert phrase in report[check].summary
    assert report[check].advice
    assert check in report.message() and report[check].threshold in report.message()


def test_draws_beyond_a_wall_fail_the_support_check_naming_the_term():
    torch.manual_seed(0)
    x = torch.randn(2000).abs()
    x[:40] = -x[:40]  # 2% beyond the wall, as the default fit of the cut normal gave
    report = pyro_stein.check_reliability(hard_wall_model, {"x": x})
    assert report["support"].passed is False
    assert "['wall']" in report["support"].summary and "constrained support" in report["support"].advice


def test_exact_draws_behind_a_wall_are_still_flagged_for_the_wall():
    """The wall itself is what is reported: proposals from exact draws cross it."""
    torch.manual_seed(0)
    report = pyro_stein.check_reliability(hard_wall_model, {"x": torch.randn(2000).abs()})
    assert report["support"].passed is False and report["support"].figure > 0.2
    assert report["stationarity"].passed is True


def _subsampled_line(rows):
    x = torch.linspace(-1, 1, rows)

    def model():
        beta = pyro.sample("beta", dist.Normal(0.0, 10.0))
        with pyro.plate("data", rows, subsample_size=20) as index:
            pyro.sample("y", dist.Normal(beta * x[index], 1.0), obs=2 * x[index])

    precision = 1 / 100 + float((x**2).sum())
    return model, 2 * float((x**2).sum()) / precision, precision**-0.5


@pytest.mark.parametrize("sd_factor,reliable", [(1.0, True), (1.5, False)])
def test_a_subsampled_model_is_checked_on_its_full_data(sd_factor, reliable):
    # One minibatch's log density is not the posterior's: a check on it would pass
    # wrong draws and flag exact ones.  On the full data's, exact draws pass and draws
    # 1.5 times too wide (as fits with minibatch noise came out) are flagged.
    model, mean, sd = _subsampled_line(201)
    torch.manual_seed(0)
    report = pyro_stein.check_reliability(model, {"beta": mean + sd_factor * sd * torch.randn(2000)})
    assert report["stationarity"].passed is reliable
    assert report.reliable is reliable


def test_a_subsampled_model_too_large_for_a_full_data_check_gets_no_verdict():
    model, mean, sd = _subsampled_line(100_000)
    report = pyro_stein.check_reliability(model, {"beta": mean + sd * torch.randn(2000)})
    assert report.reliable
    assert report["stationarity"].passed is None and "100000 rows" in report["stationarity"].summary
    assert report["modes"].passed is None


def test_a_good_fit_is_reliable_and_says_so():
    result = pyro_stein.fit(normal_model, NORMAL_DATA, num_steps=300, seed=0, progress=False)
    assert result.reliable is True
    assert all(check.passed for check in result.reliability.checks)
    # The checks cost a small part of the fit (the benchmark measures it on default fits).
    assert result.reliability.seconds < result.seconds


# CTF's Gaussian-tailed 300-step Cauchy fit is not flagged (a known miss of the check; its
# 2000-step fit gave a q98 of |z| of 14.8 against 31.8); its default, heavy-tailed sampler
# overshoots instead and is flagged (benchmarks/hard_targets.py).
@pytest.mark.parametrize("engine", ["asvgd"])
def test_a_gaussian_tailed_fit_of_a_cauchy_is_flagged_with_a_warning_naming_the_check(engine):
    # Without its tail stretch the sampler's tails are Gaussian whatever its weights.
    guide = AutoNeuralSampler(cauchy, heavy_tails=False)
    with pytest.warns(UnreliableFitWarning, match=r"stationarity check failed: .*threshold"):
        result = pyro_stein.fit(cauchy, engine=engine, guide=guide, num_steps=300, seed=0, progress=False)
    assert result.reliable is False
    assert result.reliability["stationarity"].passed is False
    draws = result.sample(20000)["z"]
    assert float(torch.quantile(draws.abs(), 0.98)) < 0.5 * math.tan(0.49 * math.pi)  # it is wrong indeed


def test_a_fit_that_misses_a_mode_is_flagged_by_the_modes_check():
    with pytest.warns(UnreliableFitWarning, match="modes check failed"):
        result = pyro_stein.fit(mixture, num_steps=300, seed=0, progress=False)
    assert (result.sample(4000)["x"] < 0).float().mean() < 0.05  # the 30% mode is missing
    assert result.reliability["modes"].passed is False


def test_a_fit_against_a_wall_is_flagged_by_the_support_check():
    with pytest.warns(UnreliableFitWarning, match="support check failed.*wall"):
        result = pyro_stein.fit(hard_wall_model, num_steps=300, seed=0, progress=False)
    assert result.reliability["support"].passed is False


def test_check_false_skips_the_verdict():
    result = pyro_stein.fit(cauchy, num_steps=50, seed=0, progress=False, check=False)
    assert result.reliable is None and result.reliability is None


def test_a_pyro_autoguide_fit_gets_the_verdict_too():
    guide = pyro.infer.autoguide.AutoNormal(normal)
    result = pyro_stein.fit(normal, engine=pyro.infer.Trace_ELBO(), guide=guide, num_steps=300, seed=0, progress=False)
    assert result.reliability is not None and [c.name for c in result.reliability.checks][0] == "support"


def test_a_funnel_fit_is_flagged_and_the_advised_non_centred_model_fits_it():
    # The centred 5-D funnel's 300-step fit stays in the neck (v: mean -2.2, sd 1.6 at
    # seeds 0 and 1); the non-centred model the advice names is a Gaussian for the sampler
    # (v: mean 0.01, sd 2.98 and 3.01).  20000 draws estimate v's sd within 0.5%.
    with pytest.warns(UnreliableFitWarning, match="LocScaleReparam"):
        centred = pyro_stein.fit(funnel, num_steps=300, seed=0, progress=False, noncentre=False)
    assert centred.reliability["stationarity"].passed is False and centred.noncentred == ()
    noncentred_model = poutine.reparam(funnel, config={"x": LocScaleReparam(centered=0.0)})
    noncentred = pyro_stein.fit(noncentred_model, num_steps=300, seed=0, progress=False)
    assert noncentred.reliable is True
    v = noncentred.sample(20000)["v"]
    assert abs(float(v.mean())) < 0.1 and abs(float(v.std()) / 3.0 - 1) < 0.05


def test_fit_refits_a_flagged_funnel_non_centred_and_its_guide_serves_the_users_model():
    # By default the flagged centred fit above is followed by a fit of the non-centred model:
    # reliable, v within the tolerances above, and x restored as exp(v / 2) x_decentered.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableFitWarning)
        result = pyro_stein.fit(funnel, num_steps=300, seed=0, progress=False)
    assert result.reliable is True and result.noncentred == ("x",)
    assert result.centred_reliability["stationarity"].passed is False
    assert result.model is funnel and result.num_steps_total == 600
    draws = result.sample(20000)
    v, x = draws["v"], draws["x"]
    assert abs(float(v.mean())) < 0.1 and abs(float(v.std()) / 3.0 - 1) < 0.05
    torch.testing.assert_close(x, torch.exp(v / 2).unsqueeze(-1) * draws["x_decentered"])
    # Predictive on the user's (centred) model sees the restored x (sequentially: the model's
    # expand([4]) does not broadcast over a batch of v).  4000 draws: sds within 10%.
    predicted = Predictive(funnel, guide=result.guide, num_samples=4000)()
    assert abs(float(predicted["v"].std()) / 3.0 - 1) < 0.1
    x_sd = float((predicted["x"] / torch.exp(predicted["v"] / 2).reshape(-1, 1)).std())
    assert abs(x_sd - 1) < 0.1  # x / exp(v / 2) is N(0, 1) under the posterior


def gaussian_200d():
    pyro.sample("z", dist.Normal(torch.zeros(200), 1.0).to_event(1))


@pytest.mark.parametrize("scale, reliable", [(1.0, True), (0.98, True), (1.02, True), (0.75, False), (1.3, False)])
def test_in_high_dimensions_the_log_density_allows_a_small_scale_error_in_every_coordinate(scale, reliable):
    # 2% off in all 200 coordinates (within the benchmarks' 10% tolerance) moves the log
    # density's mean by about 0.4 of its sds, which the per-coordinate band of 0.1 sd
    # flagged; 25-30% off is flagged by the coordinates' own bands.
    torch.manual_seed(0)
    report = pyro_stein.check_reliability(gaussian_200d, {"z": scale * torch.randn(2000, 200)})
    assert report["stationarity"].passed is reliable, report.message()
