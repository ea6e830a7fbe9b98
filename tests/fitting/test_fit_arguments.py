"""Bad arguments to fit and FitResult fail before any work, naming the argument."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_stein


def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


Y = torch.zeros(5)


def test_an_engine_option_given_to_fit_is_named():
    with pytest.raises(TypeError, match=r"takes no 'num_particles'.*engine=AmortizedSVGD\(num_particles=...\)"):
        pyro_stein.fit(model, Y, num_particles=1, num_steps=1, progress=False)

    def open_model(y, **options):  # a model that takes any keyword gets them all
        assert options == {"num_particles": 3}
        return model(y)

    pyro_stein.fit(open_model, Y, num_particles=3, num_steps=1, progress=False)


def test_a_checkpoint_path_is_checked_before_the_first_step(tmp_path, monkeypatch):
    steps = []
    monkeypatch.setattr(pyro.infer.SVI, "step", lambda *a, **k: steps.append(1) or 0.0)
    with pytest.raises(ValueError, match="the folder of checkpoint .* does not exist: create"):
        pyro_stein.fit(model, Y, num_steps=5, progress=False, checkpoint=tmp_path / "missing" / "fit.pt")
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer.*got 0"):
        pyro_stein.fit(model, Y, num_steps=5, progress=False, checkpoint=tmp_path / "fit.pt", checkpoint_every=0)
    assert steps == []


def test_sample_counts_must_be_positive_integers():
    result = pyro_stein.fit(model, Y, num_steps=2, seed=0, progress=False)
    for bad in (2.5, 0, True):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            result.sample(bad)
    assert result.sample(3)["mu"].shape == (3,)
