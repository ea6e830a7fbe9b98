"""The full-data pass, the control variate of a subsampled plate, and chunked evaluation."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_stein import AmortizedSVGD, AutoNeuralSampler
from pyro_stein.engines.base import anchor_due
from pyro_stein.glue import density as density_module
from pyro_stein.glue.density import UnconstrainedLogDensity
from pyro_stein.glue.layout import LatentLayout


def _data(rows=1003, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 3, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.5 * torch.randn(rows, generator=generator, dtype=torch.float64)
    return x, y


def regression(x, y, subsample_size=None):
    sigma = pyro.sample("sigma", dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    beta = pyro.sample("beta", dist.Normal(torch.zeros(3, dtype=torch.float64), 10.0).to_event(1))
    with pyro.plate("data", len(y), subsample_size=subsample_size) as rows:
        pyro.sample("y", dist.Normal(x[rows] @ beta, sigma), obs=y[rows])


def _densities(x, y, batch):
    subsampled = UnconstrainedLogDensity(regression, LatentLayout(regression, x, y, batch))
    full = UnconstrainedLogDensity(regression, LatentLayout(regression, x, y, None))
    return subsampled, full


def test_full_data_pass_is_the_unsubsampled_log_density_when_the_batch_does_not_divide_the_rows():
    x, y = _data(1003)
    subsampled, full = _densities(x, y, 100)
    point = torch.tensor([0.1, 0.9, -1.8, 0.4], dtype=torch.float64)
    log_p, score = subsampled.full_log_prob_and_score(point, (x, y, 100))
    expected_log_p, expected_score, _ = full.log_prob_and_score(point.unsqueeze(0), (x, y, None))
    assert torch.allclose(log_p, expected_log_p[0], rtol=1e-12)
    assert torch.allclose(score, expected_score[0], rtol=1e-10)


def test_the_anchored_minibatch_score_is_unbiased_and_far_less_noisy():
    x, y = _data(1003)
    subsampled, full = _densities(x, y, 50)
    args = (x, y, 50)
    mode = torch.tensor([-0.7, 1.0, -2.0, 0.5], dtype=torch.float64)
    near = mode + 0.02 * torch.randn(4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = full.log_prob_and_score(near, (x, y, None))[1]
    pyro.set_rng_seed(0)
    plain = torch.stack([subsampled.log_prob_and_score(near, args)[1] for _ in range(400)])
    assert subsampled.control_variates_apply
    subsampled.set_anchor(mode, args)
    anchored = torch.stack([subsampled.log_prob_and_score(near, args)[1] for _ in range(400)])
    # 400 minibatches: the mean is within 4 standard errors of the exact score.
    assert ((anchored.mean(0) - exact).abs() <= 4 * anchored.std(0) / 20 + 1e-9).all()
    assert (anchored.std(0) < plain.std(0) / 10).all()


def test_control_variates_do_not_apply_to_unsubsampled_models_or_loops_or_model_parameters():
    x, y = _data(200)
    unsubsampled = UnconstrainedLogDensity(regression, LatentLayout(regression, x, y, None))
    unsubsampled.setup((x, y, None), {})
    assert not unsubsampled.control_variates_apply
    looped = UnconstrainedLogDensity(regression, LatentLayout(regression, x, y, 50), batching="loop")
    looped.setup((x, y, 50), {})
    assert not looped.control_variates_apply
    looped.set_anchor(torch.zeros(4, dtype=torch.float64), (x, y, 50))
    assert looped.anchor is None

    def with_parameter(x, y, subsample_size=None):
        shift = pyro.param("shift", torch.tensor(0.0, dtype=torch.float64))
        beta = pyro.sample("beta", dist.Normal(torch.zeros(3, dtype=torch.float64), 10.0).to_event(1))
        with pyro.plate("data", len(y), subsample_size=subsample_size) as rows:
            pyro.sample("y", dist.Normal(x[rows] @ beta + shift, 1.0), obs=y[rows])

    pyro.clear_param_store()
    density = UnconstrainedLogDensity(with_parameter, LatentLayout(with_parameter, x, y, 50))
    density.setup((x, y, 50), {})
    assert not density.control_variates_apply


def test_anchors_are_set_on_their_schedule_and_kept_in_the_run_state():
    assert [step for step in range(1000) if anchor_due(step)] == [0, 50, 100, 200, 400, 800]
    x, y = _data(1003)
    pyro.clear_param_store()
    guide = AutoNeuralSampler(regression)
    engine = AmortizedSVGD(num_particles=64)
    svi = pyro.infer.SVI(regression, guide, pyro.optim.Adam({"lr": 1e-3}), engine)
    svi.step(x, y, 100)
    run = engine.run_of(guide)
    assert run.density.anchor is not None
    state = run.state_dict()
    anchor = run.density.anchor
    run.density.anchor = None
    run.load_state_dict(state)
    assert torch.equal(run.density.anchor.score, anchor.score)
    # Off: no anchor.
    pyro.clear_param_store()
    guide = AutoNeuralSampler(regression)
    engine = AmortizedSVGD(num_particles=64, control_variates=False)
    pyro.infer.SVI(regression, guide, pyro.optim.Adam({"lr": 1e-3}), engine).step(x, y, 100)
    assert engine.run_of(guide).density.anchor is None
    with pytest.raises(TypeError, match="control_variates"):
        AmortizedSVGD(control_variates=1)


def test_large_batches_are_evaluated_in_parts_with_the_same_result(monkeypatch):
    x, y = _data(1003)
    density = UnconstrainedLogDensity(regression, LatentLayout(regression, x, y, None))
    latent = torch.randn(37, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.1
    whole = density.log_prob_and_score(latent, (x, y, None))
    monkeypatch.setattr(density_module, "CHUNK_TERMS", 5 * 1003)
    assert density.particles_per_chunk((x, y, None)) == 5
    parts = density.log_prob_and_score(latent, (x, y, None))
    for a, b in zip(whole, parts):
        assert torch.allclose(a.double(), b.double(), rtol=1e-12)


def test_a_subsampled_model_starts_at_the_full_data_mode():
    # With 100-row minibatches of 20000 rows, one minibatch's mode lies about
    # sqrt(200) = 14 posterior sds from the full data's; the start must close that gap.
    x, y = _data(20000)
    pyro.clear_param_store()
    full = AutoNeuralSampler(regression)
    full(x, y, None)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    subsampled = AutoNeuralSampler(regression)
    subsampled(x, y, 100)
    sd = (full.precond_scale_tril @ full.precond_scale_tril.T).diagonal().sqrt()
    assert subsampled.init_report["full_data_decrement"] < 0.05
    assert ((subsampled.precond_loc - full.precond_loc).abs() / sd).max() < 0.05


def _virtual_rows(size, subsample_size, subsample=None):
    # The rows are computed from their indices, so a plate of ten million rows costs what
    # its minibatch does -- unless the minibatch is drawn by permuting every row.
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", size, subsample_size=subsample_size, subsample=subsample) as rows:
        pyro.sample("y", dist.Normal(mu, 1.0), obs=(rows % 7).float())


def test_minibatches_are_drawn_without_permuting_every_row(monkeypatch):
    size = 10**7
    density = UnconstrainedLogDensity(_virtual_rows, LatentLayout(_virtual_rows, size, 100))
    density.setup((size, 100), {})  # Pyro's own trace of the model permutes them once
    seen = []
    original = torch.randperm

    def recording_randperm(n, *args, **kwargs):
        seen.append(n)
        return original(n, *args, **kwargs)

    monkeypatch.setattr(torch, "randperm", recording_randperm)
    torch.manual_seed(0)
    log_p = density(torch.zeros(3, 1), (size, 100), {})
    assert torch.isfinite(log_p).all()
    assert max(seen, default=0) <= 100


def test_a_users_own_subsample_is_kept():
    rows = torch.arange(5)
    density = UnconstrainedLogDensity(_virtual_rows, LatentLayout(_virtual_rows, 100, 5, rows))
    log_p = density(torch.zeros(1, 1), (100, 5, rows), {})
    expected = dist.Normal(0.0, 1.0).log_prob(torch.tensor(0.0)) + dist.Normal(0.0, 1.0).log_prob((rows % 7).float()).sum() * 20
    assert torch.allclose(log_p[0], expected)
